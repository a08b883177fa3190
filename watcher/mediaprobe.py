"""What the control plane must know of an input before splitting it into segments (issue 12): its
duration, and whether every stream in it joins seamlessly from segments. Read with PyAV through the
URL a job would get (a presigned GET reads only what the demuxer needs). Given to the handlers by
the watcher (watcher.commands); the Lambda bundle carries no PyAV, so there jobs run whole."""

from __future__ import annotations

from vastdrop import logs
from vastdrop.errors import BadInputError, TransientError
from vastdrop.fmp4 import StreamFacts, unsplittable

OPEN_TIMEOUT_S = 30.0
# Planned segments stop this short of a duration only the container states: the last segment runs
# to the end whatever it is, so planning short costs nothing, and no segment is left without video.
CONTAINER_DURATION_SLACK_S = 2.0


def probe_for_segments(source: str) -> tuple[float, str | None]:
    """(duration in seconds, why it cannot be split or None). BadInputError when it is no video."""
    import av  # the watcher's only use of PyAV at run time: imported when a split is considered

    try:
        with av.open(source, timeout=OPEN_TIMEOUT_S) as container:
            if not container.streams.video:
                raise BadInputError("no video stream")
            video = container.streams.video[0]
            if video.duration and video.time_base:
                duration = float(video.duration * video.time_base)
            else:  # the container's: it may count a soundtrack that outlasts the picture
                duration = max(0.0, (container.duration or 0) / 1_000_000 - CONTAINER_DURATION_SLACK_S)
            return duration, _unsplittable(container, video)
    except (av.error.HTTPServerError, av.error.ConnectionRefusedError, av.error.ConnectionResetError,
            av.error.TimeoutError) as exc:  # the network, the store: worth asking again
        raise TransientError(f"cannot probe the input: {logs.bounded(exc, 200)}") from exc
    except av.error.FFmpegError as exc:  # anything else will not change by asking again: run it whole
        raise BadInputError(f"cannot probe the input: {logs.bounded(exc, 200)}") from exc


def _unsplittable(container, video) -> str | None:
    facts = [StreamFacts(stream.index, stream.type, _codec(stream) if stream.type == "audio" else "", _start(stream))
             for stream in container.streams]
    return unsplittable(facts, facts[video.index], bool(container.chapters()))


def _codec(stream) -> str:
    return stream.codec_context.codec.canonical_name  # the codec's, not its decoder's (mp3, not mp3float)


def _start(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0

"""What the control plane must know of an input before splitting it into segments (issue 12): its
duration, and whether every stream in it joins seamlessly from segments. Read with PyAV through the
URL a job would get (a presigned GET reads only what the demuxer needs). Given to the handlers by
the watcher (watcher.commands); the Lambda bundle carries no PyAV, so there jobs run whole."""

from __future__ import annotations

from vastdrop import logs
from vastdrop.errors import BadInputError, TransientError
from vastdrop.fmp4 import FIRST_AUDIO_WITHIN_S, SEGMENT_AUDIO_CODECS, SEGMENT_AUDIO_NAMES

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
    """What a segment job would refuse (gpu_job.media.segment.check_carried), said before launching."""
    if container.chapters():
        return "it has chapters (written once, at the start of the file)"
    for stream in container.streams:
        if stream is video or stream.type == "video":  # other video streams are dropped alike everywhere
            continue
        if stream.type != "audio":
            return f"its {stream.type} stream {stream.index} is not split into segments yet"
        codec = stream.codec_context.codec.canonical_name  # the codec's, not its decoder's (mp3, not mp3float)
        if codec not in SEGMENT_AUDIO_CODECS:
            return (f"its audio stream {stream.index} is {codec}: only {SEGMENT_AUDIO_NAMES} are copied into "
                    "segments so far (re-encoded audio would start afresh at each join)")
        if _start(stream) - _start(video) > FIRST_AUDIO_WITHIN_S:
            return f"its audio stream {stream.index} starts more than {FIRST_AUDIO_WITHIN_S:.0f} s after the picture"
    return None


def _start(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0

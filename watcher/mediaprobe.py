"""What the control plane must know of an input before splitting it into segments (issue 12): its
duration, and whether every stream in it joins seamlessly from segments. Read with PyAV through the
URL a job would get (a presigned GET reads only what the demuxer needs). Given to the handlers by
the watcher (watcher.commands); the Lambda bundle carries no PyAV, so there jobs run whole."""

from __future__ import annotations

import math

from vastdrop import logs
from vastdrop.errors import BadInputError, TransientError
from vastdrop.fmp4 import (
    CONTAINER_DURATION_SLACK_S,
    FIRST_AUDIO_WITHIN_S,
    FIRST_PACKETS_SCAN_BYTES,
    StreamFacts,
    unsplittable,
)

OPEN_TIMEOUT_S = 30.0
# Demuxed to find when each stream starts: 10 s of any real file is far fewer packets and bytes. The
# Matroska probe of the Lambda (vastdrop.mkvprobe) reads as far.
MAX_PROBE_PACKETS = 100_000
MAX_PROBE_BYTES = FIRST_PACKETS_SCAN_BYTES


def probe_for_segments(source: str) -> tuple[float, str | None]:
    """(duration in seconds, why it cannot be split or None). BadInputError when it is no video."""
    import av  # the watcher's only use of PyAV at run time: imported when a split is considered

    try:
        with av.open(source, timeout=OPEN_TIMEOUT_S, metadata_errors="replace") as container:  # any tag encoding
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
    """The rule (vastdrop.fmp4.unsplittable) on what PyAV says of the streams. When each stream
    starts is read from its first packets, demuxed (not decoded): PyAV's start_time says 0 for a
    Matroska soundtrack that starts 12 s in, because the demuxer did not read that far."""
    def facts(starts: dict[int, float]) -> list[StreamFacts]:
        return [StreamFacts(stream.index, _kind(stream), _codec(stream) if stream.type in ("audio", "subtitle") else "",
                            starts.get(stream.index, 0.0)) for stream in container.streams]

    said = facts({})
    why = unsplittable(said, said[video.index])  # the reasons that need no packet first
    if why is not None or not container.streams.audio:
        return why
    timed = facts(_first_packets(container, video))
    return unsplittable(timed, timed[video.index])


def _kind(stream) -> str:
    """The stream's kind; an MP4's chapter track (FFmpeg discards it: its titles are the chapters,
    as gpu_job.media.streams plans it) is "chapters"."""
    import av

    return "chapters" if stream.type == "data" and stream.discard == av.stream.Discard.all else stream.type


def _codec(stream) -> str:
    """The codec's name, not its decoder's (mp3, not mp3float); "unknown" for a stream FFmpeg has no
    decoder for (Teletext, TTML), which PyAV then gives no context."""
    return stream.codec_context.codec.canonical_name if stream.codec_context is not None else "unknown"


def _first_packets(container, video) -> dict[int, float]:
    """Each stream's first packet time (s), demuxed until every audio stream has one or the picture
    is FIRST_AUDIO_WITHIN_S in (a stream still without one then starts later: math.inf)."""
    wanted = {stream.index for stream in container.streams.audio} | {video.index}
    first: dict[int, float] = {}
    read = 0
    for count, packet in enumerate(container.demux()):
        read += packet.size
        if count > MAX_PROBE_PACKETS or read > MAX_PROBE_BYTES:  # whatever the packets: the reading is bounded
            raise BadInputError(f"cannot tell when each stream starts within its first {MAX_PROBE_BYTES >> 20} MB")
        at = packet.pts if packet.pts is not None else packet.dts
        if at is None or packet.stream.index not in wanted:
            continue
        seconds = float(at * packet.stream.time_base)
        first[packet.stream.index] = min(seconds, first.get(packet.stream.index, seconds))
        if set(first) >= wanted:
            return first
        if packet.stream.index == video.index and seconds - first[video.index] > FIRST_AUDIO_WITHIN_S:
            return {index: first.get(index, math.inf) for index in wanted}
    return first  # the file ended: a stream without a packet has nothing to place late

"""Every stream but the processed video: audio, subtitles, attachments; plus chapters and tags.

Each stream is copied when the output container accepts it unchanged, converted when it does not
but a conversion keeps its content (audio to AAC, text subtitles to the container's text codec),
and otherwise dropped with its reason. Every decision is recorded: nothing is dropped silently.
"""

from __future__ import annotations

from fractions import Fraction

import av

from gpu_job.media import encode

# Named channel layouts for re-encoded audio, by channel count (AAC refuses unnamed layouts).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def start_shift(vin: av.VideoStream, stream: av.stream.Stream) -> int:
    """Ticks (in `stream`'s time base) to subtract from a copied stream's timestamps. The output video
    starts at 0 where the input video started, so every other stream moves by the same amount and
    keeps its place relative to the picture. (Engineer B owns this rule: the audio offset, item 5.)"""
    video_start = (vin.start_time or 0) * vin.time_base if vin.time_base else 0
    return round(Fraction(video_start) / stream.time_base) if stream.time_base else 0


class AudioPath:
    """Copies audio packets unchanged when MP4 accepts the codec; otherwise re-encodes to AAC."""

    def __init__(self, output: av.container.OutputContainer, ain: av.AudioStream, vin: av.VideoStream) -> None:
        self.output, self.ain = output, ain
        self.mode = "copy" if encode.audio_copy_accepted(ain) else "aac"
        if self.mode == "copy":
            self.stream = output.add_stream_from_template(ain)
        else:
            self.stream = output.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            # By channel count: a source layout may be unnamed ("2 channels"), which AAC refuses.
            channels = len(ain.codec_context.layout.channels) if ain.codec_context.layout else 2
            self.stream.layout = _DEFAULT_LAYOUTS.get(channels, "stereo")
            self.resampler = av.AudioResampler(format="fltp", layout=self.stream.layout, rate=self.stream.rate)
        self.shift = start_shift(vin, ain)

    def packet(self, packet: av.Packet) -> None:
        if self.mode == "copy":
            if packet.dts is None:  # the demuxer's flush packet
                return
            packet.pts = None if packet.pts is None else packet.pts - self.shift
            packet.dts -= self.shift
            packet.stream = self.stream
            self.output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for resampled in self.resampler.resample(frame):
                self.output.mux(self.stream.encode(resampled))

    def flush(self) -> None:
        if self.mode == "aac":
            for resampled in self.resampler.resample(None):
                self.output.mux(self.stream.encode(resampled))
            self.output.mux(self.stream.encode())

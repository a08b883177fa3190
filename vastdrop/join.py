"""Joining objects into one without streaming it through us (issue 12): the result of a job run as
segments is an S3 multipart upload whose parts are copied server-side (UploadPartCopy) from byte
ranges of the verified segments. S3 wants every part but the last to be at least 5 MiB and at most
5 GiB: ranges that short are gathered (read and uploaded as one part) until the part is long
enough, so at most a few MiB of a join ever pass through the control plane."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PART_BYTES = 5 << 20  # S3's least part size (all but the last part)
MAX_COPY_PART_BYTES = 5 << 30  # S3's largest part
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of the object at `url`, which must still have ETag `etag`."""

    url: str
    start: int
    end: int
    etag: str | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Part:
    """One part of the joined object: a server-side copy (one piece) or gathered bytes (several)."""

    pieces: tuple[Piece, ...]
    copied: bool

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)


def plan_parts(pieces: list[Piece], min_part: int = MIN_PART_BYTES, max_copy: int = MAX_COPY_PART_BYTES) -> list[Part]:
    """The parts, in order: whatever run of bytes is at least `min_part` long is copied (in pieces of
    at most `max_copy`); shorter runs are gathered with the bytes that follow until `min_part`."""
    parts: list[Part] = []
    gathered: list[Piece] = []
    held = 0
    for piece in pieces:
        pos = piece.start
        while pos < piece.end:
            left = piece.end - pos
            if gathered:  # top the gathered bytes up to a whole part first
                take = min(left, min_part - held)
                gathered.append(Piece(piece.url, pos, pos + take, piece.etag))
                held, pos = held + take, pos + take
                if held >= min_part:
                    parts.append(Part(tuple(gathered), copied=False))
                    gathered, held = [], 0
            elif left >= min_part:
                take = min(left, max_copy)
                if 0 < left - take < min_part:  # never leave a tail too short to stand alone
                    take = left - min_part
                parts.append(Part((Piece(piece.url, pos, pos + take, piece.etag),), copied=True))
                pos += take
            else:
                gathered.append(Piece(piece.url, pos, piece.end, piece.etag))
                held, pos = left, piece.end
    if gathered:  # the last part may be short
        parts.append(Part(tuple(gathered), copied=False))
    if len(parts) > MAX_PARTS:
        raise ValueError(f"a join of {len(parts)} parts is over S3's {MAX_PARTS}")
    return parts

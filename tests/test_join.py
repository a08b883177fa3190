"""The join of a segmented job's result (vastdrop.join): parts planned within S3's limits, and the
real multipart upload of server-side copies against SeaweedFS (and its file:// twin)."""

from __future__ import annotations

import os

import pytest

from vastdrop.errors import TransientError
from vastdrop.join import MIN_PART_BYTES, Piece, plan_parts
from vastdrop.storage.local import LocalStorage, path_to_file_url
from vastdrop.storage.s3 import S3Storage

M = MIN_PART_BYTES


@pytest.mark.parametrize("sizes", [[100, 200, 300], [2 * M, 10, 3 * M], [10, 2 * M], [3 * M, 10, 20, M - 5, 7, 2 * M],
                                   [M], [M + 1, M - 1]])
def test_parts_cover_every_byte_in_order_and_all_but_the_last_are_long_enough(sizes):
    pieces = [Piece(f"u{i}", 3, 3 + size) for i, size in enumerate(sizes)]
    parts = plan_parts(pieces)
    flat = [(p.url, p.start, p.end) for part in parts for p in part.pieces]
    covered = [(url, b) for url, start, end in flat for b in (start, end)]
    assert sum(part.size for part in parts) == sum(sizes)
    assert all(part.size >= M for part in parts[:-1])
    assert all(len(part.pieces) == 1 for part in parts if part.copied)
    assert covered[0] == ("u0", 3) and covered[-1] == (f"u{len(sizes) - 1}", 3 + sizes[-1])
    for (u1, _, e1), (u2, s2, _) in zip(flat, flat[1:], strict=False):  # contiguous, in order
        assert (u1 == u2 and e1 == s2) or (int(u2[1:]) == int(u1[1:]) + 1 and s2 == 3)


def test_a_large_piece_is_copied_in_parts_of_at_most_the_copy_limit():
    parts = plan_parts([Piece("u", 0, 25)], min_part=4, max_copy=10)
    assert [p.size for p in parts] == [10, 10, 5] and all(p.copied for p in parts)
    parts = plan_parts([Piece("u", 0, 22)], min_part=4, max_copy=10)  # no tail shorter than a part
    assert [p.size for p in parts] == [10, 8, 4]


def _blobs() -> list[bytes]:
    return [os.urandom(2 * M + 3), os.urandom(100), os.urandom(M + 7), os.urandom(50)]


def test_s3_compose_joins_ranges_server_side_and_refuses_a_changed_source(seaweed, bucket):
    storage = S3Storage(client=seaweed.client())
    blobs = _blobs()
    etags = [storage.put_bytes(b, f"s3://{bucket}/seg/{i}", "video/mp4").etag for i, b in enumerate(blobs)]
    pieces = [Piece(f"s3://{bucket}/seg/0", 0, len(blobs[0]), etags[0]), Piece(f"s3://{bucket}/seg/1", 10, 100, etags[1]),
              Piece(f"s3://{bucket}/seg/2", 7, len(blobs[2]), etags[2]), Piece(f"s3://{bucket}/seg/3", 0, 50, etags[3])]
    joined = storage.compose(f"s3://{bucket}/joined.mp4", pieces, "video/mp4")
    want = blobs[0] + blobs[1][10:] + blobs[2][7:] + blobs[3]
    assert storage.get_bytes(f"s3://{bucket}/joined.mp4", 64 << 20) == want
    assert joined.size == len(want) and joined.etag.endswith('-3"')  # three parts: copy, gathered, copy
    assert storage.read_range(f"s3://{bucket}/seg/1", 10, 5, etags[1]) == blobs[1][10:15]
    with pytest.raises(TransientError):
        storage.compose(f"s3://{bucket}/bad.mp4", [Piece(pieces[0].url, 0, 2 * M, '"changed"')], "video/mp4")
    assert storage.head(f"s3://{bucket}/joined.mp4").etag == joined.etag
    assert seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the failed one aborted


def test_s3_compose_aborts_a_join_cut_short_at_its_key_and_no_other_upload(seaweed, bucket):
    """A crashed join left its multipart upload open at the final key (its copied parts billed): the
    next join aborts it, and leaves alone another key's upload that merely shares the prefix."""
    storage, raw = S3Storage(client=seaweed.client()), seaweed.client()
    stale = raw.create_multipart_upload(Bucket=bucket, Key="out/film.mp4")["UploadId"]
    other = raw.create_multipart_upload(Bucket=bucket, Key="out/film.mp4.other")["UploadId"]
    blob = os.urandom(100)
    etag = storage.put_bytes(blob, f"s3://{bucket}/seg/0", "video/mp4").etag
    storage.compose(f"s3://{bucket}/out/film.mp4", [Piece(f"s3://{bucket}/seg/0", 0, 100, etag)], "video/mp4")
    assert storage.get_bytes(f"s3://{bucket}/out/film.mp4") == blob
    open_ = {u["UploadId"] for u in raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert stale not in open_ and other in open_


def test_local_compose_is_the_same_join(tmp_path):
    storage, blobs = LocalStorage(), _blobs()[1:]
    urls = []
    for i, blob in enumerate(blobs):
        (tmp_path / f"{i}").write_bytes(blob)
        urls.append(path_to_file_url(tmp_path / f"{i}"))
    etags = [storage.head(u).etag for u in urls]
    joined = storage.compose(path_to_file_url(tmp_path / "j"), [Piece(u, 1, len(b), e) for u, b, e in zip(urls, blobs, etags,
                                                                                                    strict=True)])
    assert (tmp_path / "j").read_bytes() == b"".join(b[1:] for b in blobs) and joined.size == sum(len(b) - 1 for b in blobs)
    with pytest.raises(TransientError):
        storage.compose(path_to_file_url(tmp_path / "k"), [Piece(urls[0], 0, 5, '"changed"')])
    assert not (tmp_path / "k").exists()

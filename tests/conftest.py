"""Shared pytest fixtures. Each block below belongs to one area; add yours in a block of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# ==== SeaweedFS (real S3 on 127.0.0.1) — helpers in tests/support/seaweed.py ======================
from tests.support.seaweed import SeaweedServer


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """One `weed mini` for the whole session, on free ports, credentials vastdrop-test/...-secret.
    Attributes: endpoint_url, access_key, secret_key, region; client(), session(), env()."""
    server = SeaweedServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket; removed with its contents afterwards."""
    name = seaweed.create_bucket()
    try:
        yield name
    finally:
        seaweed.delete_bucket(name)


# ==== end SeaweedFS ================================================================================

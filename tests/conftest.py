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


# ==== moto (DynamoDB over HTTP on 127.0.0.1) — helpers in tests/support/moto_server.py ===========
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from tests.support.moto_server import MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One in-process moto server for the session, on a free loopback port, dummy credentials.
    Attributes: endpoint_url, region; client(service="dynamodb")."""
    # Imported here: moto + boto3 take ~0.5 s, which sessions that never use it should not pay.
    from tests.support.moto_server import MotoServer

    server = MotoServer.start()
    try:
        yield server
    finally:
        server.stop()


# ==== end moto =====================================================================================


# ==== the embedded default (file:// bucket, SQLite, local compute) for handler tests ===============


@pytest.fixture
def deps(tmp_path):
    """Deps on the embedded default under tmp_path: bucket/input/ and bucket/output/ folders, a SQLite
    ledger, and local compute whose jobs run `true` (they exit at once, writing nothing)."""
    from handlers.deps import ControlConfig, Deps
    from vastdrop.compute.local import LocalCompute
    from vastdrop.ledger.sqlite import SqliteLedger
    from vastdrop.location import Location

    (tmp_path / "bucket" / "input").mkdir(parents=True)
    return Deps(inputs=Location.parse(f"file://{tmp_path}/bucket/input/"),
                outputs=Location.parse(f"file://{tmp_path}/bucket/output/"),
                ledger=SqliteLedger(tmp_path / "ledger.sqlite"),
                compute=LocalCompute(tmp_path / "instances", command=["true"]), config=ControlConfig())


# ==== end embedded default =========================================================================

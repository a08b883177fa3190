"""A `file://` bucket: object keys come from webhook senders and users, and none of them may name a
file outside the bucket folder. Such an event fails alone; the watcher goes on (issue 9 item 6)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import requests

from handlers.deps import ControlConfig, Deps
from vastdrop import signing
from vastdrop.compute.local import LocalCompute
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.location import Location
from vastdrop.storage.local import LocalStorage, path_to_file_url
from watcher.server import EventServer

WEBHOOK_SECRET = "0123456789abcdefghijABCDEFGHIJ01"


def test_webhook_events_for_keys_outside_the_bucket_start_nothing_and_the_next_event_is_handled(tmp_path: Path):
    """GIVEN a file:// bucket at <tmp>/bucket and a video beside it, outside the bucket
    WHEN signed webhook events name it through `..` (and by an absolute path), then a real input arrives
    THEN nothing is claimed, read or written outside the bucket, and the real input gets its job."""
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not yours")
    good = tmp_path / "bucket" / "input" / "good.mp4"
    good.parent.mkdir(parents=True)
    good.write_bytes(b"a video")
    root, storage = path_to_file_url(tmp_path / "bucket") + "/", LocalStorage()
    deps = Deps(inputs=Location(root, "input/", storage), outputs=Location(root, "output/", storage),
                ledger=SqliteLedger(tmp_path / "state" / "ledger.sqlite"),
                compute=LocalCompute(tmp_path / "state" / "instances", command=[sys.executable, "-c", "pass"]),
                config=ControlConfig())
    keys = ["input/../../secret.mp4", "input/x/../../../secret.mp4", f"input/{outside}", "input/good.mp4"]
    now_ms = int(time.time() * 1000)
    body = json.dumps({"events": [
        {"eventType": "b2:ObjectCreated:Upload", "objectName": key, "objectSize": 9, "bucketName": "bucket",
         "eventTimestamp": now_ms} for key in keys]}).encode()
    server = EventServer(deps, "127.0.0.1", 0, WEBHOOK_SECRET, None).start()
    try:
        answer = requests.post(f"http://127.0.0.1:{server.port}/webhook", data=body,
                               headers={signing.B2_SIGNATURE_HEADER: signing.sign(WEBHOOK_SECRET, body)}, timeout=5)
        assert answer.status_code == 202
        server.work.join()
    finally:
        server.stop()
    assert [r.key for r in deps.ledger.list()] == ["input/good.mp4"]
    assert outside.read_bytes() == b"not yours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "secret.mp4", "state"]

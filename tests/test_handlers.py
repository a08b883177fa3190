"""Handler rules on the embedded default (file:// bucket, SQLite, local compute): skips, ids, collisions."""

from __future__ import annotations

import pytest

from handlers.created import ObjectEvent, on_object_created
from handlers.deps import ControlConfig, Deps
from vastdrop.compute.local import LocalCompute
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.location import Location
from vastdrop.states import JobState
from vastdrop.storage.local import file_url_to_path

# `deps`: the embedded default, from tests/conftest.py.


def _put(deps: Deps, key: str, data: bytes = b"video bytes") -> None:
    path = file_url_to_path(deps.inputs.url(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("key", ["input/dir/", "input/.hidden.mp4", "input/_partial.mp4", "output/x.mp4"])
def test_non_inputs_are_skipped_and_nothing_is_claimed(deps, key):
    assert on_object_created(ObjectEvent(key, etag='"e"', size=10), deps).action == "skipped"
    assert deps.ledger.list() == []


def test_empty_objects_are_skipped(deps):
    _put(deps, "input/empty.mp4", b"")
    assert on_object_created(ObjectEvent("input/empty.mp4", source="webhook"), deps).action == "skipped"


def test_the_same_object_version_from_any_source_is_one_job(deps):
    _put(deps, "input/a.mp4")
    first = on_object_created(ObjectEvent("input/a.mp4", source="webhook"), deps)  # no ETag: HEAD
    again = on_object_created(ObjectEvent("input/a.mp4", source="replay"), deps)
    assert first.action == "launched" and again.action == "duplicate" and first.job_id == again.job_id
    _put(deps, "input/a.mp4", b"a new version")
    newer = on_object_created(ObjectEvent("input/a.mp4", source="webhook"), deps)
    assert newer.job_id != first.job_id


def test_an_event_for_an_input_whose_sibling_owns_the_output_fails_clearly(deps):
    _put(deps, "input/clip.mov")
    _put(deps, "input/clip.mp4")
    _put(deps, "input/clip.b.mp4")  # output/clip.b.mp4: no collision with either
    loser = on_object_created(ObjectEvent("input/clip.mp4", source="webhook"), deps)
    winner = on_object_created(ObjectEvent("input/clip.mov", source="webhook"), deps)
    other = on_object_created(ObjectEvent("input/clip.b.mp4", source="webhook"), deps)
    assert loser.action == "failed" and "input/clip.mov keeps it" in loser.reason
    assert winner.action == "launched" and other.action == "launched"
    assert deps.ledger.get(loser.job_id).state == JobState.FAILED


def test_an_input_without_extension_collides_with_its_mp4_sibling(deps):
    """input/clip and input/clip.mp4 both map to output/clip.mp4; input/clip comes first in key order."""
    _put(deps, "input/clip")
    _put(deps, "input/clip.mp4")
    loser = on_object_created(ObjectEvent("input/clip.mp4", source="webhook"), deps)
    assert loser.action == "failed" and "input/clip keeps it" in loser.reason


def test_a_hosts_bad_manifest_fails_its_own_job_and_the_reaper_goes_on(tmp_path):
    """Whatever a host writes is untrusted: a 2 MB manifest, or a success without a result, fails that
    job's attempt with the reason, and one reaper pass handles every job without raising."""
    import json

    from handlers import jobs
    from handlers.reaper import reap

    (tmp_path / "bucket" / "input").mkdir(parents=True)
    deps = Deps(inputs=Location.parse(f"file://{tmp_path}/bucket/input/"),
                outputs=Location.parse(f"file://{tmp_path}/bucket/output/"),
                ledger=SqliteLedger(tmp_path / "ledger.sqlite"),
                compute=LocalCompute(tmp_path / "instances", command=["sleep", "30"]),
                config=ControlConfig(max_attempts=1))
    ids = {}
    for name in ("huge", "no-result", "fine"):
        _put(deps, f"input/{name}.mp4")
        ids[name] = on_object_created(ObjectEvent(f"input/{name}.mp4", source="webhook"), deps).job_id
    def write(name: str, body: bytes) -> None:
        path = file_url_to_path(deps.outputs.url(jobs.staged_manifest_key(deps.ledger.get(ids[name]), deps)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    write("huge", b" " * (2 << 20) + b"{}")
    write("no-result", json.dumps({"schema": 1, "job_id": ids["no-result"], "attempt": 1, "status": "succeeded",
                                   "input": {"url": "x", "etag": '"e"', "size": 1}, "result": None}).encode())
    try:
        actions = reap(deps)
        assert actions.get("error", 0) == 0
        for name in ("huge", "no-result"):
            record = deps.ledger.get(ids[name])
            assert record.state == JobState.FAILED and "invalid manifest" in record.error
        assert "larger than" in deps.ledger.get(ids["huge"]).error
        assert deps.ledger.get(ids["fine"]).state == JobState.RUNNING  # untouched by the others
    finally:
        for record in deps.ledger.list():
            if record.instance_id:
                deps.compute.destroy(record.instance_id)


def test_one_input_that_cannot_be_handled_does_not_stop_the_poll_for_the_others(deps, monkeypatch):
    """The poller hands each input to the handler on its own: an exception (here the ledger refusing
    one claim) is logged against that key, the other inputs are launched, and a transient one is
    tried again on the next poll."""
    from vastdrop.errors import TransientError
    from watcher.driver import Poller

    for name in ("a", "b", "c"):
        _put(deps, f"input/{name}.mp4")
    claim = deps.ledger.claim
    failures = {"input/a.mp4": RuntimeError("boom"), "input/b.mp4": TransientError("store hiccup")}

    def flaky_claim(record):
        if record.key in failures:
            raise failures.pop(record.key)
        return claim(record)

    monkeypatch.setattr(deps.ledger, "claim", flaky_claim)
    poller = Poller(deps)
    assert len(poller.poll()) == 3
    assert {r.key for r in deps.ledger.list()} == {"input/c.mp4"}
    poller.poll()  # the transient one is retried; the one that raised a bug is not hammered
    assert {r.key for r in deps.ledger.list()} == {"input/b.mp4", "input/c.mp4"}

"""One staging folder per attempt, published only after verification (ARCHITECTURE.md sections 4, 5, 8).

The hosts here are played by the test: it writes into a job's staging folder what an honest or a
hostile host would, while the job's instance (a local process that only sleeps) keeps running.
"""

from __future__ import annotations

import json

import pytest

from handlers import jobs
from handlers.created import ObjectEvent, on_object_created
from handlers.deps import ControlConfig, Deps
from handlers.finished import on_job_finished, on_manifest_key
from handlers.reaper import reap
from vastdrop import signing
from vastdrop.compute.local import LocalCompute
from vastdrop.ledger.base import JobRecord
from vastdrop.ledger.sqlite import SqliteLedger
from vastdrop.location import Location
from vastdrop.manifest import Manifest, ObjectRef, ResultRef
from vastdrop.states import JobState
from vastdrop.storage.local import file_url_to_path, quoted_md5

S = JobState
SECRET = "callback-secret-for-tests"


def _deps(tmp_path, command=("sleep", "60"), ledger_name="ledger.sqlite", **config) -> Deps:
    (tmp_path / "bucket" / "input").mkdir(parents=True, exist_ok=True)
    config = {"verify_attempts": 1, "retry_backoff_s": 0.0, "callback_secret": SECRET,
              "max_duration_s": 600.0, "max_output_pixels": 1920 * 1080,
              "callback_url": "http://127.0.0.1:9/callback", **config}
    return Deps(inputs=Location.parse(f"file://{tmp_path}/bucket/input/"),
                outputs=Location.parse(f"file://{tmp_path}/bucket/output/"),
                ledger=SqliteLedger(tmp_path / ledger_name),
                compute=LocalCompute(tmp_path / "instances", command=list(command)),
                config=ControlConfig(**config))


@pytest.fixture
def deps(tmp_path):
    d = _deps(tmp_path)
    yield d
    for inst in d.compute.list_ours():
        d.compute.destroy(inst.id)


def _drop(deps: Deps, key: str, data: bytes = b"input video bytes") -> str:
    path = file_url_to_path(deps.inputs.url(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    outcome = on_object_created(ObjectEvent(key, source="webhook"), deps)
    assert outcome.action == "launched", outcome
    return outcome.job_id


def _path(deps: Deps, key: str):
    return file_url_to_path(deps.outputs.url(key))


def _host_writes(deps: Deps, record: JobRecord, data: bytes | None = b"the result", **manifest) -> None:
    """What a job's host writes: its result, then its manifest, into the staging folder it was given."""
    if data is not None:
        _path(deps, jobs.staged_result_key(record, deps)).parent.mkdir(parents=True, exist_ok=True)
        _path(deps, jobs.staged_result_key(record, deps)).write_bytes(data)
    fields = {"job_id": record.job_id, "attempt": record.attempt, "status": "succeeded", "params": record.params,
              "input": ObjectRef(url="https://presigned/redacted", etag=record.input_etag, size=record.input_size),
              "result": ResultRef(url="https://presigned/redacted", etag=quoted_md5(data or b""),
                                  size=len(data or b""))}
    fields.update(manifest)
    body = Manifest(**fields).to_json()
    target = _path(deps, jobs.staged_manifest_key(record, deps))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


def _final(deps: Deps, record: JobRecord) -> Manifest | None:
    path = _path(deps, jobs.manifest_key(record, deps))
    return Manifest.from_json(path.read_bytes()) if path.exists() else None


def test_a_job_is_given_only_its_own_attempts_staging_keys_and_its_own_callback_key(deps):
    job_id = _drop(deps, "input/a.mp4")
    record = deps.ledger.get(job_id)
    spec = jobs.build_spec(record, deps, deadline=deps.clock() + 60)
    staging = f"output/.attempts/{job_id}/1/"
    assert spec.output_url == deps.outputs.url(staging + "result.mp4")
    assert spec.manifest_url == deps.outputs.url(staging + "manifest.json")
    assert spec.log_url == deps.outputs.url(f"logs/{job_id}.log")
    assert jobs.result_key(record, deps) not in spec.output_url  # the final key is never handed out
    assert (spec.max_duration_s, spec.max_output_pixels) == (deps.config.max_duration_s,
                                                             deps.config.max_output_pixels)
    # Its callback key is derived from the secret and its id: it cannot sign for another job.
    key = spec.callback_secret.get_secret_value()
    assert key == signing.job_key(SECRET, job_id) != SECRET
    assert key != signing.job_key(SECRET, "vd-another-job")
    later = jobs.build_spec(JobRecord(**{**record.to_dict(), "state": S.RUNNING, "attempt": 2}), deps, deps.clock() + 60)
    assert f"/.attempts/{job_id}/2/" in later.output_url and later.output_url != spec.output_url


def test_a_verified_result_is_published_then_the_final_manifest_and_staging_is_removed(deps):
    job_id = _drop(deps, "input/dir/a.mov")
    record = deps.ledger.get(job_id)
    _host_writes(deps, record, b"interpolated frames")
    assert _final(deps, record) is None  # the job's manifest alone publishes nothing
    assert on_job_finished(job_id, deps) == "succeeded"
    done = deps.ledger.get(job_id)
    assert _path(deps, "output/dir/a.mp4").read_bytes() == b"interpolated frames"
    final = _final(deps, done)
    assert final.status == "succeeded" and final.job_id == job_id
    assert final.result.url == deps.outputs.url("output/dir/a.mp4")  # not the staging URL
    assert final.result.etag == done.result_etag == quoted_md5(b"interpolated frames")
    assert final.input.url == record.input_url and final.input.etag == record.input_etag
    assert not _path(deps, f"output/.attempts/{job_id}/1").exists()
    assert deps.compute.list_ours() == []  # destroyed first, whatever the manifest said


@pytest.mark.parametrize(("lie", "what"), [
    ({"job_id": "vd-someone-else"}, "job id"),
    ({"attempt": 7}, "attempt"),
    ({"input": ObjectRef(url="x", etag='"an older version"', size=1)}, "input ETag"),
    ({"params": {"target_fps": 24.0, "upscale": 4}}, "params"),
])
def test_a_manifest_that_is_not_this_attempts_fails_the_attempt_and_publishes_nothing(deps, lie, what):
    job_id = _drop(deps, "input/a.mp4")
    record = deps.ledger.get(job_id)
    _host_writes(deps, record, **lie)
    assert on_job_finished(job_id, deps).startswith("invalid manifest")
    after = deps.ledger.get(job_id)
    assert after.state == S.RETRYING and what in after.error
    assert not _path(deps, "output/a.mp4").exists() and _final(deps, after) is None
    assert deps.compute.list_ours() == []


def test_a_stale_manifest_from_attempt_1_cannot_end_attempt_2_and_silence_is_still_reaped(tmp_path):
    deps = _deps(tmp_path, command=("sleep", "60"), max_attempts=3)
    job_id = _drop(deps, "input/a.mp4")
    first = deps.ledger.get(job_id)
    jobs.stop_instance(first, first.instance_id, deps, "test: attempt 1 lost its host")
    jobs.end_attempt(first, deps, S.RUNNING, "transient", "host lost")
    assert reap(deps)["relaunched"] == 1
    second = deps.ledger.get(job_id)
    assert second.attempt == 2 and second.state == S.RUNNING
    # Attempt 1's host still holds its URLs and writes a success into its own (old) folder.
    _host_writes(deps, first, b"stale")
    stale_key = jobs.staged_manifest_key(first, deps)
    assert on_manifest_key(stale_key, deps) == "manifest of another attempt"
    reap(deps)
    assert deps.ledger.get(job_id).state == S.RUNNING  # attempt 2 goes on, unaffected
    # Attempt 2's instance exits without a manifest: reaped and retried, not left running for days.
    deps.compute.destroy(second.instance_id)
    assert reap(deps)["reaped"] == 1
    assert deps.ledger.get(job_id).state == S.RETRYING
    assert not _path(deps, "output/a.mp4").exists()


def test_replay_force_really_reprocesses_in_a_new_attempt(deps):
    job_id = _drop(deps, "input/a.mp4")
    _host_writes(deps, deps.ledger.get(job_id), b"first run")
    assert on_job_finished(job_id, deps) == "succeeded"
    # Without --force the verified result is kept and nothing is launched.
    again = on_object_created(ObjectEvent("input/a.mp4", source="replay"), deps)
    assert again.action == "duplicate" and deps.compute.list_ours() == []
    forced = on_object_created(ObjectEvent("input/a.mp4", source="replay"), deps, force=True)
    record = deps.ledger.get(job_id)
    assert forced.action == "launched" and record.state == S.RUNNING
    assert record.attempt == 2 and record.first_attempt == 2 and len(deps.compute.list_ours()) == 1
    reap(deps)  # the published result of run 1 does not end run 2
    assert deps.ledger.get(job_id).state == S.RUNNING
    _host_writes(deps, record, b"second run")
    assert on_job_finished(job_id, deps) == "succeeded"
    assert _path(deps, "output/a.mp4").read_bytes() == b"second run"
    assert _final(deps, record).attempt == 2


def test_a_forced_run_gets_its_own_retry_budget(tmp_path):
    deps = _deps(tmp_path, max_attempts=2)
    job_id = _drop(deps, "input/a.mp4")
    _host_writes(deps, deps.ledger.get(job_id), b"ok")
    assert on_job_finished(job_id, deps) == "succeeded"
    on_object_created(ObjectEvent("input/a.mp4", source="replay"), deps, force=True)
    record = deps.ledger.get(job_id)
    _host_writes(deps, record, None, status="failed", result=None,
                 error={"kind": "transient", "message": "disk full"})
    assert on_job_finished(job_id, deps) == "failed (transient)"
    assert deps.ledger.get(job_id).state == S.RETRYING  # attempt 2 is this run's first, not its last
    for inst in deps.compute.list_ours():
        deps.compute.destroy(inst.id)


def test_an_old_event_after_the_ledger_forgot_the_job_does_not_relaunch_a_published_result(tmp_path):
    deps = _deps(tmp_path)
    job_id = _drop(deps, "input/a.mp4")
    _host_writes(deps, deps.ledger.get(job_id), b"published")
    assert on_job_finished(job_id, deps) == "succeeded"
    # The record expired (DynamoDB TTL) or the state file is new; B2 redelivers the old event.
    forgetful = _deps(tmp_path, ledger_name="fresh.sqlite")
    outcome = on_object_created(ObjectEvent("input/a.mp4", source="webhook"), forgetful)
    assert outcome.action == "duplicate" and "already published" in outcome.reason
    assert forgetful.ledger.get(job_id).state == S.SUCCEEDED and forgetful.compute.list_ours() == []
    # A result removed (or changed) since is processed again.
    _path(deps, "output/a.mp4").unlink()
    again = _deps(tmp_path, ledger_name="fresher.sqlite")
    assert on_object_created(ObjectEvent("input/a.mp4", source="webhook"), again).action == "launched"
    for inst in again.compute.list_ours():
        again.compute.destroy(inst.id)


def test_a_job_that_exits_65_without_a_manifest_fails_once_without_retries(tmp_path):
    deps = _deps(tmp_path, command=("sh", "-c", "exit 65"), max_attempts=3)
    job_id = _drop(deps, "input/a.mp4")
    import time

    for _ in range(100):
        if deps.ledger.get(job_id).state.is_terminal():
            break
        reap(deps)
        time.sleep(0.05)
    record = deps.ledger.get(job_id)
    assert record.state == S.FAILED and record.error_kind == "bad_input" and record.attempt == 1
    assert "exited 65" in record.error


def test_a_key_whose_derived_keys_are_too_long_is_refused_at_claim(deps):
    key = "input/" + "d/" * 500 + "clip.mp4"  # 1016 bytes: fits as an input, not with .manifest.json
    _path_in = file_url_to_path(deps.inputs.url(key))
    outcome = on_object_created(ObjectEvent(key, etag='"e"', size=10, source="webhook"), deps)
    assert outcome.action == "failed" and "too long" in outcome.reason
    assert deps.ledger.get(outcome.job_id).error_kind == "bad_input" and deps.compute.list_ours() == []
    assert not _path_in.exists()
    long_name = "input/" + "n" * 250 + ".mp4"  # the file name, with .manifest.json, is over 255 bytes
    outcome = on_object_created(ObjectEvent(long_name, etag='"e"', size=10, source="webhook"), deps)
    assert outcome.action == "failed" and "too long" in outcome.reason
    # A key no store could hold (a forged event) is not even claimed.
    huge = on_object_created(ObjectEvent("input/" + "k" * 300_000, etag='"e"', size=10), deps)
    assert huge.action == "skipped" and len(deps.ledger.list()) == 2


def test_a_final_manifest_of_ours_is_not_a_jobs_manifest(deps):
    job_id = _drop(deps, "input/a.mp4")
    _host_writes(deps, deps.ledger.get(job_id), b"r")
    assert on_job_finished(job_id, deps) == "succeeded"
    assert on_manifest_key("output/a.mp4.manifest.json", deps) == "not a job's manifest"
    body = json.loads(_path(deps, "output/a.mp4.manifest.json").read_text())
    assert body["status"] == "succeeded" and body["result"]["url"].endswith("/output/a.mp4")


def test_a_forgotten_job_does_not_reuse_an_attempt_whose_folder_a_host_wrote_into(tmp_path):
    """An earlier run's host (its URLs still valid) writes into attempt 1's folder after that attempt
    ended; the ledger then forgets the job. The new run starts past that folder, removes it, and
    nothing the old host wrote is published."""
    deps = _deps(tmp_path)
    job_id = _drop(deps, "input/a.mp4")
    first = deps.ledger.get(job_id)
    jobs.stop_instance(first, first.instance_id, deps, "test: lost")
    jobs.end_attempt(first, deps, S.RUNNING, "transient", "host lost")
    _host_writes(deps, first, b"HOSTILE late write")
    forgetful = _deps(tmp_path, ledger_name="fresh.sqlite")
    assert on_object_created(ObjectEvent("input/a.mp4", source="webhook"), forgetful).action == "launched"
    record = forgetful.ledger.get(job_id)
    assert record.attempt == record.first_attempt == 2
    assert not _path(deps, f"output/.attempts/{job_id}/1").exists()
    reap(forgetful)
    assert forgetful.ledger.get(job_id).state == S.RUNNING and not _path(deps, "output/a.mp4").exists()
    for d in (deps, forgetful):
        for inst in d.compute.list_ours():
            d.compute.destroy(inst.id)


def test_a_failure_manifest_whose_handling_was_cut_short_still_ends_the_attempt_as_it_says(deps):
    """The first handling moved the job to verifying and then died (a destroy that failed): the
    reaper finishes it from the manifest, so bad input stays permanent, never a paid retry."""
    job_id = _drop(deps, "input/a.mp4")
    record = deps.ledger.get(job_id)
    _host_writes(deps, record, None, status="failed", result=None,
                 error={"kind": "bad_input", "message": "not a video"})
    deps.ledger.transition(job_id, S.RUNNING, S.VERIFYING)
    reap(deps)
    after = deps.ledger.get(job_id)
    assert after.state == S.FAILED and after.error_kind == "bad_input" and "not a video" in after.error


def test_a_host_rewriting_its_success_as_a_failure_during_the_window_ends_its_own_attempt(tmp_path):
    deps = _deps(tmp_path, verify_attempts=3, verify_interval_s=30.0)
    job_id = _drop(deps, "input/a.mp4")
    _host_writes(deps, deps.ledger.get(job_id), b"r")
    assert on_job_finished(job_id, deps) == "verifying"
    _host_writes(deps, deps.ledger.get(job_id), b"r", status="failed", result=None,
                 error={"kind": "transient", "message": "changed my mind"})
    assert reap(deps).get("error", 0) == 0
    after = deps.ledger.get(job_id)
    assert after.state == S.RETRYING and not _path(deps, "output/a.mp4").exists()
    for inst in deps.compute.list_ours():
        deps.compute.destroy(inst.id)


def test_a_multibyte_name_that_passes_the_claim_check_is_also_published(deps):
    key = "input/" + "字" * 77 + ".mov"  # 235 bytes: the result's manifest name is 249 bytes
    job_id = _drop(deps, key)
    _host_writes(deps, deps.ledger.get(job_id), b"r")
    assert on_job_finished(job_id, deps) == "succeeded"
    assert _path(deps, "output/" + "字" * 77 + ".mp4").read_bytes() == b"r"


def test_staging_is_never_an_input_or_a_result(deps):
    layout = deps.layout
    assert not layout.is_input("input/.attempts/x.mp4") and layout.staged_attempt("output/.attempts/j/²/manifest.json") is None

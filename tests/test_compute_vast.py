"""VastCompute against the Vast API emulator, through the real `vastai` SDK (no mocks): offer choice,
env/label contract, retries, create-failure reconciliation, caps, states, destroy, secret hygiene."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vastai import VastAI

from tests.support.vast_emulator import Limits, VastEmulator
from vastdrop.compute.base import Instance, InstanceState, label_for
from vastdrop.compute.vast import VastCompute, VastConfig, state_of
from vastdrop.errors import (
    AccountError,
    ApiBusyError,
    CapacityError,
    PermanentError,
    TransientError,
)
from vastdrop.jobspec import JobSpec

STUB_JOB = textwrap.dedent(
    """
    import os, sys, time
    out = os.environ.get("OUT_PATH")
    if out:
        with open(out + ".tmp", "w") as f:
            f.write(os.environ.get("JOB_CALLBACK_SECRET", "") + "|" + os.environ["CONTAINER_ID"] + "|"
                    + os.environ.get("JOB_ID", ""))
        os.replace(out + ".tmp", out)
    print("hello from job", os.environ["CONTAINER_ID"], flush=True)
    time.sleep(float(os.environ.get("JOB_SECONDS", "0")))
    print("job done", flush=True)
    sys.exit(int(os.environ.get("JOB_CODE", "0")))
    """
)
STUB = [sys.executable, "-c", STUB_JOB]
SECRET = "cb-s3cr3t-value-5f2a9c"
# Vast's documented limits at 1/20 of their waits, on both sides: pacing and collisions stay real.
SCALE = 0.05
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "reconcile_interval_s": 0.05,
        "image": "vastdrop/gpu-job:test", "disk_gb": 20, "pace_scale": SCALE, "api_margin_s": 0.01}


def _spec(job_id: str = "job-vast-1", attempt: int = 1) -> JobSpec:
    return JobSpec(id=job_id, input_url="file:///in/a.mp4", output_url="file:///out/a.mp4",
                   manifest_url="file:///out/a.json", callback_secret=SECRET, attempt=attempt)


def _env(spec: JobSpec, **extra: str) -> dict[str, str]:
    return {**spec.to_env(), "JOB_SECONDS": "60", **extra}


@pytest.fixture
def emu() -> Iterator[VastEmulator]:
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5, limits=Limits().scaled(SCALE)) as e:
        yield e


def _compute(emu: VastEmulator, client: VastAI | None = None, **config: Any) -> VastCompute:
    cfg = VastConfig(**{**FAST, **config})
    if client is not None:
        return VastCompute(client, config=cfg)
    return VastCompute(api_key=emu.api_key, server_url=emu.url, config=cfg)


class HookedVastAI(VastAI):
    """The real SDK; `after_search` runs right after an offer search, to stage a race on the create
    that follows (someone else rents the offer, the API throttles, ...)."""

    after_search: Callable[[list[dict[str, Any]]], None] | None = None

    def search_offers(self, *args: Any, **kwargs: Any) -> list:
        offers = super().search_offers(*args, **kwargs)
        if self.after_search is not None:
            hook, self.after_search = self.after_search, None
            hook(offers)
        return offers


def _hooked(emu: VastEmulator) -> HookedVastAI:
    return HookedVastAI(api_key=emu.api_key, server_url=emu.url, retry=1)


def _wait_state(compute: VastCompute, iid: str, *states: InstanceState, timeout: float = 8.0) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        inst = compute.get(iid)
        if inst.state in states:
            return inst
        if time.monotonic() > deadline:
            raise AssertionError(f"{iid} is {inst.state}, not {states}")
        time.sleep(0.03)


def _live_ids(emu: VastEmulator) -> list[str]:
    return [str(s["id"]) for s in emu.live_instances()]


def test_cheapest_matching_offer_runs_the_job_with_env_and_label(emu: VastEmulator, tmp_path: Path) -> None:
    compute = _compute(emu)
    assert compute.name == "vast"
    out = tmp_path / "seen.txt"
    spec = _spec()
    inst = compute.launch(spec, _env(spec, OUT_PATH=str(out), JOB_SECONDS="0.3", JOB_CODE="0"))

    # RTX A4000 ($0.12) fails the CUDA/RAM floor, RTX 3080 is rented: the RTX 3090 wins, priced for
    # the 20 GB we rent (dph_total includes the storage: the search sent allocated_storage).
    offer = next(o for o in emu.offers if o["id"] == 31000001)
    storage_dph = offer["storage_cost"] * 20 / 720
    assert (inst.offer_id, inst.gpu_name) == ("31000001", "RTX 3090")
    assert inst.dph == pytest.approx(offer["dph_base"] + storage_dph)
    assert inst.rates == pytest.approx({"gpu_dph": offer["dph_base"], "storage_dph": storage_dph,
                                        "down_per_gb": offer["inet_down_cost"], "up_per_gb": offer["inet_up_cost"]})
    assert inst.state in (InstanceState.PENDING, InstanceState.LOADING)
    assert inst.label == label_for(spec.id) and inst.job_id == spec.id
    snap = emu.instance(int(inst.id))
    assert snap["label"] == label_for(spec.id) and snap["image"] == "vastdrop/gpu-job:test"
    assert snap["disk"] == 20 and snap["runtype"] == "args"
    (req,) = emu.create_requests
    assert req["status"] == 200 and set(spec.to_env()) <= set(req["env_keys"]) and req["cancel_unavail"] is True

    running = _wait_state(compute, inst.id, InstanceState.RUNNING, InstanceState.EXITED)
    assert running.gpu_name == "RTX 3090"
    done = _wait_state(compute, inst.id, InstanceState.EXITED)
    assert done.exit_code == 0
    assert out.read_text() == f"{SECRET}|{inst.id}|{spec.id}"  # env reached the job, + Vast's own
    assert "hello from job" in compute.logs(inst.id) and "job done" in compute.logs(inst.id, tail=1)
    assert [(i.id, i.state) for i in compute.list_ours()] == [(inst.id, InstanceState.EXITED)]

    compute.destroy(inst.id)
    assert compute.get(inst.id).state is InstanceState.GONE
    assert emu.live_instances() == [] and compute.list_ours() == []


@pytest.mark.parametrize(
    ("config", "offer"),
    [
        ({"gpu_names": ["RTX_4090"]}, "31000002"),  # not the unverified one, not the 2-GPU box
        ({"gpu_names": ["RTX 4090"], "verified_only": False, "min_reliability": 0.9}, "31000003"),
        ({"min_cuda": 12.9}, "31000002"),  # the 3090 has CUDA 12.8
        ({"disk_gb": 150}, "31000002"),  # the 3090 has 120 GB
        ({"min_gpu_ram_gb": 40, "max_dph": 1.0}, "31000004"),  # only the A100 has 80 GB
    ],
)
def test_filters_are_honoured(emu: VastEmulator, config: dict[str, Any], offer: str) -> None:
    compute = _compute(emu, **config)
    inst = compute.launch(_spec(), _env(_spec()))
    assert inst.offer_id == offer
    compute.destroy(inst.id)


def test_a_segment_that_asks_for_nvenc_is_rented_only_where_there_is_one(emu: VastEmulator) -> None:
    """Only the A100 (no NVENC) matches these filters. A segment cannot fall back to another encoder
    (its siblings' codec configuration), so asking for NVENC it waits for another offer; a whole job,
    or a segment on the auto encoder (libx264 on every host), is rented there."""
    from vastdrop.throughput import has_nvenc

    assert has_nvenc("RTX 4090") and not has_nvenc("A100 SXM4") and not has_nvenc("H200")
    assert not has_nvenc("RTX 9999 Ti") and not has_nvenc(None)  # not known to have one: not rented for it
    compute = _compute(emu, min_gpu_ram_gb=40, max_dph=1.0)
    segment = _spec().model_copy(update={"segment_start_s": "10.000", "video_codec": "h264_nvenc"})
    with pytest.raises(CapacityError, match="no offer has NVENC"):
        compute.launch(segment, _env(segment))
    assert emu.all_instances() == []
    for spec in (_spec().model_copy(update={"video_codec": "h264_nvenc"}), segment.model_copy(update={"video_codec": "auto"})):
        inst = compute.launch(spec, _env(spec))
        assert inst.gpu_name == "A100 SXM4"
        compute.destroy(inst.id)


@pytest.mark.parametrize("config", [{"gpu_names": ["H100"]}, {"max_dph": 0.15}, {"min_reliability": 0.999}])
def test_no_matching_offer_is_a_wait_with_a_clear_message(emu: VastEmulator, config: dict[str, Any]) -> None:
    with pytest.raises(CapacityError, match="no offer matches"):
        _compute(emu, **config).launch(_spec(), _env(_spec()))
    assert emu.all_instances() == []


def test_throttling_and_server_errors_are_retried(emu: VastEmulator) -> None:
    compute = _compute(emu)
    emu.rate_limit_next(3, retry_after=0.01)
    a = compute.launch(_spec("job-a"), _env(_spec("job-a")))
    assert [r["status"] for r in emu.request_log][:4] == [429, 429, 429, 200]

    emu.server_error_next(2, status=500)  # the SDK never retries a 500; we do
    b = compute.launch(_spec("job-b"), _env(_spec("job-b")))
    assert sorted(_live_ids(emu)) == sorted([a.id, b.id])

    emu.server_error_next(2, status=503)
    assert compute.get(a.id).id == a.id

    emu.server_error_next(50, status=503)  # more than our attempts: surfaces as transient
    with pytest.raises(TransientError, match="HTTP 503"):
        compute.list_ours()
    emu.server_error_next(0)


def test_a_create_answered_503_before_any_contract_is_retried_once_it_is_known_safe(emu: VastEmulator) -> None:
    client = _hooked(emu)
    client.after_search = lambda offers: emu.server_error_next(1, status=503)
    compute = _compute(emu, client)
    inst = compute.launch(_spec(), _env(_spec()))
    assert _live_ids(emu) == [inst.id]
    creates = emu.create_requests
    assert [c["status"] for c in creates] == [503, 200]
    assert creates[0]["instance_id"] is None


def test_a_throttled_create_waits_for_the_penalty_and_uses_no_attempt(emu: VastEmulator) -> None:
    """Another process on the same key creates first: our create gets Vast's plain-text 429. The job
    waits (ApiBusyError, a capacity wait: the handler keeps its attempt), the pacer holds every create
    of this process back for the documented 12 s penalty, and the next try goes through."""
    other = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
    client = _hooked(emu)
    client.after_search = lambda offers: other.create_instance(31000002, image="img", disk=20, label="someone-else")
    compute = _compute(emu, client, max_create_wait_s=0.1)
    with pytest.raises(ApiBusyError, match="waiting for the Vast API") as err:
        compute.launch(_spec(), _env(_spec()))
    assert err.value.retry_after_s == pytest.approx(12.0 * SCALE, abs=0.1)
    assert [c["status"] for c in emu.create_requests] == [200, 429]
    assert compute.pacer("create").delay() > 0.3  # within the penalty: no create is sent
    with pytest.raises(ApiBusyError):
        compute.launch(_spec(), _env(_spec()))
    assert len(emu.create_requests) == 2
    inst = _launch_when_allowed(compute, _spec())
    assert [c["status"] for c in emu.create_requests] == [200, 429, 200]
    assert inst.id in _live_ids(emu)


def _launch_when_allowed(compute: VastCompute, spec: JobSpec) -> Instance:
    for _ in range(20):
        try:
            return compute.launch(spec, _env(spec))
        except ApiBusyError as exc:
            time.sleep(exc.retry_after_s or 0.1)
    raise AssertionError("never allowed to create")


@pytest.mark.parametrize("status", [500, 503])
def test_a_failed_create_that_made_a_contract_is_adopted_not_duplicated(emu: VastEmulator, status: int) -> None:
    emu.create_fails_with_contract = True
    emu.faults.create_fail_status = status
    compute = _compute(emu)
    spec = _spec()
    inst = compute.launch(spec, _env(spec))
    (live,) = emu.live_instances()  # exactly one contract, and it is the one we return
    assert str(live["id"]) == inst.id and live["label"] == label_for(spec.id)
    assert inst.extra.get("adopted") is True and inst.rates is not None
    assert len(emu.create_requests) == 1  # never re-sent (the SDK's own retry is off)
    compute.destroy(inst.id)
    assert emu.live_instances() == []


def test_an_existing_instance_of_the_same_job_attempt_is_adopted(emu: VastEmulator) -> None:
    """A watcher that died between create and recording the id: the relaunch adopts, not re-rents."""
    compute = _compute(emu)
    spec = _spec()
    raw = VastAI(api_key=emu.api_key, server_url=emu.url, retry=1)
    first = raw.create_instance(31000002, image="img", disk=20, env=_env(spec), label=label_for(spec.id))
    iid = str(first["new_contract"])

    again = compute.launch(spec, _env(spec))
    assert again.id == iid and again.extra.get("adopted") is True
    assert len(emu.create_requests) == 1

    retry = _spec(attempt=2)  # a new attempt of the same job is a new instance
    other = _launch_when_allowed(compute, retry)  # our raw create above counts against the create pace
    assert other.id != iid and sorted(_live_ids(emu)) == sorted([iid, other.id])


def test_an_offer_rented_away_between_search_and_create_moves_on_to_the_next(emu: VastEmulator) -> None:
    client = _hooked(emu)
    client.after_search = lambda offers: emu.set_offers([o for o in emu.offers if o["id"] != offers[0]["id"]])
    compute = _compute(emu, client)
    inst = compute.launch(_spec(), _env(_spec()))
    assert inst.offer_id == "31000002"  # the next cheapest after the vanished 31000001
    assert [c["status"] for c in emu.create_requests] == [404, 200]
    assert _live_ids(emu) == [inst.id]


def test_max_instances_cap(emu: VastEmulator) -> None:
    compute = _compute(emu, max_instances=1)
    a = compute.launch(_spec("job-a"), _env(_spec("job-a")))
    with pytest.raises(TransientError, match="capacity"):
        compute.launch(_spec("job-b"), _env(_spec("job-b")))
    assert _live_ids(emu) == [a.id]
    compute.destroy(a.id)
    b = compute.launch(_spec("job-b"), _env(_spec("job-b")))
    assert _live_ids(emu) == [b.id]


def test_max_total_dph_cap(emu: VastEmulator) -> None:
    compute = _compute(emu, max_total_dph=0.3)
    a = compute.launch(_spec("job-a"), _env(_spec("job-a")))
    assert a.gpu_name == "RTX 3090"
    with pytest.raises(TransientError, match="capacity"):  # the 3090 is ours now; the 4090 would exceed
        compute.launch(_spec("job-b"), _env(_spec("job-b")))
    assert _live_ids(emu) == [a.id]
    c = _launch_when_allowed(_compute(emu, max_total_dph=0.6), _spec("job-c"))
    assert sorted(_live_ids(emu)) == sorted([a.id, c.id])


@pytest.mark.parametrize("refusal", ["instance limit", "out of credit"])
def test_an_account_refusal_pauses_launches_until_it_clears(emu: VastEmulator, refusal: str) -> None:
    """Not the job's fault: AccountError (a capacity wait, no attempt used), and no further create is
    sent by any launch of the process until the pause is over; then launches resume."""
    if refusal == "instance limit":
        emu.max_instances = 0
    else:
        emu.out_of_credit = True
    compute = _compute(emu, account_backoff_s=0.5)
    with pytest.raises(AccountError, match="account refuses") as err:
        compute.launch(_spec(), _env(_spec()))
    assert err.value.retry_after_s == 0.5
    sent = len(emu.create_requests)
    with pytest.raises(AccountError, match="launches paused"):
        _compute(emu, account_backoff_s=0.5).launch(_spec("job-b"), _env(_spec("job-b")))
    assert len(emu.create_requests) == sent and emu.live_instances() == []
    emu.max_instances, emu.out_of_credit = None, False
    time.sleep(0.6)
    inst = _launch_when_allowed(compute, _spec("job-b"))
    assert _live_ids(emu) == [inst.id]


def test_stuck_loading_is_reported_as_loading(emu: VastEmulator) -> None:
    emu.stuck_loading = True
    compute = _compute(emu)
    inst = compute.launch(_spec(), _env(_spec()))
    time.sleep(0.3)
    assert compute.get(inst.id).state is InstanceState.LOADING
    assert compute.logs(inst.id) == ""


def test_a_job_that_dies_mid_run_is_exited_with_a_nonzero_code(emu: VastEmulator) -> None:
    emu.die_mid_job(next=True, delay_s=0.1)
    compute = _compute(emu)
    inst = compute.launch(_spec(), _env(_spec()))
    done = _wait_state(compute, inst.id, InstanceState.EXITED)
    assert done.exit_code == 137
    assert [i.state for i in compute.list_ours()] == [InstanceState.EXITED]  # still billed until destroyed


def test_destroy_is_idempotent_and_unknown_ids_are_fine(emu: VastEmulator) -> None:
    compute = _compute(emu)
    inst = compute.launch(_spec(), _env(_spec()))
    _wait_state(compute, inst.id, InstanceState.RUNNING)
    pid = emu.pid(int(inst.id))
    compute.destroy(inst.id)
    assert emu.live_instances() == [] and pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    compute.destroy(inst.id)  # 404 no_such_instance: done
    compute.destroy("4242")
    emu.destroy_unknown_status = 200  # the live API's other answer: 200 success false
    compute.destroy("4242")
    compute.destroy("not-a-vast-id")
    assert compute.get("4242").state is InstanceState.GONE
    assert compute.get("local-1234abcd").state is InstanceState.GONE
    assert compute.logs("4242") == ""
    emu.show_unknown_status = 404
    assert compute.get("4242").state is InstanceState.GONE


def test_a_rejected_api_key_pauses_launches_and_fails_no_job(emu: VastEmulator) -> None:
    bad = VastCompute(api_key="wrong-key-0123456789", server_url=emu.url, config=VastConfig(**FAST))
    with pytest.raises(AccountError) as err:
        bad.launch(_spec(), _env(_spec()))
    assert not isinstance(err.value, PermanentError)
    assert "HTTP 401" in str(err.value) and "wrong-key-0123456789" not in str(err.value)


def test_no_secret_in_any_log_record_or_exception(emu: VastEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok-" + "9" * 24
    seen_errors: list[BaseException] = []
    compute = _compute(emu)
    spec = _spec()
    env = _env(spec, HF_TOKEN=token)

    emu.rate_limit_next(2, retry_after=0.01)
    emu.create_fails_with_contract = True
    inst = compute.launch(spec, env)
    emu.create_fails_with_contract = False
    compute.get(inst.id)
    compute.logs(inst.id)
    listed = compute.list_ours()

    for action in (
        lambda: (emu.server_error_next(50, status=502), compute.list_ours()),
        lambda: (emu.server_error_next(0), emu.set_offers([]), compute.launch(_spec("job-x"), env)),
        lambda: VastCompute(api_key="wrong-key-abcdef123456", server_url=emu.url,
                            config=VastConfig(**FAST)).launch(spec, env),
    ):
        with pytest.raises((TransientError, PermanentError)) as err:
            action()
        seen_errors.append(err.value)

    texts = [r.getMessage() for r in caplog.records]
    texts += ["".join(traceback.format_exception(e)) for e in seen_errors]
    texts += [repr(i) for i in [inst, *listed]]
    assert any("retry" in t for t in texts) and any("adopting" in t for t in texts)
    for text in texts:
        for secret in (emu.api_key, SECRET, token, "wrong-key-abcdef123456"):
            assert secret not in text


# -- Vast's documented limits and semantics ------------------------------------------------------------


def test_long_env_values_go_as_parts_within_vasts_limits(emu: VastEmulator) -> None:
    """A presigned URL is 340+ characters; Vast takes 256 per value. It goes as NAME__1, NAME__2, ..."""
    url = "https://bucket.s3.example.com/input/a.mp4?" + "X-Amz-Signature=" + "ab" * 200
    spec = JobSpec(id="job-parts", input_url=url, output_url=url.replace("input", "output"),
                   manifest_url="file:///out/a.json")
    compute = _compute(emu)
    inst = compute.launch(spec, _env(spec))
    env = emu.instance(int(inst.id))["env"]
    assert "JOB_INPUT_URL" not in env and all(len(v) <= 256 for v in env.values())
    parts = sorted((k for k in env if k.startswith("JOB_INPUT_URL__")), key=lambda k: int(k.rsplit("__", 1)[1]))
    assert len(parts) == 2 and "".join(env[k] for k in parts) == url
    assert emu.create_requests[0]["status"] == 200


def test_a_spec_that_cannot_fit_is_refused_before_any_create(emu: VastEmulator) -> None:
    spec = _spec()
    with pytest.raises(PermanentError, match=r"cannot fit Vast's limits: env is \d+ characters"):
        _compute(emu).launch(spec, _env(spec, BIG="x" * 40_000))
    with pytest.raises(PermanentError, match="image name is 1100 characters"):
        _compute(emu, image="i" * 1100).launch(spec, _env(spec))
    with pytest.raises(PermanentError, match="args and onstart"):
        _compute(emu, onstart="echo " * 1000).launch(spec, _env(spec))
    assert emu.create_requests == [] and emu.all_instances() == []


def test_an_offer_that_cannot_start_now_is_refused_not_rented_stopped(emu: VastEmulator) -> None:
    """cancel_unavail=true (the SDK sends false): Vast answers 410 instead of making a stopped contract
    that bills storage; we move on to the next offer."""
    emu.unavailable_offers.add(31000001)
    inst = _compute(emu).launch(_spec(), _env(_spec()))
    assert [(c["offer_id"], c["status"], c["cancel_unavail"]) for c in emu.create_requests] == [
        (31000001, 410, True), (31000002, 200, True)]
    assert _live_ids(emu) == [inst.id] and inst.gpu_name == "RTX 4090"


@pytest.mark.parametrize("status", [400, 500])
def test_a_failed_create_that_names_its_contract_has_it_destroyed_at_once(emu: VastEmulator, status: int) -> None:
    emu.create_fails_with_contract = True
    emu.faults.create_fail_includes_id = True
    emu.faults.create_fail_status = status
    compute = _compute(emu, create_attempts=1, max_offers_tried=1)
    with pytest.raises((TransientError, PermanentError)):
        compute.launch(_spec(), _env(_spec()))
    made = [c["instance_id"] for c in emu.create_requests if c["instance_id"]]
    assert made and emu.live_instances() == []
    assert [d["instance_id"] for d in emu.destroy_requests] == made


def test_one_offer_search_serves_several_launches(emu: VastEmulator) -> None:
    compute = _compute(emu, max_instances=5, max_total_dph=5.0, max_dph=1.0)
    launched = [_launch_when_allowed(compute, _spec(f"job-{i}")) for i in range(3)]
    searches = [r for r in emu.request_log if r["path"].startswith("/api/v0/bundles")]
    assert len(searches) == 1
    assert len({i.offer_id for i in launched}) == 3  # an offer we rented is not offered to the next launch


def test_at_the_documented_pace_nothing_collides() -> None:
    """The strict emulator at Vast's real intervals: launches, lists, shows and destroys of several
    jobs, back to back, get no 429, and creates are >= 4.5 s apart."""
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as emu:
        compute = VastCompute(api_key=emu.api_key, server_url=emu.url,
                              config=VastConfig(image="img:1", max_instances=5, max_total_dph=5.0,
                                                max_dph=1.0))
        launched = [compute.launch(_spec(f"job-{i}"), _env(_spec(f"job-{i}"))) for i in range(3)]
        for inst in launched:
            compute.get(inst.id)
        compute.list_ours()
        for inst in launched:
            compute.destroy(inst.id)
        assert emu.rate_limited == [] and emu.live_instances() == []
        times = [c["monotonic"] for c in emu.create_requests]
        assert len(times) == 3 and min(b - a for a, b in zip(times, times[1:], strict=False)) >= 4.5


def test_the_daily_search_quota_waits_for_its_reset(emu: VastEmulator) -> None:
    emu.limits = Limits(search_quota_per_day=1).scaled(SCALE)
    compute = _compute(emu, offer_cache_s=0, max_instances=5, max_total_dph=5.0)
    _launch_when_allowed(compute, _spec("job-a"))
    emu.set_search_quota_reset(time.time() + 3600)
    with pytest.raises(ApiBusyError, match="daily offer-search quota") as err:
        compute.launch(_spec("job-b"), _env(_spec("job-b")))
    assert err.value.retry_after_s == pytest.approx(3600, abs=5)
    searches = len([r for r in emu.request_log if r["path"].startswith("/api/v0/bundles")])
    with pytest.raises(ApiBusyError):  # no search is sent before the reset
        compute.launch(_spec("job-b"), _env(_spec("job-b")))
    assert len([r for r in emu.request_log if r["path"].startswith("/api/v0/bundles")]) == searches


@pytest.mark.parametrize(("state", "expected"), [
    ("unknown", InstanceState.UNHEALTHY), ("offline", InstanceState.UNHEALTHY),
    ("frozen", InstanceState.UNHEALTHY), ("rebooting", InstanceState.LOADING),
])
def test_documented_states_map_to_what_the_reaper_acts_on(emu: VastEmulator, state: str,
                                                          expected: InstanceState) -> None:
    compute = _compute(emu)
    inst = compute.launch(_spec(), _env(_spec()))
    _wait_state(compute, inst.id, InstanceState.RUNNING)
    emu.set_state(int(inst.id), state, duration_s=5.0)
    assert _wait_state(compute, inst.id, expected).state is expected
    assert [i.state for i in compute.list_ours()] == [expected]


def test_a_container_that_cannot_start_is_exited_and_a_destroyed_one_gone(emu: VastEmulator) -> None:
    compute = _compute(emu)
    emu.fail_container_start()  # the next instance's container
    inst = compute.launch(_spec(), _env(_spec()))
    failed = _wait_state(compute, inst.id, InstanceState.EXITED)
    assert "OCI runtime" in failed.extra["status_msg"]
    compute.destroy(inst.id)
    assert compute.get(inst.id).state is InstanceState.GONE  # cur_state "unloaded" first, then null
    assert state_of({"id": 1, "actual_status": "running", "cur_state": "unloaded"}) is InstanceState.GONE
    assert state_of({"id": 1, "actual_status": "created", "status_msg": "pulling"}) is InstanceState.LOADING


def test_an_interruptible_launch_bids_its_ratio_of_the_on_demand_price_and_an_outbid_reads_preempted(
        emu: VastEmulator) -> None:
    """GIVEN interruptible=True and bid_ratio 0.7
    WHEN a job launches, and later the market outbids its instance
    THEN the create carried price = 0.7 x the offer's on-demand GPU price (the cheapest matching
    offer, the RTX 3090 at $0.18/h), the instance's rates bill that bid, and its state is PREEMPTED."""
    compute = _compute(emu, interruptible=True, bid_ratio=0.7)
    inst = compute.launch(_spec(), _env(_spec()))
    offer = next(o for o in emu.offers if o["id"] == 31000001)
    bid = round(0.7 * offer["dph_base"], 4)
    (req,) = emu.create_requests
    assert inst.offer_id == "31000001" and req["price"] == bid and req["status"] == 200
    storage_dph = offer["storage_cost"] * 20 / 720
    assert inst.rates["gpu_dph"] == pytest.approx(bid) and inst.dph == pytest.approx(bid + storage_dph)
    assert emu.instance(int(inst.id))["is_bid"]
    _wait_state(compute, inst.id, InstanceState.RUNNING)
    emu.outbid(int(inst.id))
    assert _wait_state(compute, inst.id, InstanceState.PREEMPTED).extra["is_bid"] is True
    assert [i.state for i in compute.list_ours()] == [InstanceState.PREEMPTED]
    # An on-demand instance stopped the same way is not a preemption: it just never finishes our job.
    stopped = {"id": 1, "actual_status": "stopped", "cur_state": "stopped", "intended_status": "stopped",
               "next_state": "stopped"}
    assert state_of({**stopped, "is_bid": False}) is InstanceState.EXITED
    assert state_of({**stopped, "is_bid": True}) is InstanceState.PREEMPTED
    assert state_of({**stopped, "is_bid": True, "intended_status": "running"}) is InstanceState.EXITED


def test_an_offer_whose_min_bid_is_above_our_bid_is_skipped_and_one_that_rises_meanwhile_moves_on(
        emu: VastEmulator) -> None:
    """The 3090's min_bid ($0.17) is above 0.7 x $0.18: the next offer is rented. When an offer's
    min_bid rises between the search and the create, the create answers invalid_price with a
    stopped contract: that contract is destroyed and the next offer is tried."""
    from tests.support.vast_emulator import DEFAULT_OFFERS

    pricey = [{**o, "min_bid": 0.17} if o["id"] == 31000001 else o for o in DEFAULT_OFFERS]
    emu.set_offers(pricey)
    compute = _compute(emu, interruptible=True)
    inst = compute.launch(_spec(), _env(_spec()))
    assert inst.offer_id == "31000002" and emu.create_requests[0]["price"] == round(0.7 * 0.35, 4)
    compute.destroy(inst.id)

    emu.set_offers(DEFAULT_OFFERS)
    client = _hooked(emu)
    client.after_search = lambda offers: emu.set_offers(pricey)
    raced = _compute(emu, client, interruptible=True).launch(_spec("job-vast-2"), _env(_spec("job-vast-2")))
    refused = emu.create_requests[1]
    assert refused["error"] == "invalid_price" and emu.instance(refused["instance_id"])["destroyed"]
    assert raced.offer_id == "31000002" and _live_ids(emu) == [raced.id]

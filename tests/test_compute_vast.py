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

from tests.support.vast_emulator import VastEmulator
from vastdrop.compute.base import Instance, InstanceState, label_for
from vastdrop.compute.vast import VastCompute, VastConfig
from vastdrop.errors import ConfigError, PermanentError, TransientError
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
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "reconcile_interval_s": 0.05,
        "image": "vastdrop/gpu-job:test", "disk_gb": 20}


def _spec(job_id: str = "job-vast-1", attempt: int = 1) -> JobSpec:
    return JobSpec(id=job_id, input_url="file:///in/a.mp4", output_url="file:///out/a.mp4",
                   manifest_url="file:///out/a.json", callback_secret=SECRET, attempt=attempt)


def _env(spec: JobSpec, **extra: str) -> dict[str, str]:
    return {**spec.to_env(), "JOB_SECONDS": "60", **extra}


@pytest.fixture
def emu() -> Iterator[VastEmulator]:
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=0.5) as e:
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

    # RTX A4000 ($0.12) fails the CUDA/RAM floor, RTX 3080 is rented: the RTX 3090 at $0.18 wins.
    assert (inst.offer_id, inst.gpu_name, inst.dph) == ("31000001", "RTX 3090", 0.18)
    assert inst.state in (InstanceState.PENDING, InstanceState.LOADING)
    assert inst.label == label_for(spec.id) and inst.job_id == spec.id
    snap = emu.instance(int(inst.id))
    assert snap["label"] == label_for(spec.id) and snap["image"] == "vastdrop/gpu-job:test"
    assert snap["disk"] == 20 and snap["runtype"] == "args"
    (req,) = emu.create_requests
    assert req["status"] == 200 and set(spec.to_env()) <= set(req["env_keys"])

    running = _wait_state(compute, inst.id, InstanceState.RUNNING, InstanceState.EXITED)
    assert running.gpu_name == "RTX 3090" and running.offer_id == "31000001"
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


@pytest.mark.parametrize("config", [{"gpu_names": ["H100"]}, {"max_dph": 0.15}, {"min_reliability": 0.999}])
def test_no_matching_offer_is_transient_with_a_clear_message(emu: VastEmulator, config: dict[str, Any]) -> None:
    with pytest.raises(TransientError, match="no offer matches"):
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


@pytest.mark.parametrize("fault", ["throttle", "server_error"])
def test_a_create_rejected_before_any_contract_is_retried_once_it_is_known_safe(
    emu: VastEmulator, fault: str
) -> None:
    client = _hooked(emu)
    if fault == "throttle":
        client.after_search = lambda offers: emu.rate_limit_next(1, retry_after=0.01)
    else:
        client.after_search = lambda offers: emu.server_error_next(1, status=503)
    compute = _compute(emu, client)
    inst = compute.launch(_spec(), _env(_spec()))
    assert _live_ids(emu) == [inst.id]
    creates = emu.create_requests
    assert [c["status"] for c in creates] == [429 if fault == "throttle" else 503, 200]
    assert creates[0]["instance_id"] is None


@pytest.mark.parametrize("status", [500, 503])
def test_a_failed_create_that_made_a_contract_is_adopted_not_duplicated(emu: VastEmulator, status: int) -> None:
    emu.create_fails_with_contract = True
    emu.faults.create_fail_status = status
    compute = _compute(emu)
    spec = _spec()
    inst = compute.launch(spec, _env(spec))
    (live,) = emu.live_instances()  # exactly one contract, and it is the one we return
    assert str(live["id"]) == inst.id and live["label"] == label_for(spec.id)
    assert inst.extra.get("adopted") is True and inst.offer_id == "31000001"
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
    other = compute.launch(retry, _env(retry))
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
    compute = _compute(emu, gpu_names=["RTX 4090"], max_total_dph=0.5)
    a = compute.launch(_spec("job-a"), _env(_spec("job-a")))
    assert a.dph == 0.35
    with pytest.raises(TransientError, match="capacity"):
        compute.launch(_spec("job-b"), _env(_spec("job-b")))  # 0.35 + 0.35 > 0.5
    assert _live_ids(emu) == [a.id]
    assert _compute(emu, max_total_dph=0.6).launch(_spec("job-c"), _env(_spec("job-c"))).dph == 0.18


def test_the_accounts_own_instance_limit_is_transient(emu: VastEmulator) -> None:
    emu.max_instances = 0
    with pytest.raises(TransientError, match="capacity"):
        _compute(emu).launch(_spec(), _env(_spec()))
    assert emu.live_instances() == []


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


def test_a_rejected_api_key_is_a_config_error(emu: VastEmulator) -> None:
    bad = VastCompute(api_key="wrong-key-0123456789", server_url=emu.url, config=VastConfig(**FAST))
    with pytest.raises(ConfigError) as err:
        bad.launch(_spec(), _env(_spec()))
    assert isinstance(err.value, PermanentError)
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

"""The Vast.ai emulator, driven through the real ``vastai`` SDK.

The first half exercises the platform behaviour with limits relaxed (``strict=False``); the
second half checks that strict mode (the default) enforces what Vast's API documentation states.
Where the documented numbers are not the point, timings are scaled down (``Limits().scaled``);
``test_strict_defaults_are_the_documented_figures`` pins the documented numbers themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from vastai import VastAI

from tests.support.counting_proxy import CountingProxy
from tests.support.vast_emulator import DEFAULT_OFFERS, OCI_START_ERROR, Limits, VastEmulator

# A job that records what it saw, logs a line, then runs for JOB_SECONDS and exits JOB_CODE.
STUB_JOB = textwrap.dedent(
    """
    import os, sys, time
    out = os.environ.get("OUT_PATH")
    if out:
        with open(out, "w") as f:
            f.write(os.environ.get("SECRET_TOKEN", "") + "|" + os.environ["CONTAINER_ID"])
    print("hello from job", os.environ["CONTAINER_ID"], flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("JOB_SECONDS", "0")))
    print("job done", flush=True)
    sys.exit(int(os.environ.get("JOB_CODE", "0")))
    """
)
STUB = [sys.executable, "-c", STUB_JOB]
MONTH_H = 30 * 24.0

# Every field show_instance.yaml (vast-ai/docs, api-reference/openapi/yaml) documents for an
# instance row; SDK-side additions (``duration`` is overwritten by the SDK) are within it.
DOCUMENTED_ROW_FIELDS = set("""
id actual_status intended_status cur_state next_state label template_id template_hash_id
template_name image_uuid image_args image_runtype extra_env onstart jupyter_token status_msg
local_ipaddrs ssh_host ssh_idx ssh_port machine_dir_ssh_port machine_id bundle_id start_date
end_date uptime_mins duration cpu_arch cpu_cores cpu_cores_effective cpu_name cpu_ram cpu_util
mem_limit mem_usage vmem_usage gpu_name gpu_arch gpu_totalram gpu_ram gpu_util gpu_temp gpu_frac
gpu_lanes gpu_mem_bw bw_nvlink disk_name disk_space disk_bw disk_util disk_usage
direct_port_count direct_port_start direct_port_end ports static_ip public_ipaddr geolocation
verification rentable host_id hosting_type min_bid is_bid dph_base dph_total dlperf
dlperf_per_dphtotal flops_per_dphtotal total_flops score reliability2 os_version mobo_name
pci_gen pcie_bw num_gpus logo webpage search instance storage_cost storage_total_cost
vram_costperhour credit_balance credit_discount credit_discount_max client_run_time
host_run_time external time_remaining time_remaining_isbid
""".split())


@pytest.fixture
def emu() -> Iterator[VastEmulator]:
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=1.0, strict=False) as e:
        yield e


@pytest.fixture
def vast(emu: VastEmulator) -> VastAI:
    return VastAI(api_key=emu.api_key, server_url=emu.url)


def _sdk(emu: VastEmulator, retry: int = 1) -> VastAI:
    return VastAI(api_key=emu.api_key, server_url=emu.url, retry=retry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_status(vast: VastAI, iid: int, status: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    seen: list[str | None] = []
    while time.monotonic() < deadline:
        row = vast.show_instance(id=iid)
        if not seen or seen[-1] != row["actual_status"]:
            seen.append(row["actual_status"])
        if row["actual_status"] == status:
            row["_seen"] = seen
            return row
        time.sleep(0.02)
    raise AssertionError(f"instance {iid} never reached {status!r}; saw {seen}")


def _create(vast: VastAI, offer_id: int = 31000002, **kw) -> int:
    kw.setdefault("image", "vastdrop/gpu-job:test")
    kw.setdefault("disk", 20)
    res = vast.create_instance(offer_id, **kw)
    assert res["success"] is True
    return res["new_contract"]


def _refused(call: Callable[[], object]) -> requests.Response:
    with pytest.raises(requests.HTTPError) as err:
        call()
    assert err.value.response is not None
    return err.value.response


def _storage_h(offer_id: int, gb: float) -> float:
    (offer,) = [o for o in DEFAULT_OFFERS if o["id"] == offer_id]
    return offer["storage_cost"] * gb / MONTH_H


# ---------------------------------------------------------------------------
# platform behaviour (limits relaxed)
# ---------------------------------------------------------------------------

def test_search_applies_filters_and_orders_cheapest_first(vast: VastAI) -> None:
    got = vast.search_offers(
        "gpu_name=RTX_4090 gpu_ram>=20 reliability>0.95 dph_total<1 disk_space>=100 cuda_vers>=12.0",
        order="dph_total",
    )
    # 31000003 (unverified) is dropped by the SDK's default verified=true filter.
    assert [o["id"] for o in got] == [31000002, 31000006]
    assert all(o["gpu_name"] == "RTX 4090" for o in got)

    prices = [o["dph_total"] for o in vast.search_offers("num_gpus=1", order="dph_total")]
    assert prices == sorted(prices)
    ids = {o["id"] for o in vast.search_offers("num_gpus=1", order="dph_total")}
    assert 31000007 not in ids  # rented, hidden by rentable=true
    assert 31000003 not in ids  # unverified

    assert [o["id"] for o in vast.search_offers("verified=false", order="dph_total")] == [31000003]
    cheap = vast.search_offers("gpu_ram>=12", order="dph_total-", limit=2)
    assert [o["id"] for o in cheap] == [31000004, 31000006]
    everything = vast.search_offers(no_default=True, order="dph_total")
    assert everything[0]["id"] == 31000007 and len(everything) == 7


def test_search_is_priced_for_the_storage_it_asks_for(vast: VastAI) -> None:
    for storage in (5.0, 30.0):
        offers = vast.search_offers(no_default=True, storage=storage)
        for o in offers:
            disk_h = o["storage_cost"] * storage / MONTH_H
            assert o["dph_total"] == pytest.approx(o["dph_base"] + disk_h)
            assert o["storage_total_cost"] == pytest.approx(disk_h)
            assert o["search"]["totalHour"] == pytest.approx(o["dph_total"])
    # Realistic prices: storage always costs something, bandwidth on most hosts, and the
    # cheapest rentable offer charges nothing for bandwidth.
    assert all(0.1 <= o["storage_cost"] <= 0.3 for o in DEFAULT_OFFERS)
    assert any(o["inet_up_cost"] > 0 and o["inet_down_cost"] > 0 for o in DEFAULT_OFFERS)
    cheapest = vast.search_offers("num_gpus=1", order="dph_total")[0]
    assert cheapest["id"] == 31000005 and cheapest["inet_up_cost"] == cheapest["inet_down_cost"] == 0
    # An offer given only dph_total is read as priced for the SDK's default 5 GB search.
    with VastEmulator(strict=False, offers=[{"id": 1, "dph_total": 0.5}]) as e:
        (o,) = _sdk(e).search_offers(no_default=True)
        assert o["dph_total"] == pytest.approx(0.5)


def test_create_runs_job_with_env_through_lifecycle_and_logs(
    emu: VastEmulator, vast: VastAI, tmp_path: Path
) -> None:
    emu.loading_s = 0.3
    out = tmp_path / "seen.txt"
    iid = _create(
        vast, env={"OUT_PATH": str(out), "SECRET_TOKEN": "s3cr3t", "JOB_SECONDS": "0.3"},
        label="job-abc",
    )
    first = vast.show_instance(id=iid)
    assert first["actual_status"] == "loading"
    assert first["label"] == "job-abc"
    assert first["dph_total"] == pytest.approx(0.35 + _storage_h(31000002, 20))
    assert first["gpu_name"] == "RTX 4090" and first["bundle_id"] == 31000002
    assert first["image_uuid"] == "vastdrop/gpu-job:test"
    assert first["extra_env"]["SECRET_TOKEN"] == "s3cr3t"
    assert emu.pid(iid) is None  # no process while loading

    row = _wait_status(vast, iid, "running")
    assert row["intended_status"] == "running" and row["cur_state"] == "running"
    row = _wait_status(vast, iid, "exited")
    assert "exited with code 0" in row["status_msg"] and row["cur_state"] == "stopped"
    assert emu.instance(iid)["exit_code"] == 0  # the emulator-side view keeps it; the row does not
    assert out.read_text() == f"s3cr3t|{iid}"

    text = vast.logs(instance_id=iid)
    assert f"hello from job {iid}" in text and "to stderr" in text and "job done" in text
    assert vast.logs(instance_id=iid, tail="1").strip() == "job done"
    assert vast.logs(instance_id=iid, filter="stderr").strip() == "to stderr"

    listed = vast.show_instances()
    assert [r["id"] for r in listed] == [iid] and listed[0]["actual_status"] == "exited"
    snap = emu.instance(iid)
    assert snap["started_at"] >= snap["created_at"] and snap["exited_at"] >= snap["started_at"]
    req = emu.create_requests[-1]
    assert req["label"] == "job-abc" and req["instance_id"] == iid and req["status"] == 200
    assert req["cancel_unavail"] is False  # what the SDK sends unless told otherwise
    assert "s3cr3t" not in repr(emu.create_requests)  # only env keys are recorded


def test_env_string_form_and_label_instance(emu: VastEmulator, vast: VastAI, tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    iid = _create(vast, env=f"-e OUT_PATH={out} -e SECRET_TOKEN=abc -p 8080:8080")
    _wait_status(vast, iid, "exited")
    assert out.read_text() == f"abc|{iid}"
    snap = emu.instance(iid)
    assert "-p 8080:8080" not in snap["env"] and "-p 8080:8080" in snap["docker_opts"]

    assert vast.label_instance(id=iid, label="renamed")["success"] is True
    assert vast.show_instance(id=iid)["label"] == "renamed"


def test_destroy_kills_process_and_stops_billing(emu: VastEmulator, vast: VastAI) -> None:
    iid = _create(vast, env={"JOB_SECONDS": "60"})
    _wait_status(vast, iid, "running")
    pid = emu.pid(iid)
    assert pid is not None and _alive(pid)
    time.sleep(0.1)
    assert emu.billed_seconds(iid) > 0.1

    res = vast.destroy_instance(id=iid)
    assert res["success"] is True
    assert not _alive(pid)
    billed, bill = emu.billed_seconds(iid), emu.billing(iid)
    time.sleep(0.15)
    assert emu.billed_seconds(iid) == billed and emu.billing(iid) == bill
    assert bill["gpu_s"] > 0.1 and bill["storage_s"] == pytest.approx(billed, abs=0.01)
    assert emu.cost(iid) == pytest.approx(
        bill["gpu_s"] * 0.35 / 3600 + bill["storage_s"] * _storage_h(31000002, 20) / 3600)
    assert emu.total_cost() == pytest.approx(emu.cost(iid))
    assert vast.show_instance(id=iid) is None  # unloaded_s is 0 when relaxed
    assert vast.show_instances() == []
    assert emu.live_instances() == []
    (snap,) = emu.all_instances()
    assert snap["destroyed"] and snap["destroyed_at"] >= snap["created_at"]
    assert snap["cur_state"] == "unloaded" and snap["proxy_url"] is None
    assert emu.destroy_requests[-1]["instance_id"] == iid


def test_destroy_of_unknown_instance_is_a_404(emu: VastEmulator, vast: VastAI) -> None:
    resp = _refused(lambda: vast.destroy_instance(id=4242))
    assert resp.status_code == 404 and resp.json()["error"] == "no_such_instance"
    assert vast.show_instance(id=4242) is None

    iid = _create(vast)
    vast.destroy_instance(id=iid)
    resp = _refused(lambda: vast.destroy_instance(id=iid))  # second destroy: same 404
    assert resp.status_code == 404
    assert [r["status"] for r in emu.destroy_requests] == [404, 200, 404]

    # The other answer seen from the live API for an unknown instance: 200 + success false.
    emu.destroy_unknown_status = 200
    assert vast.destroy_instance(id=iid) == {
        "success": False, "error": "no_such_instance", "msg": f"Instance {iid} not found."
    }


def test_injected_429s_are_retried_by_the_sdk_then_surface(emu: VastEmulator, vast: VastAI) -> None:
    emu.rate_limit_next(2, retry_after=0.01)
    assert vast.show_instances() == []  # vastai retries 429 (3 attempts by default)
    assert [r["status"] for r in emu.request_log] == [429, 429, 200]

    emu.rate_limit_next(3, retry_after=0.01)
    resp = _refused(lambda: vast.search_offers("num_gpus=1"))
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "0.01"
    assert [(r["route"], r["reason"]) for r in emu.rate_limited] == (
        [("list_v1", "injected")] * 2 + [("search", "injected")] * 3)

    emu.server_error_next(1, status=500)
    assert _refused(vast.show_instances).status_code == 500  # 500 is not retried
    emu.server_error_next(1, status=503)
    assert vast.show_instances() == []  # 503 is


def test_wrong_key_is_401(emu: VastEmulator) -> None:
    bad = VastAI(api_key="not-the-key", server_url=emu.url)
    assert _refused(bad.show_instances).status_code == 401
    assert _refused(lambda: bad.create_instance(31000002, image="x")).status_code == 401
    assert emu.all_instances() == []


def test_instance_key_can_only_manage_its_own_instance(emu: VastEmulator, vast: VastAI) -> None:
    mine, other = _create(vast, env={"JOB_SECONDS": "60"}), _create(vast, env={"JOB_SECONDS": "60"})
    scoped = VastAI(api_key=emu.instance_api_key(mine), server_url=emu.url)
    for call in (scoped.show_instances, lambda: scoped.destroy_instance(id=other),
                 lambda: scoped.stop_instance(id=other)):
        assert _refused(call).status_code == 403
    assert scoped.show_instance(id=mine)["id"] == mine
    assert scoped.destroy_instance(id=mine)["success"] is True
    assert [i["id"] for i in emu.live_instances()] == [other]


def test_job_can_destroy_itself_with_container_api_key(emu: VastEmulator, vast: VastAI) -> None:
    emu.command = [sys.executable, "-c", (
        "import os; from vastai import VastAI; "
        "VastAI(api_key=os.environ['CONTAINER_API_KEY'], server_url=os.environ['VAST_URL'])"
        ".destroy_instance(id=int(os.environ['CONTAINER_ID'])); import time; time.sleep(60)"
    )]
    iid = _create(vast)
    deadline = time.monotonic() + 10
    while not emu.destroy_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emu.live_instances() == []
    (req,) = emu.destroy_requests
    assert (req["instance_id"], req["scoped"], req["status"]) == (iid, True, 200)
    assert emu.billing(iid)["bytes_out"] > 0  # the call went through the instance's meter


def test_create_fails_with_contract_leaves_a_billing_instance(emu: VastEmulator, vast: VastAI) -> None:
    emu.create_fails_with_contract = True
    resp = _refused(lambda: _create(vast, label="vastdrop-job-42", env={"JOB_SECONDS": "60"}))
    assert resp.status_code == 500
    assert resp.json()["success"] is False and "new_contract" not in resp.json()
    emu.create_fails_with_contract = False

    (row,) = [r for r in vast.show_instances() if r["label"] == "vastdrop-job-42"]
    first = emu.billed_seconds(row["id"])
    time.sleep(0.1)
    assert emu.billed_seconds(row["id"]) > first
    assert emu.create_requests[-1]["instance_id"] == row["id"]
    vast.destroy_instance(id=row["id"])
    assert emu.live_instances() == []


def test_die_mid_job_exits_nonzero(emu: VastEmulator, vast: VastAI) -> None:
    emu.die_mid_job(next=True, delay_s=0.2)
    iid = _create(vast, env={"JOB_SECONDS": "60"})
    row = _wait_status(vast, iid, "exited")
    assert "code 137" in row["status_msg"] and emu.instance(iid)["exit_code"] == 137
    assert emu.instance(iid)["died_by_fault"]
    assert "hello from job" in vast.logs(instance_id=iid)
    assert emu.live_instances()  # exited still bills until destroyed
    assert emu.billed_seconds(iid) > 0.2

    other = _create(vast, env={"JOB_SECONDS": "60"})
    _wait_status(vast, other, "running")
    emu.die_mid_job(other, delay_s=0.0)
    _wait_status(vast, other, "exited")
    assert emu.instance(other)["exit_code"] == 137


def test_stuck_loading_never_starts_the_process(emu: VastEmulator, vast: VastAI, tmp_path: Path) -> None:
    emu.stuck_loading = True
    out = tmp_path / "seen.txt"
    iid = _create(vast, env={"OUT_PATH": str(out)})
    time.sleep(0.3)
    assert vast.show_instance(id=iid)["actual_status"] == "loading"
    assert emu.pid(iid) is None and not out.exists()
    assert vast.logs(instance_id=iid) == ""
    assert emu.billed_seconds(iid) >= 0.3
    assert emu.billing(iid)["gpu_s"] == 0  # GPU time is not charged while loading
    vast.destroy_instance(id=iid)


def test_max_instances_and_bad_creates_surface_as_http_errors(emu: VastEmulator, vast: VastAI) -> None:
    emu.max_instances = 1
    _create(vast)
    resp = _refused(lambda: _create(vast))
    assert resp.status_code == 400 and resp.json()["error"] == "max_instances_exceeded"
    emu.max_instances = None

    for kwargs, status in (({"image": "x", "disk": 10}, 404), ({"image": "x", "disk": 999}, 400)):
        offer = 123 if status == 404 else 31000002
        call = lambda o=offer, kw=kwargs: vast.create_instance(o, **kw)  # noqa: E731
        assert _refused(call).status_code == status
    assert _refused(lambda: vast.logs(instance_id=999)).status_code == 404


def test_stop_kills_every_child(vast: VastAI) -> None:
    with VastEmulator(command=STUB, loading_s=0.0, strict=False) as e:
        v = VastAI(api_key=e.api_key, server_url=e.url)
        ids = [_create(v, env={"JOB_SECONDS": "60"}) for _ in range(2)]
        pids = [e.wait_for_status(i, "running")["pid"] for i in ids]
        assert all(_alive(p) for p in pids)
    assert not any(_alive(p) for p in pids)
    assert len(e.live_instances()) == 2  # leaked contracts are reported ...
    frozen = e.total_cost()
    time.sleep(0.05)
    assert e.total_cost() == frozen  # ... with the billing clock frozen at stop()


# ---------------------------------------------------------------------------
# strict mode: what Vast's documentation states
# ---------------------------------------------------------------------------

def test_strict_defaults_are_the_documented_figures() -> None:
    emu = VastEmulator()
    assert emu.strict and emu.limits == Limits() and emu.unloaded_s == 2.0
    lim = emu.limits
    # create_instance.yaml x-input-validation
    assert (lim.env_value_max, lim.env_total_max, lim.label_max, lim.image_max, lim.args_max) == (
        256, 32768, 256, 1024, 4096)
    assert (lim.disk_min_gb, lim.price_min, lim.price_max) == (8.0, 0.001, 128.0)
    assert lim.update_label_max == 1024  # label_instance.yaml
    # x-rate-limit blocks
    assert (lim.create_interval_s, lim.create_penalty_s, lim.launch_interval_s) == (4.5, 12.0, 5.0)
    assert (lim.search_max_calls, lim.search_period_s) == (10, 60.0)
    assert (lim.list_interval_s, lim.show_interval_s, lim.destroy_interval_s) == (1.0, 2.0, 3.0)
    assert (lim.update_interval_s, lim.reboot_interval_s) == (1.0, 1.0)
    assert lim.rate_limit_json is False and lim.search_quota_per_day is None

    relaxed = VastEmulator(strict=False)
    assert relaxed.limits == Limits.relaxed() and relaxed.unloaded_s == 0.0
    assert all(getattr(relaxed.limits, f.name) is None for f in dataclasses.fields(Limits)
               if f.name not in ("search_period_s", "rate_limit_json"))
    assert Limits().without_rate_limits().env_value_max == 256
    assert Limits().scaled(0.1).create_penalty_s == pytest.approx(1.2)


def _env_with_flag_length(n: int) -> dict[str, str]:
    """An env whose docker-flag form (" ".join("-e K=V")) is exactly n characters."""
    env: dict[str, str] = {}
    while True:
        key = f"K{len(env):04d}"
        used = len(" ".join(f"-e {k}={v}" for k, v in env.items()))
        room = n - used - (1 if env else 0) - len(f"-e {key}=")
        env[key] = "v" * min(room, 256)
        if room <= 256:
            return env


def test_value_limits_refuse_creates_with_vasts_error_shape() -> None:
    with VastEmulator(command=STUB, loading_s=0.05, limits=Limits().without_rate_limits()) as emu:
        vast = _sdk(emu)
        secret = "https://bucket.example/key?X-Amz-Signature=" + "s" * 300
        refused: list[tuple[dict[str, Any], str, str]] = [
            ({"env": {"JOB_INPUT_URL": secret}}, "env JOB_INPUT_URL", "256"),
            ({"env": _env_with_flag_length(32769)}, "env", "32768"),
            ({"label": "l" * 257}, "label", "256"),
            ({"image": "i" * 1025}, "image", "1024"),
            ({"onstart_cmd": "o" * 3000, "args": ["a" * 1000, "b" * 96]}, "args + args_str + onstart", "4096"),
            ({"disk": 7.5}, "disk", "8"),
            ({"price": 0.0005}, "price", "0.001"),
            ({"price": 129.0}, "price", "128"),
        ]
        for kwargs, field_name, limit in refused:
            resp = _refused(functools.partial(_create, vast, **kwargs))
            body = resp.json()
            assert resp.status_code == 400, kwargs.keys()
            assert body["success"] is False and body["error"] == "invalid_args"
            assert body["msg"].startswith(field_name) and limit in body["msg"], body["msg"]
            assert "X-Amz-Signature" not in body["msg"]  # names the key, never the value
        assert emu.all_instances() == []
        assert {r["status"] for r in emu.create_requests} == {400}

        # At each limit exactly: accepted (the bid of 0.001 $/h on a machine that takes it).
        emu.set_offers([{**o, "min_bid": 0.001} for o in DEFAULT_OFFERS])
        at_limit: list[dict[str, Any]] = [
            {"env": {"JOB_INPUT_URL": "u" * 256}}, {"env": _env_with_flag_length(32768)},
            {"label": "l" * 256}, {"image": "i" * 1024}, {"disk": 8},
            {"onstart_cmd": "o" * 3000, "args": ["a" * 1000, "b" * 95]},  # 3000 + 1000 + " " + 95
            {"price": 0.001}, {"price": 128.0},
        ]
        for kwargs in at_limit:
            _create(vast, **kwargs)
        assert len(emu.live_instances()) == len(at_limit)
        # label_instance.yaml allows 1024 characters on an existing instance.
        iid = emu.live_instances()[0]["id"]
        assert vast.label_instance(id=iid, label="x" * 1024)["success"] is True
        resp = _refused(lambda: vast.label_instance(id=iid, label="x" * 1025))
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_args"


def test_create_rate_limit_is_plain_text_without_retry_after_and_penalises() -> None:
    limits = Limits().scaled(0.1)  # one create per 0.45 s, 1.2 s penalty
    with VastEmulator(command=STUB, loading_s=0.05, limits=limits) as emu:
        vast = _sdk(emu)
        _create(vast)
        resp = _refused(lambda: _create(vast))
        assert resp.status_code == 429
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert resp.text == "API requests too frequent: endpoint threshold=0.45"
        assert "Retry-After" not in resp.headers
        with pytest.raises(ValueError):
            resp.json()
        violated = time.monotonic()
        time.sleep(0.5)  # past the interval, inside the penalty
        assert _refused(lambda: _create(vast)).status_code == 429
        time.sleep(max(0.0, violated + 1.25 - time.monotonic()))
        _create(vast)
        assert [r["status"] for r in emu.create_requests] == [200, 429, 429, 200]
        assert len(emu.live_instances()) == 2  # a refused create makes nothing
        assert [(r["route"], r["reason"], r["identity"]) for r in emu.rate_limited] == [
            ("create", "interval", "account"), ("create", "penalty", "account")]


def test_each_endpoint_keeps_its_documented_interval_per_identity() -> None:
    limits = dataclasses.replace(Limits().scaled(0.1), search_period_s=0.5)
    with VastEmulator(command=STUB, loading_s=0.05, limits=limits) as emu:
        vast = _sdk(emu)
        iid = _create(vast, env={"JOB_SECONDS": "60"})
        headers = {"Authorization": f"Bearer {emu.api_key}"}

        def list_v0() -> object:
            r = requests.get(f"{emu.url}/api/v0/instances/", headers=headers)
            r.raise_for_status()
            return r

        calls = {  # route: (call, interval)
            "list_v1": (vast.show_instances, 0.1),
            "list_v0": (list_v0, 0.1),
            "show": (lambda: vast.show_instance(id=iid), 0.2),
            "update": (lambda: vast.label_instance(id=iid, label="x"), 0.1),
        }
        for route, (call, interval) in calls.items():
            time.sleep(interval)
            call()
            resp = _refused(call)
            assert resp.status_code == 429, route
            assert resp.text == f"API requests too frequent: endpoint threshold={interval:g}"
            time.sleep(interval)
            call()
        # v0 and v1 lists share one limit: one right after the other is refused.
        time.sleep(0.1)
        vast.show_instances()
        assert _refused(list_v0).status_code == 429
        # An instance's CONTAINER_API_KEY is its own identity.
        time.sleep(0.2)
        vast.show_instance(id=iid)
        scoped = VastAI(api_key=emu.instance_api_key(iid), server_url=emu.url, retry=1)
        assert scoped.show_instance(id=iid)["id"] == iid
        # Logs have no documented limit.
        assert vast.logs(instance_id=iid) == vast.logs(instance_id=iid)

        # Offer search: 10 per window (0.5 s here, 60 s documented), sliding.
        time.sleep(0.5)
        for _ in range(10):
            vast.search_offers("num_gpus=1")
        resp = _refused(lambda: vast.search_offers("num_gpus=1"))
        assert resp.status_code == 429 and resp.text == "API requests too frequent"
        time.sleep(0.55)
        vast.search_offers("num_gpus=1")

        # Destroy: one per 0.3 s.
        time.sleep(0.45)
        other = _create(vast, env={"JOB_SECONDS": "60"})
        vast.destroy_instance(id=iid)
        assert _refused(lambda: vast.destroy_instance(id=other)).status_code == 429
        time.sleep(0.3)
        vast.destroy_instance(id=other)

        reasons = {(r["route"], r["reason"]) for r in emu.rate_limited}
        assert reasons == {("list_v1", "interval"), ("list_v0", "interval"), ("show", "interval"),
                           ("update", "interval"), ("search", "window"), ("destroy", "interval")}


def test_rate_limit_json_form_is_an_option() -> None:
    with VastEmulator(command=STUB, limits=Limits(rate_limit_json=True)) as emu:
        vast = _sdk(emu)
        vast.show_instances()
        resp = _refused(vast.show_instances)
        assert resp.status_code == 429 and "Retry-After" not in resp.headers
        assert resp.json() == {"success": False, "error": "rate_limited",
                               "msg": "API requests too frequent: endpoint threshold=1"}


def test_daily_search_quota_answers_with_its_reset_time() -> None:
    with VastEmulator(command=STUB, limits=Limits(search_quota_per_day=2)) as emu:
        vast = _sdk(emu, retry=3)  # the SDK never retries a quota 429
        vast.search_offers("num_gpus=1")
        vast.search_offers("num_gpus=1")
        resp = _refused(lambda: vast.search_offers("num_gpus=1"))
        midnight = (int(time.time() // 86400) + 1) * 86400
        assert resp.status_code == 429 and resp.json()["error"] == "search_quota_exceeded"
        assert int(resp.headers["X-RateLimit-Reset"]) == midnight
        assert [r["status"] for r in emu.request_log] == [200, 200, 429]

        reset = time.time() + 0.3
        emu.set_search_quota_reset(reset)
        assert _refused(lambda: vast.search_offers("num_gpus=1")).headers["X-RateLimit-Reset"] == str(int(reset))
        time.sleep(max(0.0, reset - time.time()) + 0.05)
        assert vast.search_offers("num_gpus=1")
        vast.search_offers("num_gpus=1")
        resp = _refused(lambda: vast.search_offers("num_gpus=1"))
        assert int(resp.headers["X-RateLimit-Reset"]) == midnight
        assert [r["reason"] for r in emu.rate_limited] == ["quota"] * 3


def test_cancel_unavail_true_is_refused_false_makes_a_stopped_billing_contract(emu: VastEmulator, vast: VastAI) -> None:
    emu.unavailable_offers.add(31000002)
    resp = _refused(lambda: _create(vast, cancel_unavail=True))
    assert resp.status_code == 410
    assert resp.json() == {"success": False, "error": "no_such_ask", "ask_id": 31000002,
                           "msg": "no_such_ask Instance type 31000002 is no longer available."}
    assert emu.all_instances() == []

    iid = _create(vast, env={"JOB_SECONDS": "60"})  # the SDK's default: cancel_unavail=false
    time.sleep(0.3)
    row = vast.show_instance(id=iid)
    assert (row["actual_status"], row["cur_state"], row["intended_status"]) == (
        "stopped", "stopped", "running")
    assert "waiting" in row["status_msg"].lower()
    vast.start_instance(id=iid)  # the GPUs are still taken: it keeps waiting
    time.sleep(0.2)
    assert emu.pid(iid) is None and vast.show_instance(id=iid)["actual_status"] == "stopped"
    bill = emu.billing(iid)
    assert bill["gpu_s"] == 0 and bill["storage_s"] >= 0.5 and bill["total"] > 0
    vast.destroy_instance(id=iid)
    assert emu.live_instances() == []


def test_failed_create_can_still_return_a_live_contract(emu: VastEmulator, vast: VastAI) -> None:
    emu.create_fails_with_contract = True
    emu.faults.create_fail_includes_id = True
    resp = _refused(lambda: _create(vast, env={"JOB_SECONDS": "60"}))
    body = resp.json()
    assert resp.status_code == 500 and body["success"] is False
    iid = body["new_contract"]
    assert [r["id"] for r in vast.show_instances()] == [iid]
    time.sleep(0.1)
    assert emu.billing(iid)["total"] > 0
    vast.destroy_instance(id=iid)
    assert emu.live_instances() == []


def test_account_refusals_until_they_clear(emu: VastEmulator, vast: VastAI) -> None:
    emu.out_of_credit = True
    resp = _refused(lambda: _create(vast))
    assert resp.status_code == 400
    body = resp.json()
    assert body["success"] is False and body["error"] == "insufficient_balance"
    assert body["msg"].startswith("Insufficient credit")
    emu.faults.out_of_credit_status = 402
    assert _refused(lambda: _create(vast)).status_code == 402
    assert emu.all_instances() == []
    emu.out_of_credit = False  # the account clears
    _create(vast)
    assert len(emu.live_instances()) == 1


def test_gpu_bills_only_while_running_storage_while_the_instance_exists() -> None:
    with VastEmulator(command=STUB, loading_s=0.3, strict=False) as emu:
        vast = _sdk(emu)
        iid = _create(vast, disk=30, env={"JOB_SECONDS": "0.5"})
        _wait_status(vast, iid, "running")
        assert emu.billing(iid)["gpu_s"] < 0.1  # the 0.3 s of loading were not charged
        assert vast.show_instance(id=iid)["instance"]["gpuCostPerHour"] == 0.35
        row = _wait_status(vast, iid, "exited")
        assert row["instance"]["gpuCostPerHour"] == 0
        assert row["instance"]["diskHour"] == pytest.approx(_storage_h(31000002, 30))
        gpu_after_exit = emu.billing(iid)["gpu_s"]
        assert 0.45 <= gpu_after_exit <= 0.8
        time.sleep(0.2)
        bill = emu.billing(iid)
        assert bill["gpu_s"] == gpu_after_exit  # exited: storage only
        assert bill["storage_s"] == pytest.approx(bill["existed_s"], abs=0.01)
        assert bill["gpu_cost"] == pytest.approx(bill["gpu_s"] * 0.35 / 3600)
        assert bill["storage_cost"] == pytest.approx(bill["storage_s"] * 0.2 * 30 / (30 * 24 * 3600))
        assert bill["bandwidth_cost"] == 0 and bill["total"] == pytest.approx(
            bill["gpu_cost"] + bill["storage_cost"])
        vast.destroy_instance(id=iid)


def test_offline_bills_nothing_and_unknown_still_bills_storage() -> None:
    with VastEmulator(command=STUB, loading_s=0.0, strict=False) as emu:
        vast = _sdk(emu)
        iid = _create(vast, env={"JOB_SECONDS": "60"})
        _wait_status(vast, iid, "running")
        emu.set_state(iid, "offline")
        row = vast.show_instance(id=iid)
        assert row["actual_status"] == "offline" and "disconnected" in row["status_msg"]
        before = emu.billing(iid)
        time.sleep(0.2)
        during = emu.billing(iid)
        assert (during["gpu_s"], during["storage_s"]) == (before["gpu_s"], before["storage_s"])
        assert _alive(emu.instance(iid)["pid"])  # the host still runs the container; Vast just cannot see it

        emu.set_state(iid, "unknown", duration_s=0.2)
        row = vast.show_instance(id=iid)
        assert row["actual_status"] == "unknown" and "heartbeat" in row["status_msg"]
        time.sleep(0.1)
        assert emu.billing(iid)["storage_s"] > during["storage_s"]
        assert emu.billing(iid)["gpu_s"] == during["gpu_s"]
        _wait_status(vast, iid, "running")  # the heartbeat comes back by itself
        time.sleep(0.05)
        assert emu.billing(iid)["gpu_s"] > during["gpu_s"]


def test_bandwidth_through_the_instance_proxy_is_billed_per_byte(tmp_path: Path) -> None:
    payload = b"d" * 200_000

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_PUT(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    files = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}/input.mp4"
    job = textwrap.dedent(f"""
        import os, urllib.request
        print("NO_PROXY" in os.environ, "no_proxy" in os.environ, os.environ["HTTP_PROXY"], flush=True)
        assert len(urllib.request.urlopen({url!r}).read()) == {len(payload)}
        urllib.request.urlopen(urllib.request.Request({url!r}, data=b"u" * 50000, method="PUT")).read()
    """)
    try:
        with VastEmulator(command=[sys.executable, "-c", job], loading_s=0.0, strict=False,
                          base_env={"PATH": os.environ["PATH"], "NO_PROXY": "*"}) as emu:
            vast = _sdk(emu)
            iid = _create(vast, env={"no_proxy": "127.0.0.1"})
            _wait_status(vast, iid, "exited")
            assert emu.instance(iid)["exit_code"] == 0, emu.read_log(iid)
            proxy_url = emu.instance(iid)["proxy_url"]
            assert emu.read_log(iid).split() == ["False", "False", proxy_url]
            bill = emu.billing(iid)
            assert len(payload) <= bill["bytes_in"] <= len(payload) + 1000
            assert 50_000 <= bill["bytes_out"] <= 51_000
            # 31000002: $0.01/GB received, $0.02/GB sent
            assert bill["bandwidth_cost"] == pytest.approx(
                (bill["bytes_in"] * 0.01 + bill["bytes_out"] * 0.02) / 1e9)
            assert bill["total"] == pytest.approx(
                bill["gpu_cost"] + bill["storage_cost"] + bill["bandwidth_cost"])
            vast.destroy_instance(id=iid)
            assert emu.billing(iid)["bytes_in"] == bill["bytes_in"]  # kept after the proxy closed
    finally:
        files.shutdown()
        files.server_close()


def test_counting_proxy_counts_connect_tunnels() -> None:
    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"e" * 5000)

        def log_message(self, *args: object) -> None:
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    try:
        with CountingProxy() as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            conn.set_tunnel("127.0.0.1", target.server_address[1])
            conn.request("GET", "/")
            assert len(conn.getresponse().read()) == 5000
            conn.close()
            time.sleep(0.05)
            counters = proxy.counters()
            assert counters["tunnels"] == 1 and 5000 < counters["bytes_in"] < 6000
            assert counters["bytes_out"] > 0
    finally:
        target.shutdown()
        target.server_close()


def test_frozen_and_rebooting() -> None:
    with VastEmulator(command=STUB, loading_s=0.0, kill_grace_s=0.5,
                      limits=Limits().without_rate_limits()) as emu:
        vast = _sdk(emu)
        iid = _create(vast, env={"JOB_SECONDS": "60"})
        _wait_status(vast, iid, "running")
        pid = emu.instance(iid)["pid"]
        emu.set_state(iid, "frozen")
        assert vast.show_instance(id=iid)["actual_status"] == "frozen"
        time.sleep(0.05)
        assert Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "T"  # SIGSTOPped
        gpu = emu.billing(iid)["gpu_s"]
        time.sleep(0.1)
        assert emu.billing(iid)["gpu_s"] >= gpu + 0.09  # frozen: GPU charges apply
        emu.set_state(iid, "running")
        time.sleep(0.05)
        assert Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "SR"

        assert vast.reboot_instance(id=iid)["success"] is True
        row = vast.show_instance(id=iid)
        assert row["actual_status"] == "rebooting"
        row = _wait_status(vast, iid, "running")
        assert row["_seen"][0] == "rebooting"
        snap = emu.instance(iid)
        assert snap["run_count"] == 2 and snap["pid"] != pid and not _alive(pid)
        # A loaded machine can take seconds to start an interpreter: wait generously, and say what
        # the new process was doing if it never speaks.
        deadline = time.monotonic() + 30
        while emu.read_log(iid).count("hello from job") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = {k: v for k, v in emu.instance(iid).items()
                if k in ("actual_status", "status_msg", "exit_code", "pid", "run_count", "started_at", "exited_at")}
        with contextlib.suppress(OSError):
            seen["proc_stat"] = Path(f"/proc/{snap['pid']}/stat").read_text()[:200]
            seen["wchan"] = Path(f"/proc/{snap['pid']}/wchan").read_text()[:80]
        assert emu.read_log(iid).count("hello from job") == 2, seen  # the job started afresh
        vast.destroy_instance(id=iid)


def test_container_that_cannot_start_stays_created_and_bills_storage(emu: VastEmulator, vast: VastAI) -> None:
    emu.fail_container_start()
    iid = _create(vast, env={"JOB_SECONDS": "60"})
    row = _wait_status(vast, iid, "created")
    assert row["status_msg"] == OCI_START_ERROR and "OCI runtime create failed" in row["status_msg"]
    time.sleep(0.2)
    assert emu.pid(iid) is None and vast.show_instance(id=iid)["actual_status"] == "created"
    bill = emu.billing(iid)
    assert bill["gpu_s"] == 0 and bill["storage_s"] > 0.2
    # Only the next instance was affected.
    other = _create(vast, env={"JOB_SECONDS": "60"})
    _wait_status(vast, other, "running")
    # state_next: the next instance loses its heartbeat right after its job starts.
    emu.state_next("unknown", duration_s=0.3)
    third = _create(vast, env={"JOB_SECONDS": "60"})
    _wait_status(vast, third, "unknown")
    _wait_status(vast, third, "running")


def test_destroyed_instance_is_unloaded_then_gone() -> None:
    with VastEmulator(command=STUB, loading_s=0.0, strict=False, unloaded_s=0.3) as emu:
        vast = _sdk(emu)
        iid = _create(vast, env={"JOB_SECONDS": "60"})
        _wait_status(vast, iid, "running")
        vast.destroy_instance(id=iid)
        row = vast.show_instance(id=iid)
        assert (row["cur_state"], row["next_state"], row["actual_status"]) == (
            "unloaded", "unloaded", "exited")
        assert vast.show_instances() == []  # listings drop it at once
        time.sleep(0.35)
        assert vast.show_instance(id=iid) is None


def test_rows_carry_only_documented_fields() -> None:
    with VastEmulator(command=STUB, loading_s=0.0, strict=False) as emu:
        vast = _sdk(emu)
        iid = _create(vast)
        _wait_status(vast, iid, "exited")
        for row in (vast.show_instance(id=iid), vast.show_instances()[0]):
            assert set(row) - {"_seen"} <= DOCUMENTED_ROW_FIELDS, set(row) - DOCUMENTED_ROW_FIELDS
            assert "exit_code" not in row and "ask_contract_id" not in row
        snap = emu.instance(iid)
        assert snap["exit_code"] == 0 and snap["offer_id"] == 31000002


# ---------------------------------------------------------------------------
# interruptible instances (instance-types.mdx, create_instance.yaml `price`, change_bid.yaml)
# ---------------------------------------------------------------------------

def test_an_interruptible_instance_bills_its_bid_and_once_outbid_stops_gpu_billing_not_storage(
        emu: VastEmulator, vast: VastAI) -> None:
    """GIVEN an offer rented with a bid at its min_bid
    WHEN the market outbids it while its job runs
    THEN the row says is_bid, the GPU billed at the bid until then, the job was told to stop, every
    state field reads "stopped" (what dstack reads as an interruption), and only storage bills on."""
    bids = vast.search_offers(query="gpu_name=RTX_4090 verified=true", type="bid", storage=20)
    assert bids and all(o["min_bid"] is not None for o in bids)
    bid = 0.35 * 0.7
    iid = _create(vast, 31000002, env={"JOB_SECONDS": "60"}, price=bid)
    _wait_status(vast, iid, "running")
    pid = emu.pid(iid)
    time.sleep(0.2)
    emu.outbid(iid)
    row = vast.show_instance(id=iid)
    assert row["is_bid"] is True and row["dph_base"] == pytest.approx(bid)
    assert (row["actual_status"], row["intended_status"], row["cur_state"], row["next_state"]) == ("stopped",) * 4
    deadline = time.monotonic() + 3
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid is not None and not _alive(pid)
    gpu_s = emu.billing(iid)["gpu_s"]
    time.sleep(0.2)
    bill = emu.billing(iid)
    assert bill["gpu_s"] == gpu_s > 0.2 and bill["storage_s"] > gpu_s + 0.2
    assert bill["gpu_cost"] == pytest.approx(gpu_s * bid / 3600)
    assert emu.instance(iid)["outbid"] and emu.instance(iid)["is_bid"]


def test_a_bid_below_min_bid_makes_a_stopped_contract_and_answers_invalid_price(emu: VastEmulator, vast: VastAI) -> None:
    (offer,) = [o for o in vast.search_offers(query="gpu_name=RTX_4090", type="bid") if o["id"] == 31000002]
    resp = _refused(lambda: vast.create_instance(31000002, image="img:tag", disk=20, price=offer["min_bid"] / 2))
    body = resp.json()
    assert resp.status_code == 400 and body["error"] == "invalid_price"
    snap = emu.instance(body["new_contract"])
    assert snap["actual_status"] == "stopped" and snap["intended_status"] == "stopped" and snap["run_count"] == 0
    time.sleep(0.1)
    assert emu.billing(body["new_contract"])["storage_s"] > 0.05 and emu.billing(body["new_contract"])["gpu_s"] == 0


def test_random_outbids_hit_the_chosen_share_of_bid_instances_and_never_on_demand(vast: VastAI) -> None:
    from tests.support.vast_emulator import Faults

    faults = Faults(outbid_chance=1.0, outbid_after_s=(0.05, 0.15), seed=7)
    with VastEmulator(command=STUB, loading_s=0.02, kill_grace_s=0.2, strict=False, faults=faults) as emu:
        sdk = _sdk(emu)
        bid = _create(sdk, 31000002, env={"JOB_SECONDS": "30"}, price=0.3)
        on_demand = _create(sdk, 31000001, env={"JOB_SECONDS": "30"})
        assert _wait_status(sdk, bid, "stopped")["intended_status"] == "stopped"
        row = sdk.show_instance(id=on_demand)
        assert row["actual_status"] == "running" and row["is_bid"] is False


def test_change_bid_enforces_its_documented_range(emu: VastEmulator, vast: VastAI) -> None:
    iid = _create(vast, 31000002, env={"JOB_SECONDS": "30"}, price=0.3)
    assert vast.change_bid(iid, price=0.32)["success"] is True
    assert vast.show_instance(id=iid)["dph_base"] == pytest.approx(0.32)
    with VastEmulator(command=STUB, loading_s=0.02) as strict:  # 0.001 .. 32 $/h (change_bid.yaml)
        sdk = _sdk(strict)
        sid = _create(sdk, 31000002, env={"JOB_SECONDS": "30"}, price=0.3)
        assert _refused(lambda: sdk.change_bid(sid, price=40.0)).json()["error"] == "invalid_args"

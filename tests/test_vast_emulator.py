"""The Vast.ai emulator, driven through the real ``vastai`` SDK."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from vastai import VastAI

from tests.support.vast_emulator import VastEmulator

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


@pytest.fixture
def emu() -> Iterator[VastEmulator]:
    with VastEmulator(command=STUB, loading_s=0.05, kill_grace_s=1.0) as e:
        yield e


@pytest.fixture
def vast(emu: VastEmulator) -> VastAI:
    return VastAI(api_key=emu.api_key, server_url=emu.url)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_status(vast: VastAI, iid: int, status: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
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
    assert [o["dph_total"] for o in cheap] == [0.95, 0.70]
    everything = vast.search_offers(no_default=True, order="dph_total")
    assert everything[0]["id"] == 31000007 and len(everything) == 7


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
    assert first["dph_total"] == 0.35 and first["gpu_name"] == "RTX 4090"
    assert first["image_uuid"] == "vastdrop/gpu-job:test"
    assert first["extra_env"]["SECRET_TOKEN"] == "s3cr3t"
    assert emu.pid(iid) is None  # no process while loading

    row = _wait_status(vast, iid, "running")
    assert row["intended_status"] == "running" and row["cur_state"] == "running"
    row = _wait_status(vast, iid, "exited")
    assert row["exit_code"] == 0
    assert row["status_msg"]
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
    billed = emu.billed_seconds(iid)
    time.sleep(0.15)
    assert emu.billed_seconds(iid) == billed
    assert emu.cost(iid) == pytest.approx(billed * 0.35 / 3600)
    assert emu.total_cost() == pytest.approx(emu.cost(iid))
    assert vast.show_instance(id=iid) is None
    assert vast.show_instances() == []
    assert emu.live_instances() == []
    (snap,) = emu.all_instances()
    assert snap["destroyed"] and snap["destroyed_at"] >= snap["created_at"]
    assert emu.destroy_requests[-1]["instance_id"] == iid


def test_destroy_of_unknown_instance_is_a_404(emu: VastEmulator, vast: VastAI) -> None:
    with pytest.raises(requests.HTTPError) as err:
        vast.destroy_instance(id=4242)
    assert err.value.response.status_code == 404
    assert err.value.response.json()["error"] == "no_such_instance"
    assert vast.show_instance(id=4242) is None

    iid = _create(vast)
    vast.destroy_instance(id=iid)
    with pytest.raises(requests.HTTPError) as err:
        vast.destroy_instance(id=iid)  # second destroy: same 404, nothing breaks
    assert err.value.response.status_code == 404
    assert [r["status"] for r in emu.destroy_requests] == [404, 200, 404]

    # The other answer seen from the live API for an unknown instance: 200 + success false.
    emu.destroy_unknown_status = 200
    assert vast.destroy_instance(id=iid) == {
        "success": False, "error": "no_such_instance", "msg": f"Instance {iid} not found."
    }


def test_rate_limit_burst_is_retried_by_the_sdk_then_surfaces(emu: VastEmulator, vast: VastAI) -> None:
    emu.rate_limit_next(2, retry_after=0.01)
    assert vast.show_instances() == []  # vastai retries 429 (3 attempts by default)
    assert [r["status"] for r in emu.request_log] == [429, 429, 200]

    emu.rate_limit_next(3, retry_after=0.01)
    with pytest.raises(requests.HTTPError) as err:
        vast.search_offers("num_gpus=1")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "0.01"

    emu.server_error_next(1, status=500)
    with pytest.raises(requests.HTTPError) as err:
        vast.show_instances()  # 500 is not retried
    assert err.value.response.status_code == 500
    emu.server_error_next(1, status=503)
    assert vast.show_instances() == []  # 503 is


def test_wrong_key_is_401(emu: VastEmulator) -> None:
    bad = VastAI(api_key="not-the-key", server_url=emu.url)
    with pytest.raises(requests.HTTPError) as err:
        bad.show_instances()
    assert err.value.response.status_code == 401
    with pytest.raises(requests.HTTPError) as err:
        bad.create_instance(31000002, image="x")
    assert err.value.response.status_code == 401
    assert emu.all_instances() == []


def test_instance_key_can_only_destroy_its_own_instance(emu: VastEmulator, vast: VastAI) -> None:
    mine, other = _create(vast, env={"JOB_SECONDS": "60"}), _create(vast, env={"JOB_SECONDS": "60"})
    scoped = VastAI(api_key=emu.instance_api_key(mine), server_url=emu.url)
    for call in (scoped.show_instances, lambda: scoped.destroy_instance(id=other)):
        with pytest.raises(requests.HTTPError) as err:
            call()
        assert err.value.response.status_code == 403
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


def test_create_fails_with_contract_leaves_a_billing_instance(emu: VastEmulator, vast: VastAI) -> None:
    emu.create_fails_with_contract = True
    with pytest.raises(requests.HTTPError) as err:
        _create(vast, label="vastdrop-job-42", env={"JOB_SECONDS": "60"})
    assert err.value.response.status_code == 500
    assert err.value.response.json()["success"] is False
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
    assert row["exit_code"] == 137
    assert emu.instance(iid)["died_by_fault"]
    assert "hello from job" in vast.logs(instance_id=iid)
    assert emu.live_instances()  # exited still bills until destroyed
    assert emu.billed_seconds(iid) > 0.2

    other = _create(vast, env={"JOB_SECONDS": "60"})
    _wait_status(vast, other, "running")
    emu.die_mid_job(other, delay_s=0.0)
    assert _wait_status(vast, other, "exited")["exit_code"] == 137


def test_stuck_loading_never_starts_the_process(emu: VastEmulator, vast: VastAI, tmp_path: Path) -> None:
    emu.stuck_loading = True
    out = tmp_path / "seen.txt"
    iid = _create(vast, env={"OUT_PATH": str(out)})
    time.sleep(0.3)
    assert vast.show_instance(id=iid)["actual_status"] == "loading"
    assert emu.pid(iid) is None and not out.exists()
    assert vast.logs(instance_id=iid) == ""
    assert emu.billed_seconds(iid) >= 0.3
    vast.destroy_instance(id=iid)


def test_max_instances_and_bad_creates_surface_as_http_errors(emu: VastEmulator, vast: VastAI) -> None:
    emu.max_instances = 1
    _create(vast)
    with pytest.raises(requests.HTTPError) as err:
        _create(vast)
    assert err.value.response.status_code == 400
    assert err.value.response.json()["error"] == "max_instances_exceeded"
    emu.max_instances = None

    for kwargs, status in (({"image": "x", "disk": 10}, 404), ({"image": "x", "disk": 999}, 400)):
        offer = 123 if status == 404 else 31000002
        with pytest.raises(requests.HTTPError) as err:
            vast.create_instance(offer, **kwargs)
        assert err.value.response.status_code == status
    with pytest.raises(requests.HTTPError) as err:
        vast.logs(instance_id=999)
    assert err.value.response.status_code == 404


def test_stop_kills_every_child(vast: VastAI) -> None:
    with VastEmulator(command=STUB, loading_s=0.0) as e:
        v = VastAI(api_key=e.api_key, server_url=e.url)
        ids = [_create(v, env={"JOB_SECONDS": "60"}) for _ in range(2)]
        pids = [e.wait_for_status(i, "running")["pid"] for i in ids]
        assert all(_alive(p) for p in pids)
    assert not any(_alive(p) for p in pids)
    assert len(e.live_instances()) == 2  # leaked contracts are reported ...
    frozen = e.total_cost()
    time.sleep(0.05)
    assert e.total_cost() == frozen  # ... with the billing clock frozen at stop()

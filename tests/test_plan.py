"""`python -m watcher plan` and the throughput table behind it (vastdrop/throughput.py).

The plan is a dry run: it probes pending inputs, prices them on the offers the compute adapter returns,
and never launches nor writes to the ledger. Run on generated clips in a file:// bucket, through the
CLI as a user runs it, with a fake Vast compute, against the Vast emulator, and over SeaweedFS with
presigned GETs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from handlers.deps import ControlConfig, Deps
from tests.support.clips import make_clip
from tests.support.jobs import REPO
from tests.support.vast_emulator import Limits, VastEmulator
from vastdrop.compose import build_deps
from vastdrop.errors import CapacityError
from vastdrop.jobid import job_id_for
from vastdrop.ledger import open_ledger
from vastdrop.ledger.base import JobRecord
from vastdrop.location import Location
from vastdrop.pricing import GB, Rates
from vastdrop.settings import load_settings
from vastdrop.states import JobState
from vastdrop.throughput import (
    CPU,
    FIGURES,
    GPUS,
    PRACTICAL_RIFE_55,
    UNKNOWN_GPU_AS,
    Task,
    canonical_gpu,
    fps_for,
    table,
)
from watcher import plan as planner

# -- the throughput table ---------------------------------------------------------------------------------


def test_a_published_figure_is_returned_as_is_with_its_source():
    est = fps_for("RTX 3090", Task("interpolate", 1920, 1080))
    assert est.fps == 78.0 and not est.guess and PRACTICAL_RIFE_55 in est.source
    # Vast's spellings of the same GPU find the same row.
    for name in ("RTX_3090", "NVIDIA GeForce RTX 3090", "rtx 3090"):
        assert fps_for(name, Task("interpolate", 1920, 1080)) == est
    assert canonical_gpu("A100 SXM4 80GB") == "A100" and canonical_gpu("H100 PCIE") == "H100 PCIE"
    assert canonical_gpu("cpu") == CPU and canonical_gpu("Voodoo 5") is None


def test_other_sizes_scale_by_pixel_count_and_say_so():
    uhd = fps_for("RTX 3090", Task("interpolate", 3840, 2160))
    assert uhd.fps == pytest.approx(78.0 / 4) and uhd.guess and "pixel count" in uhd.source
    near = fps_for("RTX 3090", Task("interpolate", 1920, 1088))  # within 10%: the same column
    assert near.fps == 78.0 and not near.guess


def test_a_gpu_without_a_figure_is_scaled_by_tflops_and_marked_a_guess():
    est = fps_for("RTX 4090", Task("interpolate", 1920, 1080))
    assert est.fps == pytest.approx(78.0 * 82.6 / 35.6) and est.guess
    assert "TFLOPS" in est.source and PRACTICAL_RIFE_55 in est.source


def test_an_unknown_gpu_is_assumed_slow_and_says_it_is_a_guess():
    task = Task("upscale", 1280, 720, 4)
    est = fps_for("Quadro Mystery 9000", task)
    assert est.guess and "unknown GPU" in est.source and UNKNOWN_GPU_AS in est.source
    assert est.fps == fps_for(UNKNOWN_GPU_AS, task).fps
    assert est.fps < fps_for("RTX 3090", task).fps


def test_upscale_x3_costs_as_x4_and_fallbacks_run_on_the_hosts_cpu():
    x3, x4 = (fps_for("RTX 4090", Task("upscale", 1920, 1080, f)) for f in (3, 4))
    assert x3.fps == x4.fps == 19.4 and x3.guess and not x4.guess and "x3 costs as x4" in x3.source
    lanczos = fps_for("RTX 4090", Task("upscale", 640, 360, 2, learned=False))
    assert lanczos.fps == fps_for(CPU, Task("upscale", 640, 360, 2, learned=False)).fps
    assert "host's CPU" in lanczos.source


def test_every_row_of_the_table_has_a_figure_and_a_source_and_guesses_say_so():
    rows = table()
    gpus = {gpu for gpu, _, _ in rows}
    for wanted in ("RTX 3090", "RTX 4090", "RTX 5090", "A100", "H100 SXM", "L40S", "RTX A4000", "RTX A5000", CPU):
        assert wanted in gpus
    for _gpu, _task, est in rows:
        assert est.fps > 0 and math.isfinite(est.fps)
        if est.guess:
            assert est.source.startswith(("estimate:", "unknown GPU", "runs on"))
        else:
            assert est.source.startswith(("published: https://", "measured here"))
    for figure in FIGURES:  # the table's own rows: cited, measured, or an estimate that says so
        assert figure.source.startswith("estimate:" if figure.guess else ("published: https://", "measured here"))
        assert figure.gpu in GPUS or figure.gpu == CPU
    # Faster GPUs come out faster, stage by stage.
    for task in (Task("interpolate", 1920, 1080), Task("upscale", 1920, 1080, 4)):
        speeds = [fps_for(g, task).fps for g in ("RTX A4000", "RTX 3090", "RTX 4090", "RTX 5090")]
        assert speeds == sorted(speeds)


# -- plan ---------------------------------------------------------------------------------------------------


def watcher(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "JOB_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**base, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.fixture
def bucket_dir(tmp_path: Path) -> Path:
    """./bucket/input/ with a 1 s 24 fps clip, a 2 s 30 fps clip in a folder, and a text file named .mp4."""
    inputs = tmp_path / "bucket" / "input"
    (inputs / "deep dir").mkdir(parents=True)
    make_clip(inputs / "short.mp4", width=64, height=48, fps=24, seconds=1.0)
    make_clip(inputs / "deep dir" / "long ü.mp4", width=96, height=64, fps=30, seconds=2.0)
    (inputs / "notes.mp4").write_text("this is not a video")
    (inputs / ".hidden.mp4").write_bytes(b"x")  # not an input (layout rules)
    return tmp_path


def test_plan_lists_each_pending_input_with_duration_frames_time_and_cost(bucket_dir: Path):
    proc = watcher(bucket_dir, "plan", "--target-fps", "48", "--upscale", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr and "nothing launched" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("input/", "TOTAL"))}
    assert "input/short.mp4" in lines and "input/notes.mp4" in lines and not any(".hidden" in k for k in lines)
    short = lines["input/short.mp4"]
    assert "0:01" in short and "24->48" in short and "CPU (local)" in short and "$0.0000" in short
    long = next(line for line in out.splitlines() if line.startswith("input/deep dir/long ü.mp4"))
    assert "0:02" in long and "60->96" in long
    assert "cannot probe" in lines["input/notes.mp4"]
    assert "144" in lines["TOTAL"].split()  # 48 + 96 frames out
    assert "figures (vastdrop/throughput.py" in out and "measured here" in out
    # Nothing launched, nothing written: no job in the ledger, no instance, no output.
    ledger = open_ledger(str(bucket_dir / ".vastdrop" / "ledger.sqlite"))
    assert ledger.list() == []
    assert not any((bucket_dir / ".vastdrop" / "instances").iterdir())
    assert not (bucket_dir / "bucket" / "output").exists()


def test_plan_json_gives_every_figure_and_the_total(bucket_dir: Path):
    proc = watcher(bucket_dir, "plan", "--json", "--target-fps", "48")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["compute"] == "local" and doc["launched"] == 0 and doc["params"] == {"target_fps": 48.0,
                                                                                    "upscale": 1}
    rows = {r["key"]: r for r in doc["inputs"]}
    assert set(rows) == {"input/short.mp4", "input/deep dir/long ü.mp4", "input/notes.mp4"}
    bad = rows["input/notes.mp4"]
    assert bad["error"] and "media" not in bad and "cost" not in bad
    short = rows["input/short.mp4"]
    assert short["media"]["frames"] == 24 and short["media"]["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert short["frames_out"] == 48 and short["offer"]["gpu"] == "CPU (local)"
    assert [s["kind"] for s in short["stages"]] == ["interpolate", "transcode"]
    assert all(s["fps"] > 0 and s["source"] for s in short["stages"])
    assert short["time_s"]["process"] == pytest.approx(sum(s["seconds"] for s in short["stages"]))
    assert short["cost"]["total"] == 0
    total = doc["total"]
    assert total["pending"] == 3 and total["priced"] == 2 and total["unprobeable"] == 1
    assert total["time_s"] == pytest.approx(sum(r["time_s"]["total"] for r in rows.values() if "time_s" in r))


def test_inputs_with_a_succeeded_job_are_not_pending(bucket_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(bucket_dir)
    settings = load_settings(target_fps=48.0)
    deps = build_deps(settings)
    key = "input/short.mp4"
    info = deps.inputs.head(key)
    job_id = job_id_for(deps.inputs.bucket, key, info.etag, deps.config.params())
    deps.ledger.claim(JobRecord(job_id=job_id, bucket=deps.inputs.bucket, key=key, input_url=deps.inputs.url(key),
                                input_etag=info.etag, input_size=info.size, params=deps.config.params()))
    for a, b in [(JobState.QUEUED, JobState.LAUNCHING), (JobState.LAUNCHING, JobState.RUNNING),
                 (JobState.RUNNING, JobState.VERIFYING), (JobState.VERIFYING, JobState.SUCCEEDED)]:
        deps.ledger.transition(job_id, a, b)
    before = [r.to_dict() for r in deps.ledger.list()]
    keys = [r.key for r in planner.estimate(deps).rows]
    assert key not in keys and "input/deep dir/long ü.mp4" in keys
    # Other parameters make another job: the same file is pending again.
    other = build_deps(load_settings(target_fps=60.0))
    assert key in [r.key for r in planner.estimate(other).rows]
    assert [r.to_dict() for r in deps.ledger.list()] == before


# Two offers as VastCompute.offers() returns them (cheapest first, priced for 30 GB of disk).
OFFER_A = {"id": 101, "gpu_name": "RTX 4090", "dph_base": 0.30, "storage_cost": 0.12, "dph_total": 0.305,
           "inet_down_cost": 0.002, "inet_up_cost": 0.004, "inet_down": 100.0, "inet_up": 50.0}
OFFER_B = {"id": 102, "gpu_name": "A100 SXM4", "dph_base": 0.50, "storage_cost": 0.24, "dph_total": 0.51,
           "inet_down_cost": 0.0, "inet_up_cost": 0.0, "inet_down": 1000.0, "inet_up": 1000.0}


class FakeVast:
    name = "vast"

    def __init__(self, offers=None, error: Exception | None = None) -> None:
        self.config = SimpleNamespace(disk_gb=30.0, max_instances=3, interruptible=False, bid_ratio=0.7)
        self._offers, self._error, self.searches = offers or [], error, 0

    def offers(self):
        self.searches += 1
        if self._error:
            raise self._error
        return [dict(o) for o in self._offers]

    def launch(self, *a, **k):  # pragma: no cover - the point is that it is never called
        raise AssertionError("plan launched an instance")


def _deps(root: Path, compute, **config) -> Deps:
    inputs = Location.parse(f"file://{root}/bucket/input/")
    outputs = Location.parse(f"file://{root}/bucket/output/")
    ledger = open_ledger(str(root / "ledger.sqlite"))
    return Deps(inputs=inputs, outputs=outputs, ledger=ledger, compute=compute, config=ControlConfig(**config))


def test_plan_on_vast_prices_each_job_on_an_offer_as_vast_bills_it(bucket_dir: Path):
    compute = FakeVast([OFFER_A, OFFER_B])
    deps = _deps(bucket_dir, compute, target_fps=48.0, upscale=2)
    plan = planner.estimate(deps)
    assert compute.searches == 1  # one search for every input
    rows = {r.key: r for r in plan.rows}
    short, long = rows["input/short.mp4"], rows["input/deep dir/long ü.mp4"]
    # Inputs in key order, each on the next cheapest offer.
    assert long.offer.id == 102 and short.offer.id == 101 and rows["input/notes.mp4"].offer is None
    rates = Rates.from_offer(OFFER_A, 30)
    assert short.offer.rates == rates and rates.dph == pytest.approx(0.305)
    # On a 100 Mbit/s host the image (4.5 GB) takes 360 s to pull: longer than the 180 s allowance.
    assert short.loading_s == pytest.approx(4.5e9 * 8 / 100e6) == pytest.approx(360)
    assert short.download_s == pytest.approx(short.size * 8 / 100e6)
    # Stages: RIFE x2 (every other output frame made), the image's x4 upscaler, NVENC transcode at 128x96.
    kinds = [(s.task.kind, s.task.factor) for s in short.stages]
    assert kinds == [("interpolate", 2), ("upscale", 4), ("transcode", 1)]
    assert short.stages[0].frames == pytest.approx(48) and short.stages[1].frames == 48
    assert short.process_s == pytest.approx(sum(s.frames / s.fps for s in short.stages))
    # the input processed as it arrives: the slower of the two sets the pace
    running = short.setup_s + max(short.download_s, short.process_s) + short.upload_s + short.teardown_s
    assert short.running_s == pytest.approx(running) and short.total_s == pytest.approx(running + 360)
    # The bill, part by part: GPU while running, storage for the whole life, bandwidth per GB.
    assert short.cost.gpu == pytest.approx(0.30 * running / 3600)
    assert short.cost.storage == pytest.approx(0.005 * (running + 360) / 3600)
    assert short.bytes_down == pytest.approx(4.5e9 + short.size)
    assert short.cost.bandwidth == pytest.approx(short.bytes_down / GB * 0.002 + short.bytes_up / GB * 0.004)
    assert plan.total_cost.total == pytest.approx(short.cost.total + long.cost.total)
    assert long.loading_s == 180  # a fast host: the allowance
    text = planner.render(plan)
    assert "RTX 4090" in text and "A100 SXM4" in text and "0.305" in text and "0.0020/0.0040" in text
    assert "offer 101: RTX 4090, $0.3050/h with 30 GB disk" in text and "storage $0.0050/h" in text
    assert f"${plan.total_cost.total:.4f}" in text.split("TOTAL", 1)[1].splitlines()[0]
    assert deps.ledger.list() == []


def test_plan_prices_a_split_job_as_its_segments_at_once(bucket_dir: Path):
    """With --segment-s, an input `run` would split is priced as its segments: the time one segment's
    (per wave of instances), the bytes and cost all of theirs, each pulling the image, reading its own
    span and encoding with libx264 (a segment's encoder on every host, NVENC or not)."""
    import dataclasses

    from watcher.mediaprobe import probe_for_segments

    compute = FakeVast([OFFER_A])
    compute.config.max_instances = 1  # the segments run one after another
    whole = planner.estimate(_deps(bucket_dir, compute, upscale=2))
    deps = dataclasses.replace(_deps(bucket_dir, compute, upscale=2, segment_s=1.0), probe=probe_for_segments)
    split = planner.estimate(deps)
    one, two = ({r.key: r for r in p.rows}["input/deep dir/long ü.mp4"] for p in (whole, split))
    assert (one.segments, two.segments, two.waves) == (1, 2, 2)  # 2 s in two 1 s spans, one at a time
    assert two.frames_out == one.frames_out == 60 and two.stages[-1].frames == 30
    encode_one, encode_two = one.stages[-1], two.stages[-1]
    assert encode_one.task.nvenc and not encode_two.task.nvenc and "libx264" in encode_two.source
    assert encode_two.fps < encode_one.fps  # the RTX 4090's NVENC against its host's CPU
    assert two.bytes_down == pytest.approx(2 * 4.5e9 + two.size)  # the image on every instance
    # A segment reads its span before it starts; a whole job processes its input as it arrives.
    assert two.running_s == pytest.approx(two.setup_s + two.download_s + two.process_s + two.upload_s + two.teardown_s)
    assert one.running_s == pytest.approx(one.setup_s + max(one.download_s, one.process_s) + one.upload_s + one.teardown_s)
    assert two.cost.total == pytest.approx(2 * planner.cost(
        Rates.from_offer(OFFER_A, 30), running_s=two.running_s, exists_s=two.total_s,
        bytes_down=4.5e9 + two.size / 2, bytes_up=two.bytes_up / 2).total)
    assert two.cost.total > one.cost.total  # two image pulls and start-ups
    assert two.wall_s == pytest.approx(2 * two.total_s + planner.JOIN_S)
    compute.config.max_instances = 3  # at once, each created 4.5 s after the last (Vast's pace)
    together = {r.key: r for r in planner.estimate(deps).rows}["input/deep dir/long ü.mp4"]
    assert (together.waves, together.ramp_s) == (1, 4.5)
    assert together.wall_s == pytest.approx(together.total_s + 4.5 + planner.JOIN_S)
    assert together.cost.total == pytest.approx(two.cost.total)
    assert split.total_s == pytest.approx(sum(r.wall_s for r in split.priced))
    text = planner.render(split)
    assert "RTX 4090 x2" in text and "2 segments, 1 at a time (2 waves), then the join" in text
    data = planner.to_json(split)["inputs"]
    assert {i["key"]: i["segments"]["count"] for i in data if "segments" in i} == {
        "input/deep dir/long ü.mp4": 2, "input/short.mp4": 1}
    # What run would not split is priced whole, with the reason.
    matroska = dataclasses.replace(_deps(bucket_dir, compute, container="mkv", segment_s=1.0), probe=probe_for_segments)
    row = {r.key: r for r in planner.estimate(matroska).rows}["input/deep dir/long ü.mp4"]
    assert row.segments == 1 and "container must be mp4" in row.not_split
    assert "not split into segments: segments are joined as fragmented MP4" in planner.render(planner.estimate(matroska))
    # minterpolate (no model) splits as a model does.
    retimed = dataclasses.replace(_deps(bucket_dir, compute, target_fps=60.0, segment_s=1.0), probe=probe_for_segments)
    assert {r.key: r for r in planner.estimate(retimed).rows}["input/deep dir/long ü.mp4"].segments == 2

def test_plan_without_a_matching_offer_says_why(bucket_dir: Path):
    deps = _deps(bucket_dir, FakeVast(error=CapacityError("no offer matches: RTX 5090, <= $0.1/h")))
    plan = planner.estimate(deps)
    text = planner.render(plan)
    assert "no offer to price with: no offer matches: RTX 5090" in text
    assert planner.to_json(plan)["offer_error"].startswith("no offer matches")
    assert all(r.offer is None for r in plan.rows)


def test_plan_with_nothing_pending_does_not_search(tmp_path: Path):
    (tmp_path / "bucket" / "input").mkdir(parents=True)
    compute = FakeVast([OFFER_A])
    plan = planner.estimate(_deps(tmp_path, compute))
    assert plan.rows == [] and compute.searches == 0 and "(nothing pending)" in planner.render(plan)


def test_plan_against_the_vast_emulator_rents_nothing(bucket_dir: Path):
    from vastdrop.compute.vast import VastCompute, VastConfig

    with VastEmulator(command=[sys.executable, "-c", "pass"], limits=Limits().scaled(0.05)) as emu:
        compute = VastCompute(api_key=emu.api_key, server_url=emu.url,
                              config=VastConfig(disk_gb=30, pace_scale=0.05, api_margin_s=0.01))
        plan = planner.estimate(_deps(bucket_dir, compute, target_fps=60.0))
        cheapest = compute.offers()[0]  # cached: the same search
        short = next(r for r in plan.rows if r.key == "input/short.mp4")
        assert short.offer.id == cheapest["id"] and short.offer.gpu == cheapest["gpu_name"]
        assert short.offer.rates == Rates.from_offer(cheapest, 30)
        assert short.offer.rates.dph == pytest.approx(float(cheapest["dph_total"]))  # storage included
        assert short.cost.total > 0
        assert emu.create_requests == [] and emu.live_instances() == [] and emu.all_instances() == []


def test_plan_shows_the_cost_both_ways_on_demand_and_interruptible(bucket_dir: Path):
    """The same offers priced on-demand and at our bid (bid_ratio x the on-demand GPU price): each plan
    gives the other way's total, and the two plans agree on both figures."""
    from vastdrop.compute.vast import VastCompute, VastConfig

    with VastEmulator(command=[sys.executable, "-c", "pass"], limits=Limits().scaled(0.05)) as emu:
        plans = {}
        for interruptible in (False, True):
            compute = VastCompute(api_key=emu.api_key, server_url=emu.url, config=VastConfig(
                disk_gb=30, pace_scale=0.05, api_margin_s=0.01, interruptible=interruptible, bid_ratio=0.7))
            plans[interruptible] = planner.estimate(_deps(bucket_dir, compute, target_fps=60.0))
        on_demand, bidding = plans[False], plans[True]
        kind, as_bid = on_demand.other_way
        assert kind == "interruptible" and as_bid.storage == pytest.approx(on_demand.total_cost.storage)
        assert as_bid.gpu == pytest.approx(0.7 * on_demand.total_cost.gpu, rel=0.01)
        assert bidding.total_cost.total == pytest.approx(as_bid.total, rel=0.01)
        assert bidding.other_way[0] == "on-demand"
        assert bidding.other_way[1].total == pytest.approx(on_demand.total_cost.total, rel=0.01)
        assert f"the same jobs interruptible: ${as_bid.total:.4f}" in planner.render(on_demand)
        assert planner.to_json(bidding)["total"]["cost_other_way"]["kind"] == "on-demand"
        assert emu.create_requests == []


def test_plan_with_vast_compute_probes_presigned_urls(seaweed, bucket, tmp_path: Path):
    s3 = seaweed.client()
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, fps=24, seconds=1.0)
    s3.put_object(Bucket=bucket, Key="input/a b/ü.mp4", Body=clip.read_bytes())
    s3.put_object(Bucket=bucket, Key="input/broken.mp4", Body=b"not a video at all")
    with VastEmulator(command=[sys.executable, "-c", "pass"]) as emu:
        env = {**seaweed.env(), "WATCHER_VAST_API_KEY": emu.api_key, "WATCHER_VAST_SERVER_URL": emu.url}
        proc = watcher(tmp_path, "plan", "--json", "--compute", "vast", "--input", f"s3://{bucket}/input/",
                       "--output", f"s3://{bucket}/output/", "--target-fps", "60", env=env)
        assert proc.returncode == 0, proc.stderr
        assert emu.create_requests == [] and emu.live_instances() == []
    doc = json.loads(proc.stdout)
    rows = {r["key"]: r for r in doc["inputs"]}
    good = rows["input/a b/ü.mp4"]
    assert good["media"]["frames"] == 24 and good["frames_out"] == 60 and good["cost"]["total"] > 0
    assert rows["input/broken.mp4"]["error"]
    assert "X-Amz-Signature" not in proc.stdout and emu.api_key not in proc.stdout + proc.stderr


def test_plan_refuses_bad_settings_with_exit_2(tmp_path: Path):
    proc = watcher(tmp_path, "plan", "--compute", "vast", env={"WATCHER_VAST_API_KEY": "k" * 20})
    assert proc.returncode == 2 and "s3://" in proc.stderr and "Traceback" not in proc.stderr
    proc = watcher(tmp_path, "plan", "--upscale", "7")
    assert proc.returncode == 2 and "--upscale" in proc.stderr and "Traceback" not in proc.stderr


def test_the_readme_table_is_what_the_lookup_gives():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Costs: what Vast bills and `plan`", 1)[1].split("\n## ", 1)[0]
    header = "| GPU | RIFE x2 720p | RIFE x2 1080p | RIFE x2 4K | x4 480p | x4 720p | x4 1080p |"
    lines = section.split(header, 1)[1].strip().splitlines()[1:]
    tasks = [Task("interpolate", 1280, 720), Task("interpolate", 1920, 1080), Task("interpolate", 3840, 2160),
             Task("upscale", 854, 480, 4), Task("upscale", 1280, 720, 4), Task("upscale", 1920, 1080, 4)]
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) >= 8
    for line in rows:
        name, *cells = [c.strip() for c in line.strip("|").split("|")]
        gpu = CPU if name.startswith("CPU") else name
        for cell, task in zip(cells, tasks, strict=True):
            est = fps_for(gpu, task)
            assert cell.startswith("**") == (not est.guess), (gpu, task)
            assert float(cell.strip("*")) == pytest.approx(est.fps, rel=0.03), (gpu, task)  # 2-3 digits


def test_a_source_deeper_than_8_bits_is_priced_as_libx265_where_the_job_encodes_in_software(tmp_path: Path):
    """The job encodes 10 bits with libx265 where no NVENC may take it (a segment, a GPU without one,
    HDR10's metadata, which encode.choose_encoder reads from the first frame's side data), measured
    here at 1.96x libx264's time; with NVENC, hevc_nvenc as fast as h264."""
    from tests.support.colour_clips import make_bars
    from vastdrop.throughput import X265_SLOWER

    hdr = planner.probe(str(make_bars(tmp_path / "hdr.mp4", width=64, height=48, matrix="bt2020", hdr10=True)),
                        "hdr.mp4", count_packets=True)
    sdr = planner.probe(str(make_clip(tmp_path / "sdr.mp4", width=64, height=48)), "sdr.mp4", count_packets=True)
    assert (hdr.deep, hdr.hdr10, sdr.deep, sdr.hdr10) == (True, True, False, False)
    ten_bit_hlg = replace(hdr, hdr10=False)  # 10 bits without HDR10 metadata: NVENC takes it

    def encode(media, gpu: str, nvenc: bool = True):
        stage = planner.stages(media, gpu, 100, target_fps=None, upscale=1, interpolation_learned=True,
                               upscale_learned=True, upscale_model_factor=None, nvenc=nvenc, hevc=media.deep)[-1]
        return stage.fps, stage.task.describe()

    x264_segment, said = encode(sdr, "RTX 4090", nvenc=False)
    assert said.endswith("libx264)")
    for nvenc in (False, True):  # a segment; a whole job, whose HDR10 metadata NVENC cannot carry
        fps, said = encode(hdr, "RTX 4090", nvenc)
        assert fps == pytest.approx(x264_segment / X265_SLOWER) and said.endswith("libx265)")
    assert encode(ten_bit_hlg, "RTX 4090") == encode(sdr, "RTX 4090")  # hevc_nvenc, as fast as h264_nvenc
    assert encode(ten_bit_hlg, "H100 SXM")[0] == pytest.approx(encode(sdr, "H100 SXM")[0] / X265_SLOWER)
    assert encode(hdr, "CPU")[0] == pytest.approx(encode(sdr, "CPU")[0] / X265_SLOWER)

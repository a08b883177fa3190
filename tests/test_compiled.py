"""The opt-in compiled path (issue 11 item 3; JOB_COMPILE, gpu_job.models.compiled): one graph for
the video's frame size, the same frames as the plain path, and the plain path when compiling fails."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from gpu_job.models.compiled import FixedShape
from gpu_job.models.upscaler import Upscaler
from tests.support.clips import make_clip
from tests.support.jobs import file_job_env, run_job
from tests.support.models import save_compact


class Affine(torch.nn.Module):
    """y = 2x + t, per item."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 2 * x + t.view(-1, 1, 1, 1)


def _eager_backend(graphs: list):
    def backend(graph_module, example_inputs):  # torch.compile's backend protocol: run the graph as traced
        graphs.append(tuple(tuple(x.shape) for x in example_inputs))
        return graph_module.forward
    return backend


def test_one_graph_serves_every_batch_of_the_frame_size_and_other_shapes_run_plain() -> None:
    graphs: list = []
    net, notes = Affine(), []
    fixed = FixedShape(net, "compile", notes, backend=_eager_backend(graphs))
    x, t = torch.rand(4, 3, 8, 8), torch.rand(4)
    assert torch.equal(fixed(x, t), net(x, t))  # the first call: compiled for batch 4
    assert torch.equal(fixed(x[:3], t[:3]), net(x[:3], t[:3]))  # padded to 4, the extra dropped
    assert torch.equal(fixed(torch.cat([x, x[:2]]), torch.cat([t, t[:2]])), net(torch.cat([x, x[:2]]), torch.cat([t, t[:2]])))
    assert len(graphs) == 1, graphs  # no recompile for 3 or 6 items
    other = torch.rand(2, 3, 8, 16)
    assert torch.equal(fixed(other, t[:2]), 2 * other + t[:2].view(-1, 1, 1, 1))
    assert len(graphs) == 1  # another frame size: the plain network, nothing compiled for it
    assert notes == ["network compiled with torch.compile (compile) for inputs of shape 4x3x8x8 and 4"]


def test_a_compile_that_fails_leaves_the_plain_network_and_says_why() -> None:
    def broken(graph_module, example_inputs):
        raise RuntimeError("no C compiler on this host")

    net, notes = Affine(), []
    fixed = FixedShape(net, "cuda-graphs", notes, backend=broken)
    x, t = torch.rand(2, 3, 8, 8), torch.rand(2)
    assert torch.equal(fixed(x, t), net(x, t))
    assert torch.equal(fixed(x, t), net(x, t))  # and from then on, without trying again
    assert len(notes) == 1 and "failed, the plain network ran instead" in notes[0] and "no C compiler" in notes[0]


def test_a_mode_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="compile mode"):
        FixedShape(Affine(), "fast", [])


@pytest.mark.slow
def test_the_compiled_upscaler_makes_the_plain_upscalers_frames(tmp_path: Path) -> None:
    """Inductor's own kernels on this CPU, for a Compact network in the published layout."""
    weights = save_compact(tmp_path / "compact.pth", scale=2, num_feat=8, num_conv=2)
    plain = Upscaler.from_file(weights, torch.device("cpu"))
    compiled, notes = Upscaler.from_file(weights, torch.device("cpu")), []
    compiled.compile("compile", notes)
    frames = torch.rand(5, 3, 36, 52, generator=torch.Generator().manual_seed(1))
    for batch in (frames[:3], frames[3:]):  # the second call is padded into the first call's graph
        want, got = plain(batch), compiled(batch)
        levels = ((want * 255).round() - (got * 255).round()).abs()
        assert float(levels.max()) <= 1 and float((levels > 0).float().mean()) < 1e-3
    assert notes == ["network compiled with torch.compile (compile) for inputs of shape 3x3x36x52"]


@pytest.mark.slow
def test_a_job_asked_to_compile_makes_the_same_result_and_says_so(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=48, height=32, fps=12, seconds=1.0)
    weights = save_compact(tmp_path / "compact.pth", scale=2, num_feat=8, num_conv=2)
    results = {}
    for how in ("off", "compile"):
        out = tmp_path / how
        proc = run_job(file_job_env(out, clip, JOB_UPSCALE="2", JOB_UPSCALE_MODEL=str(weights), JOB_COMPILE=how,
                                    JOB_VIDEO_CODEC="libx264", JOB_CRF="0"), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        manifest = json.loads((out / "bucket/output/clip.mp4.manifest.json").read_text())
        with av.open(str(out / "bucket/output/clip.mp4")) as container:
            results[how] = (manifest, [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)])
    (plain_manifest, plain), (manifest, compiled) = results["off"], results["compile"]
    assert len(compiled) == len(plain) == 12
    assert max(int(np.abs(a - b).max()) for a, b in zip(plain, compiled, strict=True)) <= 2  # lossless encode, 8-bit rounding
    assert any(note.startswith("network compiled with torch.compile (compile)") for note in manifest["engine"]["notes"])
    assert not any("torch.compile" in note for note in plain_manifest["engine"]["notes"])


def test_rife_through_one_graph_makes_the_plain_frames_and_pads_a_short_batch(tmp_path: Path) -> None:
    """RIFE 4.25 in its published layout, captured whole by dynamo (AOT autograd's graph, run as
    traced: inductor's own kernels cost minutes to compile for it on this CPU; a GPU host's job)."""
    from gpu_job.models.rife import RifeInterpolator
    from tests.support.models import save_rife

    weights = save_rife(tmp_path / "flownet.pkl")
    plain = RifeInterpolator.from_file(weights, torch.device("cpu"))
    traced = RifeInterpolator.from_file(weights, torch.device("cpu"))
    notes: list[str] = []
    traced.net = FixedShape(traced.net, "compile", notes, backend="aot_eager")
    g = torch.Generator().manual_seed(0)
    a, b, t = torch.rand(3, 3, 40, 72, generator=g), torch.rand(3, 3, 40, 72, generator=g), torch.tensor([0.25, 0.5, 0.75])
    for n in (3, 2):  # the second batch is padded into the first one's graph
        levels = ((plain(a[:n], b[:n], t[:n]) * 255).round() - (traced(a[:n], b[:n], t[:n]) * 255).round()).abs()
        # AOT's decompositions round differently (4e-4 at most): a value on a level's edge may flip
        assert float(levels.max()) <= 1 and float((levels > 0).float().mean()) < 1e-2
    assert len(notes) == 1 and notes[0].startswith("network compiled") and "3x3x64x128" in notes[0]  # padded to x64


def test_calls_before_the_full_batch_run_plain_and_an_out_of_memory_padded_call_stops_the_padding() -> None:
    """RIFE's first call on CUDA is one pair (its memory measured: gpu_job.memory.MeasuredBatch): the
    graph is compiled for the full batch. A padded call that runs out of memory lets BatchLimit's
    smaller batches run plain, instead of padding them back up to what did not fit."""
    graphs: list = []
    net, notes = Affine(), []
    fixed = FixedShape(net, "compile", notes, batch=4, backend=_eager_backend(graphs))
    x, t = torch.rand(4, 3, 8, 8), torch.rand(4)
    assert torch.equal(fixed(x[:1], t[:1]), net(x[:1], t[:1])) and graphs == []  # the measured single pair
    assert torch.equal(fixed(x, t), net(x, t)) and len(graphs) == 1
    calls: list[int] = []

    def out_of_memory(*inputs):
        calls.append(inputs[0].shape[0])
        raise torch.OutOfMemoryError("CUDA out of memory")

    fixed._compiled = out_of_memory  # the device fills up
    with pytest.raises(torch.OutOfMemoryError):
        fixed(x[:3], t[:3])  # padded to 4: too large
    assert torch.equal(fixed(x[:2], t[:2]), net(x[:2], t[:2]))  # BatchLimit's half: plain, not padded to 4
    assert calls == [4]

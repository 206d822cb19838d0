"""srn-port export: ONNX (run by ONNX Runtime) and torch.export files with dynamic batch,
height and width reproduce the TF goldens and srn-port at sizes other than the export's;
with TF, the live TF graph at several sizes (marked tf)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REPO
from srn_port.api.weights import load_model
from srn_port.cli import cli
from srn_port.core.errors import SrnPortError
from srn_port.core.network import N_LEVELS
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.parity.golden import GoldenFile

pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

GOLDEN = REPO / "golden"
VARIANTS = ("color", "gray", "lstm")
SIZES = ((64, 64), (48, 112), (96, 80))  # square, non-square, not the export's 64x96


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    files = {}
    for variant in VARIANTS:
        out = folder / f"{variant}.onnx"
        res = CliRunner().invoke(cli, ["export", str(GOLDEN / "ckpt" / variant), str(out)])
        assert res.exit_code == 0, res.output
        files[variant] = out
    return files


def close(ours, ref, key="output"):
    ours, ref = np.asarray(ours), np.asarray(ref)
    return within(float(np.abs(ours - ref).max()), float(np.abs(ref).max()), TOLERANCES[key])


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_runtime_reproduces_the_tf_golden(onnx_files, variant):
    from srn_port.api.deploy import OnnxModel

    model = OnnxModel(onnx_files[variant], threads=1)
    with GoldenFile(GOLDEN / f"{variant}.h5") as golden:
        outs = model(golden.input())
        assert len(outs) == N_LEVELS
        for level in range(N_LEVELS):
            assert close(outs[level], golden.output(level).numpy()), level


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_runtime_matches_srn_port_at_other_sizes_and_batches(onnx_files, variant):
    from srn_port.api.deploy import OnnxModel

    onnx_model = OnnxModel(onnx_files[variant], threads=1)
    model = load_model(GOLDEN / "ckpt" / variant, channels_last=False)
    for batch, (h, w) in zip((1, 3, 2), SIZES):
        x = torch.rand(batch, model.config.channels, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref = model(x)
        for ours, theirs in zip(onnx_model(x), ref):
            assert ours.shape == theirs.shape and close(ours, theirs)


def test_finest_only_and_pt2(tmp_path):
    weights = GOLDEN / "ckpt" / "color"
    model = load_model(weights, channels_last=False)
    x = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        ref = model(x)
    assert CliRunner().invoke(cli, ["export", str(weights), str(tmp_path / "m.pt2"),
                                    "--finest-only"]).exit_code == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    with torch.no_grad():
        out = program.module()(x)
    assert isinstance(out, torch.Tensor) and close(out, ref[-1])
    res = CliRunner().invoke(cli, ["export", str(weights), str(tmp_path / "m.pt2")])
    assert res.exit_code == 1 and "--force" in res.output


@pytest.mark.parametrize("variant", ["color", "lstm"])
def test_deblur_and_evaluate_run_exported_files(tmp_path, onnx_files, variant):
    """deblur/evaluate with an .onnx (ONNX Runtime) or a .pt2 (torch.export) as WEIGHTS: the
    same pipeline, 8-bit outputs within 1 level of the eager model's, the same scores."""
    import csv

    from srn_port.data import synthetic
    from srn_port.data.images import encode_image, read_image

    weights = GOLDEN / "ckpt" / variant
    pt2 = tmp_path / "m.pt2"
    assert CliRunner().invoke(cli, ["export", str(weights), str(pt2), "--finest-only"]
                              ).exit_code == 0
    data = tmp_path / "data" / "scene"
    for sub in ("blur", "sharp"):
        (data / sub).mkdir(parents=True)
    for i in range(2):
        blur, sharp = synthetic.held_out_set(1, 40, 56, seed=i, photos=False)[0]
        (data / "blur" / f"{i}.png").write_bytes(encode_image(blur, ".png"))
        (data / "sharp" / f"{i}.png").write_bytes(encode_image(sharp, ".png"))
    outs, scores = {}, {}
    for name, w in (("torch", weights), ("onnx", onnx_files[variant]), ("pt2", pt2)):
        res = CliRunner().invoke(cli, ["deblur", str(w), str(data / "blur"), "-o",
                                       str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        outs[name] = [read_image(tmp_path / name / f"{i}.png").astype(int) for i in range(2)]
        res = CliRunner().invoke(cli, ["evaluate", str(w), str(data.parent), "--csv",
                                       str(tmp_path / f"{name}.csv")])
        assert res.exit_code == 0, res.output
        with open(tmp_path / f"{name}.csv", newline="") as f:
            scores[name] = [float(r["psnr"]) for r in csv.DictReader(f)]
    assert "onnxruntime" in res.output or name == "pt2"
    for name in ("onnx", "pt2"):
        for a, b in zip(outs[name], outs["torch"]):
            assert np.abs(a - b).max() <= 1
        assert scores[name] == pytest.approx(scores["torch"], abs=0.05)
    res = CliRunner().invoke(cli, ["deblur", str(onnx_files[variant]), str(data / "blur"),
                                   "--backend", "torch", "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and "backend 'onnxruntime'" in res.output
    res = CliRunner().invoke(cli, ["evaluate", str(weights), str(data.parent),
                                   "--backend", "onnxruntime"])
    assert res.exit_code == 1 and "srn-port export" in res.output


def test_bad_exports_and_foreign_onnx_files(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from srn_port.api.deploy import OnnxModel

    res = CliRunner().invoke(cli, ["export", str(GOLDEN / "ckpt" / "color"),
                                   str(tmp_path / "m.tflite")])
    assert res.exit_code == 1 and ".onnx or .pt2" in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "none.pt"), str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and "does not exist" in " ".join(res.output.split())
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(SrnPortError, match="not one exported by srn-port"):
        OnnxModel(tmp_path / "other.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(SrnPortError, match="not a readable ONNX file"):
        OnnxModel(tmp_path / "junk.onnx")


@pytest.mark.tf
@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_runtime_matches_live_tf_at_several_sizes(onnx_files, variant):
    from srn_port.api.deploy import OnnxModel
    from srn_port.reference.graph import run_reference

    onnx_model = OnnxModel(onnx_files[variant], threads=1)
    config = onnx_model.config
    prefix = GOLDEN / "ckpt" / variant
    from srn_port.core.checkpoint import resolve_checkpoint
    prefix = resolve_checkpoint(prefix)
    for h, w in SIZES:
        x = np.random.default_rng(h * w).random((1, h, w, config.channels), dtype=np.float32)
        ref = run_reference(prefix, x, config, activations=False, threads=1)
        outs = onnx_model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
        for level in range(N_LEVELS):
            assert close(outs[level].permute(0, 2, 3, 1).numpy(), ref.outputs[level]), (h, w, level)

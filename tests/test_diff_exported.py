"""`srn-port diff` on exported .onnx/.pt2 files: what they expose (their level outputs, or
only the finest) against the golden under 'output'; a wrong export fails with exit 1 at its
first divergent output; a variant mismatch, a foreign .onnx and layer options are usage
errors (exit 2)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import REPO
from srn_port.api.convert import convert
from srn_port.api.deploy import export_model
from srn_port.api.weights import as_state_dict, save_weights
from srn_port.cli import cli

pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

GOLDEN = REPO / "golden"
CKPT = GOLDEN / "ckpt" / "color"


@pytest.fixture(autouse=True)
def default_golden_dir(monkeypatch):
    monkeypatch.delenv("SRN_PORT_GOLDEN_DIR", raising=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_torch_thread):
    """From the converted colour checkpoint: all levels as .onnx, the finest as .pt2; and a
    .pt2 of the same weights with the output convolution's bias moved by 0.01."""
    folder = tmp_path_factory.mktemp("exported")
    weights = folder / "color.safetensors"
    conv = convert(CKPT, weights)
    sd = {k: v.clone() for k, v in as_state_dict(conv.arrays).items()}
    sd["dec1_0.bias"] += 0.01
    wrong = save_weights(sd, conv.metadata(), folder / "wrong.pt")
    return {"onnx": export_model(weights, folder / "color.onnx"),
            "pt2": export_model(weights, folder / "color.pt2", finest_only=True),
            "wrong": export_model(wrong, folder / "wrong.pt2")}


def diff(*args):
    result = CliRunner().invoke(cli, ["diff", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def flat(result) -> str:
    return " ".join(result.output.split())


def table(result):
    """The table's rows as (level, layer, tolerance, its value, result)."""
    rows = [line.split() for line in result.output.splitlines()]
    return [(r[0], r[1], r[-3], r[-2], r[-1]) for r in rows if r and r[0].isdigit()]


def test_onnx_export_passes_on_its_three_level_outputs(exported):
    result = diff(exported["onnx"])
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert f"golden {GOLDEN / 'color'}.h5" in text  # found by the file's variant and width
    assert "run by onnxruntime" in text
    assert "internal layers are not visible in an exported file" in text
    assert "PASS: all 3 level outputs within the tolerance table" in text
    assert table(result) == [(lv, "dec1_0", "output", "1e-05", "pass") for lv in "012"]
    code = diff(exported["onnx"], "--json", "-")
    data = json.loads(code.output)
    assert code.exit_code == 0 and data["mode"] == "outputs" and data["passed"]
    assert [(r["level"], r["layer"], r["tolerance"]) for r in data["rows"]] == [
        (lv, "dec1_0", "output") for lv in range(3)]
    assert data["weight_differences"] is None


def test_finest_only_pt2_passes_on_its_one_output(exported):
    result = diff(exported["pt2"])
    assert result.exit_code == 0, result.output
    assert "finest level only" in flat(result) and "run by torch.export" in flat(result)
    assert "PASS: the level output within the tolerance table" in flat(result)
    assert table(result) == [("2", "dec1_0", "output", "1e-05", "pass")]
    bad = diff(exported["pt2"], "--level", "0")
    assert bad.exit_code == 2
    assert "Level 0 is not an output of the exported model" in flat(bad)
    assert "--finest-only" in flat(bad)


def test_wrong_export_fails_at_its_first_divergent_output(exported):
    result = diff(exported["wrong"])
    assert result.exit_code == 1, result.output
    text = flat(result)
    assert "FIRST DIVERGENCE: dec1_0 at level 0" in text
    assert "> 'output' (1e-05)" in text and "diagnosis" not in text
    assert [r[-1] for r in table(result)] == ["FAIL", "FAIL", "FAIL"]
    assert "--layer dec1_0 --level 0" in text  # where to look next
    detail = diff(exported["wrong"], "--layer", "dec1_0", "--level", "1")
    assert detail.exit_code == 1
    assert "FIRST DIVERGENCE: dec1_0 at level 1" in flat(detail)
    assert "layer dec1_0, level 1 (1x3x32x48, tolerance output: FAIL)" in flat(detail)


def test_variant_mismatch_is_a_usage_error(exported):
    result = diff(exported["onnx"], "--golden", GOLDEN / "gray.h5")
    assert result.exit_code == 2
    assert "SRN gray model of width 4, but WEIGHTS is color of width 4" in flat(result)
    assert "PASS" not in result.output and "FAIL" not in result.output


def test_layer_options_and_foreign_onnx_are_usage_errors(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    for args in (("--isolate",), ("--emulate", "torch-padding")):
        result = diff(exported["onnx"], *args)
        assert result.exit_code == 2 and "exposes only its level outputs" in flat(result)
    result = diff(exported["onnx"], "--layer", "enc2_1")
    assert result.exit_code == 2 and "not layer 'enc2_1'" in flat(result)
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    result = diff(tmp_path / "other.onnx")
    assert result.exit_code == 2 and "not one exported by srn-port" in flat(result)
    result = diff(tmp_path / "missing.onnx")
    assert result.exit_code == 2 and "does not exist" in flat(result)


@pytest.mark.tf
def test_onnx_export_passes_against_live_tf(exported):
    result = diff(exported["onnx"], "--tf", CKPT, "--size", "32x48")
    assert result.exit_code == 0, result.output
    assert "live TensorFlow" in flat(result) and "PASS: all 3 level outputs" in flat(result)

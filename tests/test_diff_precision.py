"""`srn-port diff --device/--precision`: the comparison in TF32 / fp16 / bf16 and the
diagnosis that names reduced precision (a roughly uniform relative error from the first
convolution on), on the CPU: fp16 and bf16 by CPU autocast (any x86 CPU, slowly where
emulated; the goldens are tiny), TF32 emulated by rounding. The pattern is also recognised
when fp32 was asked for and something computed in reduced precision anyway."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import REPO
from srn_port.api.weights import load_model
from srn_port.cli import cli
from srn_port.parity import GoldenReference, compare, find_golden
from srn_port.parity.diagnose import precision_pattern
from srn_port.nn.precision import emulate_rounding

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CKPT = REPO / "golden" / "ckpt"


@pytest.fixture(autouse=True)
def default_golden_dir(monkeypatch):
    monkeypatch.delenv("SRN_PORT_GOLDEN_DIR", raising=False)


def diff(*args):
    result = CliRunner().invoke(cli, ["diff", *map(str, args)])
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("precision, size, words", [
    ("bf16", "~1e-2", "bf16 autocast"),
    ("fp16", "~1e-3", "fp16 autocast"),
    ("tf32", "~1e-3", "TF32 (convolutions with a 10-bit significand"),
])
def test_reduced_precision_is_named_as_the_cause(precision, size, words):
    code, out = diff(CKPT / "color", "--precision", precision)
    assert code == 1
    assert "FIRST DIVERGENCE: enc1_1 at level 0" in out
    assert "diagnosis (reduced-precision): reduced precision, not a porting error" in out
    assert words in out
    assert "a roughly uniform relative error from the first convolution on" in out
    assert f"; {size}," in out
    if precision == "tf32":
        assert "TF32 emulated on the cpu" in out
    else:
        assert f"run on cpu in {precision}" in out


def test_fp32_still_passes_and_json_carries_the_diagnosis(tmp_path):
    code, out = diff(CKPT / "lstm", "--precision", "fp32", "--device", "cpu")
    assert code == 0 and "PASS" in out
    code, _ = diff(CKPT / "gray", "--precision", "bf16", "--json", tmp_path / "d.json")
    data = json.loads((tmp_path / "d.json").read_text())
    assert code == 1 and data["diagnosis"]["cause"] == "reduced-precision"
    # every convolution row failed by about bf16's round-off, none by a porting-error size
    rels = [r["max_rel_err"] for r in data["rows"] if r["op"] in ("conv", "resblock", "deconv")]
    assert all(1e-3 < r < 1e-1 for r in rels)


def test_the_pattern_is_recognised_when_fp32_was_asked_for():
    """A model computing in TF32 behind the comparison's back (as TF32 left on in cuDNN
    does): the layers' code is right, so no porting mistake reproduces the error; the
    pattern names the cause."""
    model = load_model(CKPT / "color")
    with GoldenReference(find_golden(model.config)) as ref:
        result = compare(emulate_rounding(model, "tf32"), ref, precision="fp32")
    pattern = precision_pattern(result.rows)
    assert pattern is not None and pattern.kind == "tf32/fp16"
    assert 3e-4 < pattern.median_rel < 3e-3
    d = result.diagnosis
    assert d.cause == "reduced-precision" and "though fp32 was asked for" in d.summary


def test_a_porting_error_is_not_taken_for_reduced_precision():
    """Naive padding (one-pixel shift at the stride-2 convolutions) starts at enc2_1, not at
    the first convolution: the pattern does not apply and the mistake is named."""
    model = load_model(CKPT / "color")
    model.set_emulation(["torch-padding"])
    with GoldenReference(find_golden(model.config)) as ref:
        result = compare(model, ref)
    assert precision_pattern(result.rows) is None
    assert result.diagnosis.cause == "stride2-padding"


def test_device_and_precision_errors_are_usage_errors(tmp_path):
    if not torch.cuda.is_available():
        code, out = diff(CKPT / "color", "--device", "cuda")
        assert code == 2 and "CUDA is not available" in out
    code, out = diff(CKPT / "color", "--precision", "fp64")
    assert code == 2 and "Invalid value for '--precision'" in out

"""deblur/evaluate --compile (torch.compile, TorchInductor) on the CPU: compiled outputs
equal the eager ones within the tolerance table, the command's images within one level,
and what cannot work is refused before any work with its reason. Compiling needs a C++
compiler; where Inductor cannot run here the compiling tests are skipped with the reason
found by trying (srn_port.nn.compiling.inductor_unavailable), never assumed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REPO
from srn_port.api import deblur as deblur_mod
from srn_port.api.deblur import compile_model
from srn_port.api.weights import load_model
from srn_port.cli import cli
from srn_port.core.errors import SrnPortError
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.data.images import encode_image, read_image
from srn_port.nn.compiling import inductor_unavailable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CKPT = REPO / "golden" / "ckpt" / "color"


@pytest.fixture(scope="module")
def inductor():
    why = inductor_unavailable("cpu")
    if why:
        pytest.skip(f"torch.compile cannot run on this machine: {why}")


@pytest.mark.slow
def test_compiled_outputs_equal_the_eager_ones(inductor):
    eager = load_model(CKPT)
    compiled = compile_model(load_model(CKPT))
    assert type(compiled).__name__ == "SRN" and compiled.config == eager.config
    x = torch.rand(1, 3, 32, 48)
    with torch.inference_mode():
        ref, out = eager(x), compiled(x)
    for a, b in zip(out, ref):
        err = float((a - b).abs().max())
        assert within(err, float(b.abs().max()), TOLERANCES["output"]), err


@pytest.mark.slow
def test_deblur_compile_writes_the_eager_images(inductor, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)  # padded to 48x64 inside
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode_image(image, ".png"))
    outs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        res = CliRunner().invoke(cli, ["deblur", str(CKPT), str(tmp_path / "in" / "a.png"),
                                       "-o", str(tmp_path / name), "--device", "cpu", *extra])
        assert res.exit_code == 0, res.output
        outs[name] = read_image(tmp_path / name / "a.png").astype(int)
    assert np.abs(outs["eager"] - outs["compiled"]).max() <= 1


def test_what_cannot_compile_is_refused_before_any_work(tmp_path, monkeypatch):
    photo = REPO / "examples" / "photos" / "07.png"
    out = tmp_path / "out"

    def run(*extra):
        res = CliRunner().invoke(cli, ["deblur", str(CKPT), str(photo), "-o", str(out),
                                       "--device", "cpu", *extra])
        return res.exit_code, " ".join(res.output.split())

    code, text = run("--compile-mode", "reduce-overhead")
    assert code == 2 and "--compile-mode applies with --compile" in text
    code, text = run("--compile", "--compile-mode", "reduce-overhead")
    assert code == 2 and "reduce-overhead records CUDA graphs" in text
    assert not out.exists()
    # a machine where Inductor cannot run: the reason, and no half-written output
    monkeypatch.setattr("srn_port.nn.compiling.inductor_unavailable",
                        lambda kind: "InvalidCxxCompiler: No working C++ compiler found")
    code, text = run("--compile")
    assert code != 0 and "torch.compile cannot run on cpu here" in text
    assert "No working C++ compiler found" in text and "Run without --compile" in text
    assert not out.exists()
    with pytest.raises(SrnPortError, match="compiles srn-port's own model"):
        compile_model(torch.nn.Identity())


def test_evaluate_offers_compile():
    res = CliRunner().invoke(cli, ["evaluate", "--help"])
    assert "--compile" in res.output and "--compile-mode" in res.output
    assert deblur_mod.compile_model is compile_model

"""torch.autocast is honoured on every forward path on the CPU: the pooled inference path
(srn_port/nn/pool.py steps aside), torch.compile and torch.export (srn_port.nn.precision.
Autocast); and the emulation of reduced precision used by diagnostics rounds as the real
formats do. bf16 autocast runs on any x86 CPU in eager (slowly where it is emulated), so
these tests do not depend on the CPU kind; sizes are tiny. The same paths on CUDA:
tests/test_cuda.py."""

from __future__ import annotations

import pytest
import torch

from conftest import REPO
from srn_port.api.deploy import Outputs, _dynamic_shapes
from srn_port.api.weights import load_model
from srn_port.core.network import SRNConfig
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.nn.compiling import inductor_unavailable
from srn_port.nn.model import SRN
from srn_port.nn.pool import fused_conv_available
from srn_port.nn.precision import Autocast, emulate_rounding, round_mantissa

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BF16 = torch.bfloat16


def _rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def _model(variant="color", width=4, seed=0):
    torch.manual_seed(seed)
    return SRN(SRNConfig(variant, width)).to_channels_last().eval()


def _assert_bf16_of(outs, ref):
    """``outs`` were computed in bf16 (dtype, and an error of bf16's size, not 0) and are
    otherwise the fp32 ``ref``'s."""
    assert [o.dtype for o in outs] == [BF16] * 3
    for a, b in zip(outs, ref):
        err = float((a.float() - b).abs().max())
        assert err > 0  # autocast was not ignored
        assert within(err, float(b.abs().max()), TOLERANCES["reduced_bf16"]), _rel(a, b)


@pytest.mark.parametrize("variant", ["color", "lstm"])
def test_pooled_path_steps_aside_under_autocast(variant):
    """The issue's report: a loaded model under inference_mode and CPU autocast raised a
    dtype mismatch from the pool's fused convolution. Now the pool is not used under
    autocast, and the result is the plain forward's under autocast, bit for bit."""
    model = load_model(REPO / "golden" / "ckpt" / variant)  # channels_last: the pooled path
    x = torch.rand(3 if variant != "color" else 1, model.config.channels, 32, 48)
    with torch.inference_mode():
        # the pooled path where this torch has oneDNN's fused convolution (x86 builds do)
        assert model.use_pool(x.contiguous(memory_format=torch.channels_last)) == \
            fused_conv_available()
        ref = model(x)
        with torch.autocast("cpu", dtype=BF16):
            assert not model.use_pool(x.contiguous(memory_format=torch.channels_last))
            pooled = model(x)
        model.reuse_buffers = False
        with torch.autocast("cpu", dtype=BF16):
            plain = model(x)
    _assert_bf16_of(pooled, ref)
    for a, b in zip(pooled, plain):
        assert torch.equal(a, b)


def test_export_keeps_autocast_inside_the_program():
    """An autocast context around torch.export is not recorded in the program; the
    Autocast wrapper enters it inside the call, so the exported program computes in bf16
    (equal to eager autocast) at another size and batch than the traced one."""
    model = _model("color", 2)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        program = torch.export.export(Autocast(Outputs(model), "cpu", BF16).eval(), (x,),
                                      dynamic_shapes=_dynamic_shapes())
    run = program.module()
    x2 = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        exported = run(x2)
        ref = model(x2)
        with torch.autocast("cpu", dtype=BF16):
            eager = model(x2)
    _assert_bf16_of(exported, ref)
    for a, b in zip(exported, eager):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def inductor():
    why = inductor_unavailable("cpu")
    if why:
        pytest.skip(why)


@pytest.mark.slow
def test_compile_honours_autocast(inductor):
    model = _model("color", 2)
    x = torch.rand(1, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=BF16):
            outs = compiled(x)
    _assert_bf16_of(outs, ref)


@pytest.mark.parametrize("bits, dtype", [(7, torch.bfloat16), (10, torch.float16)])
def test_round_mantissa_rounds_as_the_real_formats(bits, dtype):
    """Against torch's own conversions (round to nearest even) on values inside the
    format's normal range, ties and halfway cases included."""
    g = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, (100000,), generator=g) * 2 - 1  # |x| in [2^-8, 2^9)
    x = sign * (1 + torch.rand(100000, generator=g)) * 2.0 ** torch.randint(
        -8, 8, (100000,), generator=g)
    i = x.view(torch.int32)
    drop = 23 - bits
    halfway = ((i >> drop) << drop) | (1 << (drop - 1))  # exactly between two values
    x = torch.cat([x, halfway.view(torch.float32), torch.tensor([0.0, -0.0, 1.0])])
    assert torch.equal(round_mantissa(x, bits), x.to(dtype).float())


def test_emulated_rounding_leaves_the_weights_and_the_model_alone():
    model = _model("color", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    emulated = emulate_rounding(model, "tf32")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), emulated(x)
    for k, v in emulated.state_dict().items():
        assert torch.equal(v, before[k]), k  # rounded only during each call
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for a, b in zip(out, ref):
        err = float((a - b).abs().max())
        assert 0 < err and within(err, float(b.abs().max()), TOLERANCES["reduced_fp16"])

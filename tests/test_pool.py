"""Reuse of activation memory in inference (srn_port.nn.pool): the same outputs as the
plain forward and as TF's goldens, used only where it applies, and never touching the
caller's tensors. Its effect on page faults and time is measured by tools/bench.py
(--compare-reuse), not here."""

from __future__ import annotations

import pytest
import torch

from conftest import REPO
from srn_port.api.weights import as_state_dict
from srn_port.core.convert import convert_checkpoint
from srn_port.core.network import SRNConfig
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.nn import model as model_mod
from srn_port.nn.model import SRN
from srn_port.nn.pool import ActivationPool, conv_into, fused_conv_available
from srn_port.parity.golden import GoldenFile

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not fused_conv_available(),
                                 reason="this torch build has no oneDNN fused convolution")]

CL = torch.channels_last


def _model(variant: str, width: int = 8, seed: int = 0) -> SRN:
    torch.manual_seed(seed)
    return SRN(SRNConfig(variant, width)).to_channels_last().eval()


def _forward(model: SRN, x: torch.Tensor, reuse: bool):
    model.reuse_buffers = reuse
    try:
        with torch.inference_mode():
            assert model.use_pool(x.contiguous(memory_format=CL)) == reuse
            return model(x)
    finally:
        model.reuse_buffers = True


def _assert_same(ours, ref, key="output"):
    for level, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape
        err, scale = float((a - b).abs().max()), float(b.abs().max())
        assert within(err, scale, TOLERANCES[key]), (level, err, scale)


@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
@pytest.mark.parametrize("hw", [(64, 96), (48, 112), (80, 16)])
def test_reuse_gives_the_outputs_of_the_plain_forward(variant, hw):
    model = _model(variant)
    batch = 1 if variant == "color" else 3
    x = torch.rand(batch, model.config.channels, *hw)
    plain, pooled = _forward(model, x, False), _forward(model, x, True)
    # Same arithmetic (bias before the fused sum, ReLU after it); the tolerance allows the
    # fused oneDNN kernel to sum a convolution's products in another order on other CPUs.
    _assert_same(pooled, plain)


@pytest.mark.parametrize("name", ["color", "gray", "lstm"])
def test_reuse_reproduces_the_tf_goldens(name):
    """The committed TF outputs, through the path `srn-port deblur` takes (NHWC, no grad)."""
    with GoldenFile(REPO / "golden" / f"{name}.h5") as golden:
        conv = convert_checkpoint(golden.checkpoint_prefix())
        model = SRN(conv.config).eval()
        model.load_state_dict(as_state_dict(conv.arrays), strict=True)
        model.to_channels_last()
        outs = _forward(model, golden.input(), True)
        _assert_same(outs, [golden.output(level) for level in range(3)])


def test_the_inputs_and_outputs_are_the_callers():
    model = _model("lstm")
    x = torch.rand(3, 1, 64, 64).contiguous(memory_format=CL)  # used as is by the model
    before = x.clone()
    outs = _forward(model, x, True)
    assert torch.equal(x, before)
    storages = {o.untyped_storage().data_ptr() for o in outs}
    assert len(storages) == len(outs)
    for o in outs:  # plain tensors of their own size, not views of a pool buffer
        assert o.untyped_storage().nbytes() == o.numel() * o.element_size()


def test_reuse_needs_no_grad_nhwc_float32_and_no_capture():
    model = _model("color")
    x = torch.rand(1, 3, 32, 32).contiguous(memory_format=CL)
    with torch.inference_mode():
        assert model.use_pool(x)
        assert not model.use_pool(x, capture=lambda *a: None)
        assert not model.use_pool(x.double())
        model.set_emulation(["torch-padding"])
        assert not model.use_pool(x)
        model.set_emulation([])
    with torch.no_grad():
        assert model.use_pool(x)
    assert not model.use_pool(x)  # autograd on: training never reuses buffers
    nchw = SRN(SRNConfig("color", 8)).eval()
    with torch.inference_mode():
        assert not nchw.use_pool(x)


def test_without_the_fused_op_the_plain_forward_runs(monkeypatch):
    model = _model("gray")
    x = torch.rand(3, 1, 32, 48)
    ref = _forward(model, x, False)
    monkeypatch.setattr(model_mod, "fused_conv_available", lambda: False)
    with torch.inference_mode():
        assert not model.use_pool(x)
        outs = model(x)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))


def test_a_forward_reuses_most_of_its_activation_memory(monkeypatch):
    made = []

    class Recording(ActivationPool):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(model_mod, "ActivationPool", Recording)
    model = _model("color")
    x = torch.rand(1, 3, 64, 64)
    elements = []
    with torch.no_grad():  # what the pooled convolutions write, from a plain forward
        model.reuse_buffers = False
        model(x, capture=lambda level, name, t: elements.append(t.numel()))
        model.reuse_buffers = True
    _forward(model, x, True)
    assert len(made) == 1
    # resblocks write two tensors each; the pool allocates a few buffers per level
    assert 0 < made[0].allocated < 0.25 * sum(elements), (made[0].allocated, sum(elements))


def test_pool_hands_out_freed_buffers_and_keeps_shared_ones():
    pool = ActivationPool()
    a = pool.take((1, 4, 8, 8))
    assert a.is_contiguous(memory_format=CL) and pool.owns(a)
    ptr = a.untyped_storage().data_ptr()
    view = a[:, :2]
    pool.give(a, live=[view])  # still used by a live tensor: not handed out again
    assert pool.take((1, 4, 8, 8)).untyped_storage().data_ptr() != ptr
    pool.give(a)
    b = pool.take((1, 2, 8, 8))  # a smaller request fits the freed buffer
    assert b.untyped_storage().data_ptr() == ptr and b.is_contiguous(memory_format=CL)
    pool.give(torch.zeros(1, 4, 8, 8))  # not the pool's: ignored
    assert not pool._free
    pool.give(b)
    big = pool.take((1, 8, 16, 16))  # too small to serve: released, not kept
    assert big.untyped_storage().data_ptr() != ptr and not pool._free


@pytest.mark.parametrize("stride,hw", [(1, (20, 24)), (2, (20, 24)), (2, (21, 19))])
def test_conv_into_is_the_same_as_the_layer(stride, hw):
    from srn_port.nn.ops import create_conv2d_same

    torch.manual_seed(0)
    conv = create_conv2d_same(6, 5, 5, stride=stride).to(memory_format=CL)
    x = torch.randn(2, 6, *hw).contiguous(memory_format=CL)
    other = torch.randn(2, 5, -(-hw[0] // stride), -(-hw[1] // stride))
    pool = ActivationPool()
    with torch.no_grad():
        ref = conv(x)
        _assert_same([conv_into(pool, conv, x, relu=True)], [torch.relu(ref)], "layer")
        into = other.clone().contiguous(memory_format=CL)
        out = conv_into(pool, conv, x, relu=False, into=into)
        assert out.data_ptr() == into.data_ptr()
        _assert_same([out], [ref + other], "layer")

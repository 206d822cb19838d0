"""The training building blocks without TF: the original loss, the stop_gradient between
levels, and TFAdam's rule (TF-side equality: tests/test_train_tf.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import srn_port
from srn_port.core.network import SRNConfig
from srn_port.nn.model import SRN
from srn_port.nn.ops import tf_resize_bilinear
from srn_port.nn.optim import TFAdam, tf_polynomial_decay

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_public_names():
    assert srn_port.srn_loss is srn_port.nn.loss.srn_loss
    assert srn_port.TFAdam is TFAdam


def test_loss_is_the_sum_of_the_level_mses():
    torch.manual_seed(0)
    sharp = torch.rand(2, 3, 32, 48)
    outputs = [torch.rand(2, 3, 8, 12), torch.rand(2, 3, 16, 24), torch.rand(2, 3, 32, 48)]
    expected = sum(float(((tf_resize_bilinear(sharp, o.shape[-2:]) - o) ** 2).mean())
                   for o in outputs)
    assert srn_port.srn_loss(outputs, sharp).item() == pytest.approx(expected, rel=1e-6)
    perfect = [tf_resize_bilinear(sharp, o.shape[-2:]) for o in outputs]
    assert srn_port.srn_loss(perfect, sharp).item() == 0.0
    with pytest.raises(ValueError, match="does not match"):
        srn_port.srn_loss(outputs, sharp[:1])


def test_no_gradient_flows_from_a_level_into_the_previous_one():
    model = SRN(SRNConfig("lstm", 2)).train()
    x = torch.rand(1, 1, 32, 32)
    outs = model(x)
    # the finest output does not depend on the coarser *outputs* (tf.stop_gradient) ...
    grad = torch.autograd.grad(outs[2].sum(), outs[0], allow_unused=True, retain_graph=True)
    assert grad == (None,)
    # ... but every weight still gets a gradient from each level's own loss
    srn_port.srn_loss(outs, torch.rand(1, 1, 32, 32)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tf_adam_rule_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = TFAdam([p], lr=1e-3)
    g = torch.tensor([1e-9, 0.3, -4.0])
    m = v = np.zeros(3, np.float32)
    w = p.detach().numpy().copy()
    b1p, b2p = np.float32(0.9), np.float32(0.999)
    for _ in range(3):
        p.grad = g.clone()
        opt.step()
        gn = g.numpy()
        m = m + (gn - m) * np.float32(1 - np.float32(0.9))
        v = v + (gn * gn - v) * np.float32(1 - np.float32(0.999))
        alpha = np.float32(1e-3) * np.sqrt(np.float32(1) - b2p) / (np.float32(1) - b1p)
        w = w - (m * alpha) / (np.sqrt(v) + np.float32(1e-8))
        b1p, b2p = np.float32(b1p * np.float32(0.9)), np.float32(b2p * np.float32(0.999))
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-6)
    assert opt.beta1_power == b1p
    # epsilon is added to sqrt(v), not to sqrt(v_hat): torch.optim.Adam moves a tiny
    # gradient's weight a different amount
    q = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    ta = torch.optim.Adam([q], lr=1e-3)
    for _ in range(3):
        q.grad = g.clone()
        ta.step()
    assert abs(float(q.detach()[0] - p.detach()[0])) > 1e-5


def test_tf_adam_state_round_trips():
    p = torch.nn.Parameter(torch.ones(4))
    opt = TFAdam([p], lr=1e-3)
    p.grad = torch.full((4,), 0.5)
    opt.step()
    again = TFAdam([torch.nn.Parameter(p.detach().clone())], lr=1e-3)
    again.load_state_dict(opt.state_dict())
    assert again.beta1_power == opt.beta1_power and again.beta2_power == opt.beta2_power


def test_polynomial_decay_of_the_original():
    assert tf_polynomial_decay(0, 1e-4, 100) == pytest.approx(1e-4)
    assert tf_polynomial_decay(100, 1e-4, 100) == 0.0
    assert tf_polynomial_decay(250, 1e-4, 100) == 0.0  # held at the end
    assert tf_polynomial_decay(50, 1e-4, 100) == pytest.approx(1e-4 * 0.5 ** 0.3, rel=1e-6)
    with pytest.raises(ValueError):
        tf_polynomial_decay(1, 1e-4, 0)


def test_a_tf_runs_adam_state_is_read_and_taken_over(tmp_path):
    from _srn_ckpt import write_srn_checkpoint
    from srn_port.core.convert import convert_checkpoint, read_adam_state
    from srn_port.core.export import tf_variables
    from srn_port.core.naming import torch_to_tf_name

    config = SRNConfig("lstm", 3)
    prefix = write_srn_checkpoint(tmp_path / "run", config)  # weights + /Adam, /Adam_1 slots
    state = read_adam_state(prefix)
    conv = convert_checkpoint(prefix)
    assert set(state["m"]) == set(conv.arrays) == set(state["v"])
    assert state["step"] == 523000
    # the inverse of the export: back to TF variables, bit for bit
    back = tf_variables(conv.arrays, adam=state, step=state["step"])
    from srn_port.core.checkpoint import read_checkpoint
    original = read_checkpoint(prefix)
    for name, value in back.items():
        assert np.array_equal(value, original[name]) and value.dtype == original[name].dtype, name
    model = SRN(config)
    opt = TFAdam(model.parameters())
    opt.load_tf_state(model.named_parameters(), state)
    p = model.dec1_0.weight
    assert torch.equal(opt.state[p]["m"], torch.from_numpy(state["m"]["dec1_0.weight"]))
    assert opt.beta1_power == np.float32(original["beta1_power"])
    assert torch_to_tf_name("dec1_0.weight") + "/Adam" in original


def test_resuming_needs_the_adam_slots(tmp_path):
    from _srn_ckpt import srn_tensors, write_srn_checkpoint
    from srn_port.core.convert import read_adam_state
    from srn_port.core.errors import ConversionError

    config = SRNConfig("color", 3)
    prefix = write_srn_checkpoint(tmp_path / "w", config,
                                  tensors=srn_tensors(config, slots=()))
    with pytest.raises(ConversionError, match="no Adam state to resume from"):
        read_adam_state(prefix)


def test_a_negative_second_moment_is_not_adam_state(tmp_path):
    from _srn_ckpt import srn_tensors, write_srn_checkpoint
    from srn_port.core.convert import read_adam_state
    from srn_port.core.errors import ConversionError

    config = SRNConfig("color", 3)
    tensors = srn_tensors(config)
    tensors["g_net/enc1_1/weights/Adam_1"] = -tensors["g_net/enc1_1/weights/Adam_1"] - 1
    prefix = write_srn_checkpoint(tmp_path / "w", config, tensors=tensors)
    with pytest.raises(ConversionError, match=r"enc1_1/weights/Adam_1 holds [0-9,]+ negative value"):
        read_adam_state(prefix)

"""Training in PyTorch follows TF's original training computation (needs TF).

1. The original loss and every variable's gradient, srn-port against TF's training graph
   (the reference graph, its tf.stop_gradient between levels included), all three variants
   at the released width, on a fixed batch.
2. TFAdam against TF's AdamOptimizer fed the same gradients for 20 steps under the
   polynomial decay, and that decay against TF's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srn_port.api.weights import load_model
from srn_port.core.naming import tf_to_torch_tensor, torch_to_tf_name
from srn_port.core.network import RELEASED_WIDTH, SRNConfig
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.nn.loss import srn_loss
from srn_port.nn.optim import TFAdam, tf_polynomial_decay

pytestmark = [pytest.mark.tf, pytest.mark.usefixtures("one_torch_thread")]


def batch(config: SRNConfig, n: int, size: int = 64, seed: int = 1):
    rng = np.random.default_rng(seed)
    sharp = rng.uniform(0, 1, (n, size, size, config.channels)).astype(np.float32)
    blur = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1).astype(np.float32)
    return blur, sharp


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
def test_loss_and_every_gradient_equal_tf(tf_checkpoints, variant):
    from srn_port.reference.training import tf_loss_and_gradients

    config = SRNConfig(variant, RELEASED_WIDTH)
    prefix = tf_checkpoints(variant, RELEASED_WIDTH, 3)
    blur, sharp = batch(config, 2 if config.channels == 3 else 3)
    loss_tf, levels_tf, grads_tf = tf_loss_and_gradients(prefix, config, blur, sharp, threads=1)
    model = load_model(prefix, channels_last=False).train()
    outputs = model(nchw(blur))
    loss = srn_loss(outputs, nchw(sharp))
    loss.backward()
    assert within(abs(loss.item() - loss_tf), loss_tf, TOLERANCES["output"])
    names = {torch_to_tf_name(n) for n, _ in model.named_parameters()}
    assert names == set(grads_tf)  # every trainable TF variable, and no other
    failures, worst = [], 0.0
    for name, p in model.named_parameters():
        ref = tf_to_torch_tensor(grads_tf[torch_to_tf_name(name)])
        assert p.grad is not None and p.grad.shape == ref.shape, name
        err, scale = float(np.abs(p.grad.numpy() - ref).max()), float(np.abs(ref).max())
        assert scale > 0, name  # a dead variable would compare 0 with 0
        worst = max(worst, err / scale)
        if not within(err, scale, TOLERANCES["gradient"]):
            failures.append((name, err, scale))
    assert not failures, failures
    print(f"{variant}: loss {loss.item():.6g} (TF {loss_tf:.6g}), worst gradient {worst:.1e}")


def test_tf_adam_follows_tf_adam_optimizer_for_20_steps():
    from srn_port.reference.training import tf_adam_steps, tf_polynomial_decay_values

    rng = np.random.default_rng(0)
    init = {"g_net/a/weights": rng.normal(size=(5, 5, 8, 16)).astype(np.float32),
            "g_net/a/biases": (0.1 * rng.normal(size=16)).astype(np.float32)}
    # gradients over many magnitudes: Adam's rule matters most where |g| is near epsilon
    grads = [{k: (rng.normal(size=v.shape) * 10 ** rng.uniform(-9, -1, v.shape))
              .astype(np.float32) for k, v in init.items()} for _ in range(20)]
    steps = 20
    rates = [tf_polynomial_decay(s, 1e-4, steps) for s in range(steps)]
    for ours, theirs in zip(rates, tf_polynomial_decay_values(list(range(steps)), 1e-4, steps)):
        assert within(abs(ours - theirs), theirs, TOLERANCES["optimizer"])
    ref = tf_adam_steps(init, grads, rates)
    params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
    opt = TFAdam(params.values(), lr=1e-4)
    for g, rate in zip(grads, rates):
        for k, p in params.items():
            p.grad = torch.from_numpy(g[k])
        for group in opt.param_groups:
            group["lr"] = rate
        opt.step()
    tol = TOLERANCES["optimizer"]
    for k, p in params.items():
        w = p.detach().numpy()
        assert within(float(np.abs(w - ref[k]).max()), float(np.abs(ref[k]).max()), tol), k
        assert np.array_equal(opt.state[p]["m"].numpy(), ref[f"{k}/Adam"]), k
        assert np.array_equal(opt.state[p]["v"].numpy(), ref[f"{k}/Adam_1"]), k
    assert opt.beta1_power == ref["beta1_power"] and opt.beta2_power == ref["beta2_power"]
    # torch's Adam is a different optimizer: this comparison can tell the two apart
    plain = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
    torch_adam = torch.optim.Adam(plain.values(), lr=1e-4)
    for g, rate in zip(grads, rates):
        for k, p in plain.items():
            p.grad = torch.from_numpy(g[k])
        for group in torch_adam.param_groups:
            group["lr"] = rate
        torch_adam.step()
    k = "g_net/a/weights"
    assert not within(float(np.abs(plain[k].detach().numpy() - ref[k]).max()),
                      float(np.abs(ref[k]).max()), tol)


def test_resuming_a_tf_runs_adam_state_continues_as_tf_would(tf_checkpoints):
    """A TF checkpoint saved after a training step (make_checkpoint: one Adam step, saved
    with its slots and beta powers) is resumed by srn-port; srn-port and TF then take 5
    more steps on the same gradients (srn-port's own, from the original loss)."""
    from srn_port.core.convert import read_adam_state
    from srn_port.core.export import tf_variables
    from srn_port.reference.training import tf_adam_steps

    config = SRNConfig("lstm", 4)
    prefix = tf_checkpoints("lstm", 4, 0)
    state = read_adam_state(prefix)
    model = load_model(prefix, channels_last=False).train()
    opt = TFAdam(model.parameters(), lr=1e-4)
    opt.load_tf_state(model.named_parameters(), state)
    start = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    blur, sharp = batch(config, 3, size=32)
    grads, rates = [], [tf_polynomial_decay(s, 1e-4, 10) for s in range(5, 10)]
    for rate in rates:
        opt.zero_grad()
        srn_loss(model(nchw(blur)), nchw(sharp)).backward()
        grads.append(tf_variables({n: p.grad.numpy() for n, p in model.named_parameters()}))
        for group in opt.param_groups:
            group["lr"] = rate
        opt.step()
    tf_state = tf_variables(start, adam=state)
    initial = {n: v for n, v in tf_state.items() if n.startswith("g_net/") and "/Adam" not in n}
    ref = tf_adam_steps(initial, grads, rates, state=tf_state)
    tol = TOLERANCES["optimizer"]
    ours = tf_variables({n: p.detach().numpy() for n, p in model.named_parameters()})
    for name in initial:
        assert within(float(np.abs(ours[name] - ref[name]).max()),
                      float(np.abs(ref[name]).max()), tol), name
    assert opt.beta1_power == ref["beta1_power"] and opt.beta2_power == ref["beta2_power"]


@pytest.mark.slow
def test_continuing_the_trained_examples_tf_run_follows_tfs_training_op():
    """20 steps from the trained example's TF checkpoint (weights, Adam slots, beta powers,
    step), srn-port against the original training op, the same synthetic batches."""
    from conftest import REPO
    from srn_port.core.convert import read_adam_state
    from srn_port.data import synthetic
    from srn_port.reference.training import tf_train_steps

    ckpt = REPO / "examples" / "trained" / "color"
    model = load_model(ckpt, channels_last=False).train()
    adam = read_adam_state(ckpt)
    start, total = adam["step"], adam["step"] + 100
    batches = []
    for k in range(20):
        b, s = synthetic.training_batch(5, k, 2, 64)
        batches.append((b.astype(np.float32) / 255, s.astype(np.float32) / 255))
    ref = tf_train_steps(ckpt, model.config, batches, total, start_step=start, threads=1)
    opt = TFAdam(model.parameters())
    opt.load_tf_state(model.named_parameters(), adam)
    ours = []
    for i, (b, s) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = tf_polynomial_decay(start + i, 1e-4, total)
        opt.zero_grad()
        loss = srn_loss(model(nchw(b)), nchw(s))
        loss.backward()
        opt.step()
        ours.append(loss.item())
    worst = max(abs(a - b) / b for a, b in zip(ours, ref))
    assert all(within(abs(a - b), b, TOLERANCES["trajectory_loss"]) for a, b in zip(ours, ref)), \
        (ours, ref)
    print(f"20 steps continuing the TF run: worst relative loss difference {worst:.1e}")

"""Adam as TensorFlow computes it, and TF's polynomial learning-rate decay.

``torch.optim.Adam`` is not the same optimizer as TF's ``AdamOptimizer``: TF folds the bias
correction into the step size and adds epsilon to ``sqrt(v)``, not to ``sqrt(v_hat)``
(docs/tf-numerics.md §4.2), and keeps ``beta1_power``/``beta2_power`` as float32 variables
multiplied by beta after every step. :class:`TFAdam` reproduces TF's CPU kernel
(``ApplyAdam`` in tensorflow/core/kernels/training_ops.cc) operation for operation in
float32::

    alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
    m += (g - m) * (1 - beta1)
    v += (g * g - v) * (1 - beta2)
    var -= (m * alpha) / (sqrt(v) + epsilon)
    beta1_power *= beta1; beta2_power *= beta2        (after all variables)

For float64 parameters the kernel's arithmetic is float64, as TF's ``ApplyAdam<double>``:
TF casts its float32 tensors (the learning rate, beta1, beta2, epsilon and the beta powers,
which ``AdamOptimizer`` creates as float32 whatever the variables' dtype) to float64 and
computes the same lines in float64; the beta powers themselves still advance in float32.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch


def _kernel_scalar(dtype: torch.dtype):
    """The scalar type TF's ApplyAdam computes in for a variable of ``dtype``: float64 for
    float64, float32 otherwise (srn-port's float32 kernel for every other dtype)."""
    return np.float64 if dtype == torch.float64 else np.float32


class TFAdam(torch.optim.Optimizer):
    """Adam with TF's update rule. ``beta1_power``/``beta2_power`` (float32 scalars shared
    by all parameters, as TF's, for float32 and float64 parameters alike) start at
    beta1/beta2; the slots ``m``/``v`` are TF's ``/Adam`` and ``/Adam_1``. The update of a
    float64 parameter is computed in float64 (see the module's docstring). ``lr`` may be
    changed between steps (a schedule)."""

    def __init__(self, params: Iterable, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr >= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or not eps >= 0:
            raise ValueError(f"invalid TFAdam settings lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))
        b1, b2 = (np.float32(b) for b in self.defaults["betas"])
        self.beta1_power = np.float32(b1)
        self.beta2_power = np.float32(b2)

    def state_dict(self):
        out = super().state_dict()
        out["tf_beta_powers"] = [float(self.beta1_power), float(self.beta2_power)]
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        powers = state_dict.pop("tf_beta_powers", None)
        super().load_state_dict(state_dict)
        if powers is not None:
            self.beta1_power, self.beta2_power = (np.float32(p) for p in powers)

    def load_tf_state(self, named_params, adam: dict) -> None:
        """Take over a TF run's Adam state (:func:`srn_port.core.convert.read_adam_state`):
        the ``/Adam`` and ``/Adam_1`` slots of every parameter (``named_params``: name ->
        parameter, e.g. ``dict(model.named_parameters())``) and the beta powers, so that the
        next step is the one TF would have taken."""
        named_params = dict(named_params)
        for key in ("m", "v"):
            unknown = sorted(set(adam[key]) - set(named_params))
            lacking = sorted(set(named_params) - set(adam[key]))
            if unknown or lacking:
                raise ValueError(f"the Adam '{key}' slots do not match the parameters: missing "
                                 f"{lacking[:5]}, unknown {unknown[:5]}")
        for name, p in named_params.items():
            state = self.state[p]
            for key in ("m", "v"):
                slot = torch.as_tensor(adam[key][name], dtype=p.dtype, device=p.device)
                if slot.shape != p.shape:
                    raise ValueError(f"the Adam '{key}' slot of {name} has shape "
                                     f"{tuple(slot.shape)}, the parameter {tuple(p.shape)}")
                state[key] = torch.empty_like(p).copy_(slot)  # in the parameter's layout
        self.beta1_power = np.float32(adam["beta1_power"])
        self.beta2_power = np.float32(adam["beta2_power"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        b1p, b2p = self.beta1_power, self.beta2_power
        for group in self.param_groups:
            scalars = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                f = _kernel_scalar(p.dtype)
                if f not in scalars:
                    # TF's float32 tensors cast to the variable's dtype, then the kernel's
                    # scalar arithmetic in that dtype (float32 for float32 variables)
                    b1, b2 = (f(np.float32(b)) for b in group["betas"])
                    one = f(1.0)
                    alpha = f(f(np.float32(group["lr"])) * np.sqrt(one - f(b2p))) / (one - f(b1p))
                    scalars[f] = one - b1, one - b2, f(np.float32(group["eps"])), alpha
                c1, c2, eps, alpha = scalars[f]
                g = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["m"], state["v"]
                m.add_((g - m) * float(c1))
                v.add_((g * g - v) * float(c2))
                p.sub_((m * float(alpha)) / (v.sqrt() + float(eps)))
        # TF's _finish: the shared powers advance once per step (after all variables).
        b1, b2 = (np.float32(b) for b in self.param_groups[0]["betas"])
        self.beta1_power = np.float32(b1p * b1)
        self.beta2_power = np.float32(b2p * b2)
        return loss


def tf_polynomial_decay(step: int, learning_rate: float = 1e-4, decay_steps: int = 1,
                        end_learning_rate: float = 0.0, power: float = 0.3) -> float:
    """``tf.compat.v1.train.polynomial_decay`` (cycle=False) in float32, as TF computes it:
    ``(lr - end) * (1 - min(step, decay_steps) / decay_steps) ** power + end``. The original
    trains with lr 1e-4, end 0, power 0.3 over the run's steps.

    The division is a multiplication by the float32 reciprocal, as in TF's session: its graph
    optimizer (Grappler) rewrites a division by a constant (``decay_steps``) that way. A true
    division rounds ``p`` differently at some steps, which ``1 - p`` amplifies near the end
    of a long run (measured 3.1e-3 relative in the rate at step 523097 of 523100).

    The float32 power is taken in float64 and rounded once, which gives the correctly rounded
    float32 result, as TF's kernel (the C library's ``powf``) does. numpy's own float32
    ``power`` is not correctly rounded: with numpy 2.4 it was one unit in the last place off
    TF's at 45 of 388 steps tested (tests/test_train_tf.py), and its SIMD code differs between
    CPU kinds."""
    if decay_steps < 1:
        raise ValueError(f"decay_steps must be positive, got {decay_steps}")
    f = np.float32
    p = f(min(step, decay_steps)) * (f(1) / f(decay_steps))
    powed = f(np.power(np.float64(f(1) - p), np.float64(f(power))))
    return float((f(learning_rate) - f(end_learning_rate)) * powed + f(end_learning_rate))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, groups: Optional[list] = None) -> None:
    """Set the learning rate of every parameter group (or of ``groups``)."""
    for g in groups if groups is not None else optimizer.param_groups:
        g["lr"] = lr

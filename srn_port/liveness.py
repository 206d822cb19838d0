"""Dead layers: variables that training cannot move, found statically or by their gradient.

A layer followed by a ReLU whose weights are all 0 and whose biases are all <= 0 outputs 0
everywhere, and TF's ReluGrad (like PyTorch's) passes ``grad * (y > 0)``: at 0 nothing. So
the layer itself never receives a gradient, and neither does anything that reaches the
output only through it. The first trained example checkpoint was made that way: its
``dec1_4`` (weights and bias) started at 0 and stayed 0, and 56 of its 84 variables (every
``enc2_*``, ``enc3_*``, ``dec3_*``, ``dec2_*`` and ``dec1_4``) never trained.

* :func:`zero_relu_layers`: the static check (numpy only, cheap; ``srn-port inspect`` runs it).
* :func:`dead_variables`: the exact check, the gradient of every parameter under the
  original training loss (:func:`training_loss`) on given pairs (needs torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Sequence, Tuple

import numpy as np

from .config import N_LEVELS

#: The single conv/deconv layers of g_net with a ReLU after them (the 'conv' and 'deconv'
#: nodes of srn_port.model.level_graph); besides these, ``conv1`` of every ResnetBlock.
#: Not here: dec1_0 and ``conv2`` of a block (linear) and the ConvLSTM's conv (sigmoid and
#: tanh): a zero there still passes gradients.
RELU_LAYERS = ("enc1_1", "enc2_1", "enc3_1", "dec2_4", "dec1_4")
RESBLOCK_RELU_CONV = "conv1"
#: ConvTranspose2d weights are [in, out, kh, kw]; Conv2d weights [out, in, kh, kw].
DECONV_LAYERS = ("dec2_4", "dec1_4")


@dataclass(frozen=True)
class ZeroReluLayer:
    """A ReLU layer with output channels that are 0 for every input."""

    layer: str  # PyTorch module name, e.g. "dec1_4" or "enc2_3.conv1"
    dead_channels: int
    channels: int

    @property
    def all_dead(self) -> bool:
        return self.dead_channels == self.channels


def is_relu_layer(layer: str) -> bool:
    """Whether module ``layer`` (PyTorch name) is followed by a ReLU in g_net."""
    return layer in RELU_LAYERS or layer.rsplit(".", 1)[-1] == RESBLOCK_RELU_CONV


def zero_relu_layers(arrays: Mapping[str, np.ndarray]) -> List[ZeroReluLayer]:
    """ReLU layers of a converted model (PyTorch names and layout, e.g.
    :attr:`srn_port.convert.Conversion.arrays`) with output channels whose weights are all
    exactly 0 and whose bias is <= 0: their pre-activation is <= 0 for every input, so the
    ReLU passes no value and no gradient. In model order; empty when there are none."""
    found = []
    for name in arrays:
        layer, _, kind = name.rpartition(".")
        if kind != "weight" or not is_relu_layer(layer) or f"{layer}.bias" not in arrays:
            continue
        weight = np.asarray(arrays[name])
        bias = np.asarray(arrays[f"{layer}.bias"])
        out_axis = 1 if layer in DECONV_LAYERS else 0
        per_channel = np.moveaxis(weight, out_axis, 0).reshape(weight.shape[out_axis], -1)
        dead = np.all(per_channel == 0, axis=1) & (bias <= 0)
        if dead.any():
            found.append(ZeroReluLayer(layer, int(dead.sum()), int(dead.size)))
    return found


def level_outputs_for_training(model, x) -> list:
    """The three level outputs as the original's training graph computes them: like
    ``model(x)``, but the previous level's prediction enters the next level through
    ``tf.stop_gradient`` (detached). The ConvLSTM state is not detached, as in the original."""
    from .model import OUTPUT_NODE, STATE_NODE

    model.check_input(x)
    x = x.contiguous(memory_format=model.memory_format)
    outputs = []
    feeds = {"input": x, "prev_output": x, "prev_state": model.initial_state(x)}
    for level in range(N_LEVELS):
        if feeds["prev_state"] is None:
            del feeds["prev_state"]
        result = model.run_level(level, feeds)
        outputs.append(result[OUTPUT_NODE])
        feeds = {"input": x, "prev_output": result[OUTPUT_NODE].detach(),
                 "prev_state": result.get(STATE_NODE)}
    return outputs


def training_loss(model, blur, sharp):
    """The original's training loss: the sum over the 3 levels of the mean squared error
    against ``sharp`` resized (TF1 legacy bilinear) to that level's size. ``blur`` and
    ``sharp``: NCHW float tensors in [0, 1], as the model's input."""
    from .ops import tf_resize_bilinear

    total = 0
    for out in level_outputs_for_training(model, blur):
        target = tf_resize_bilinear(sharp, tuple(out.shape[-2:]))
        total = total + ((target - out) ** 2).mean()
    return total


def dead_variables(model, blur, sharp) -> List[str]:
    """Names of ``model``'s parameters whose gradient of :func:`training_loss` on
    (``blur``, ``sharp``) is exactly 0 in every element (or absent), in model order.

    The model's parameters' ``.grad`` are left as they were."""
    # torch is imported here, not at the top, so that the static check above (and
    # `srn-port inspect`, which runs it) stays free of torch.
    import torch

    params: Sequence[Tuple[str, torch.nn.Parameter]] = list(model.named_parameters())
    grads = torch.autograd.grad(training_loss(model, blur, sharp), [p for _, p in params],
                                allow_unused=True)
    return [name for (name, _), g in zip(params, grads)
            if g is None or not bool(torch.any(g != 0))]

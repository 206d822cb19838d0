"""Dead layers: variables that training cannot move, found statically or by their gradient.

A layer followed by a ReLU whose weights are all 0 and whose biases are all <= 0 outputs 0
everywhere, and TF's ReluGrad (like PyTorch's) passes ``grad * (y > 0)``: at 0 nothing. So
the layer itself never receives a gradient, and neither does anything that reaches the
output only through it. The first trained example checkpoint was made that way: its
``dec1_4`` (weights and bias) started at 0 and stayed 0, and 56 of its 84 variables (every
``enc2_*``, ``enc3_*``, ``dec3_*``, ``dec2_*`` and ``dec1_4``) never trained.

* :func:`zero_relu_layers` (here, numpy only, cheap; ``srn-port inspect`` runs it).
* :func:`srn_port.nn.liveness.dead_variables`: the exact check, the gradient of every
  parameter under the original training loss on given pairs (torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping

import numpy as np

from .network import SRNConfig, level_graph

_GRAPH = level_graph(SRNConfig("lstm", 1))  # every layer of every variant
#: The single conv/deconv layers of g_net with a ReLU after them (the graph's 'conv' and
#: 'deconv' nodes); besides these, ``conv1`` of every ResnetBlock. Not here: dec1_0 and
#: ``conv2`` of a block (linear) and the ConvLSTM's conv (sigmoid and tanh): a zero there
#: still passes gradients.
RELU_LAYERS = tuple(n.module for n in _GRAPH if n.op in ("conv", "deconv"))
RESBLOCK_RELU_CONV = "conv1"
#: ConvTranspose2d weights are [in, out, kh, kw]; Conv2d weights [out, in, kh, kw].
DECONV_LAYERS = tuple(n.module for n in _GRAPH if n.op == "deconv")


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
    :attr:`srn_port.core.convert.Conversion.arrays`) with output channels whose weights are all
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

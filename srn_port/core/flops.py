"""Arithmetic of one forward: the floating-point operations of SRN's convolutions.

Counted as PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` counts them (and as GPU
peak figures are quoted): 2 per multiply-accumulate of every convolution and transposed
convolution, nothing for biases, activations, resizes, the ConvLSTM's gates or the skip
sums (< 1% of the total). For a transposed convolution the count runs over its input
positions (each input pixel is multiplied by the whole kernel). tests/test_flops.py checks
this count against FlopCounterMode on the model's actual forward.
"""

from __future__ import annotations

from typing import Dict, Tuple

from .network import N_LEVELS, SRNConfig, level_graph, level_size


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def level_flops(config: SRNConfig, height: int, width: int, level: int) -> Dict[str, int]:
    """FLOPs of each parametric node of one pyramid level for one sample (batch 1) of an
    ``height`` x ``width`` input."""
    h, w = level_size(height, width, level)
    sizes: Dict[str, Tuple[int, int]] = {"input": (h, w), "prev_output": (h, w)}
    out: Dict[str, int] = {}
    for node in level_graph(config):
        if node.op in ("resize",):
            sizes[node.name] = (h, w)
            continue
        if node.op == "resize_state":
            sizes[node.name] = (h // 4, w // 4)
            continue
        ih, iw = sizes[node.inputs[0]]
        k2 = node.ksize * node.ksize
        if node.op in ("conv", "conv_linear"):
            oh, ow = _ceil_div(ih, node.stride), _ceil_div(iw, node.stride)
            out[node.name] = 2 * oh * ow * node.cin * node.cout * k2
        elif node.op == "resblock":
            oh, ow = ih, iw
            out[node.name] = 2 * (2 * oh * ow * node.cin * node.cout * k2)
        elif node.op == "deconv":
            oh, ow = ih * node.stride, iw * node.stride
            out[node.name] = 2 * ih * iw * node.cin * node.cout * k2
        elif node.op == "lstm":
            oh, ow = ih, iw  # one conv over concat([x, h]) to the four gates
            out[node.name] = 2 * oh * ow * (node.cin + node.cout) * (4 * node.cout) * k2
        else:  # concat, add, lstm_h: the size of their first input
            oh, ow = ih, iw
        sizes[node.name] = (oh, ow)
    return out


def forward_flops(config: SRNConfig, height: int, width: int, batch: int = 1) -> int:
    """FLOPs of one forward of ``batch`` samples of ``height`` x ``width`` (all three
    levels). A frame of a gray or lstm model is three samples (its R, G, B planes)."""
    return batch * sum(sum(level_flops(config, height, width, lv).values())
                       for lv in range(N_LEVELS))


def frame_flops(config: SRNConfig, height: int, width: int) -> int:
    """FLOPs to deblur one RGB frame: one sample for color, three planes for gray/lstm."""
    return forward_flops(config, height, width, 1 if config.channels == 3 else 3)

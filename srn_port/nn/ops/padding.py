"""TensorFlow 'SAME' padding, computed from the actual input size.

Mirrors ``GetWindowedOutputSizeVerbose`` in tensorflow/core/framework/kernel_shape_util.cc
(docs/tf-numerics.md §1.1): the output size is ``ceil(I / S)`` and the total padding
``max(0, (O - 1) * S + K_eff - I)`` is split with the odd pixel at the *end*
(bottom/right). PyTorch's ``padding=p`` is symmetric, so it only matches TF where the
split happens to be even: always for stride 1 with an odd effective kernel, and for
stride 2 only on some input parities.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def same_padding(in_size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Tuple[int, int]:
    """(pad_before, pad_after) that TF 'SAME' applies to one spatial axis."""
    k_eff = (kernel - 1) * dilation + 1
    out = -(-in_size // stride)  # ceil(I / S): TF's SAME output size, independent of K
    total = max(0, (out - 1) * stride + k_eff - in_size)
    before = total // 2
    return before, total - before


def is_static_same(kernel: int, stride: int = 1, dilation: int = 1) -> bool:
    """True when 'SAME' pads both sides equally for *every* input size.

    Only then can the padding be folded into the convolution as a constant; with
    stride 1 the total is K_eff - 1, symmetric iff K_eff is odd. With stride > 1 the
    split depends on the input size (e.g. 5x5 stride 2: (1, 2) on even, (2, 2) on odd).
    """
    k_eff = (kernel - 1) * dilation + 1
    return stride == 1 and k_eff % 2 == 1


def pad_same(
    x: torch.Tensor,
    kernel: Tuple[int, int],
    stride: Tuple[int, int] = (1, 1),
    dilation: Tuple[int, int] = (1, 1),
) -> torch.Tensor:
    """Zero-pad an NCHW tensor exactly as TF 'SAME' would before a VALID convolution."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))

"""Convolutions with TensorFlow 'SAME' semantics (forward and transposed).

The state_dict keys stay ``weight``/``bias`` (plain ``nn.Conv2d`` subclasses), so a
converted checkpoint loads into them like into any PyTorch convolution.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .padding import is_static_same, same_padding

IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` whose padding is TF 'SAME', worked out from each input's size.

    TF puts the odd padding pixel at the end, so where the split is uneven (e.g. 5x5
    stride 2 on an even size: 1 before, 2 after) the input is zero-padded explicitly;
    where it is even at this size, the padding is passed to the convolution itself.

    ``naive_padding = True`` reproduces what a hand port typically writes,
    ``nn.Conv2d(padding=k // 2)``; it exists only to demonstrate that failure mode
    (``srn-port diff --emulate torch-padding``).
    """

    naive_padding: bool = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, bias=True,
                 groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         dilation=dilation, groups=groups, bias=bias)

    def tf_padding(self, h: int, w: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """((top, bottom), (left, right)): TF's SAME padding for an input of h x w."""
        return (same_padding(h, self.kernel_size[0], self.stride[0], self.dilation[0]),
                same_padding(w, self.kernel_size[1], self.stride[1], self.dilation[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.naive_padding:
            pad = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
            return F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)
        pad_h, pad_w = self.tf_padding(x.shape[-2], x.shape[-1])
        if pad_h[0] == pad_h[1] and pad_w[0] == pad_w[1]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h[0], pad_w[0]),
                            self.dilation, self.groups)
        x = F.pad(x, (pad_w[0], pad_w[1], pad_h[0], pad_h[1]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def create_conv2d_same(in_channels: int, out_channels: int, kernel_size: IntPair,
                       stride: IntPair = 1, dilation: IntPair = 1, bias: bool = True) -> nn.Conv2d:
    """A TF-'SAME' convolution: static symmetric padding where TF's is always symmetric
    (stride 1, odd effective kernel), the size-dependent ``Conv2dSame`` elsewhere."""
    k, s, d = _pair(kernel_size), _pair(stride), _pair(dilation)
    if all(is_static_same(k[i], s[i], d[i]) for i in (0, 1)):
        pad = tuple(((k[i] - 1) * d[i]) // 2 for i in (0, 1))
        return nn.Conv2d(in_channels, out_channels, k, stride=s, padding=pad, dilation=d, bias=bias)
    return Conv2dSame(in_channels, out_channels, k, stride=s, dilation=d, bias=bias)


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """TF ``conv2d_transpose`` with padding 'SAME' and tf-slim's output size ``I * S``.

    TF's result is the "full" transposed convolution cropped by the SAME padding of the
    forward conv from the output size back to the input size, ``pad_before`` at the
    start and the larger ``pad_after`` at the end (docs/tf-numerics.md §1.3).
    PyTorch's ``padding=P`` crops ``P`` from both ends, so it is exact when the total is
    even (SRN's 4x4 stride 2: P = 1); for an odd total it crops ``pad_before`` and the
    extra row/column is sliced off here. Weight layout ``[in, out, kh, kw]``; the TF
    kernel ``[kh, kw, out, in]`` converts with ``permute(3, 2, 0, 1)``, no flip.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("ConvTranspose2dSame always produces TF's SAME size, input * stride")
        out = [x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]]
        pad, out_pad, crop = [], [], False
        for axis in (0, 1):
            k_eff = (self.kernel_size[axis] - 1) * self.dilation[axis] + 1
            full = (x.shape[-2 + axis] - 1) * self.stride[axis] + k_eff
            before, _ = same_padding(out[axis], self.kernel_size[axis], self.stride[axis],
                                     self.dilation[axis])
            extra = out[axis] - (full - 2 * before)  # >0: TF zero-extends; <0: crop the end
            pad.append(before)
            out_pad.append(max(extra, 0))
            crop |= extra < 0
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, tuple(pad),
                               tuple(out_pad), self.groups, self.dilation)
        return y[..., : out[0], : out[1]] if crop else y

"""Reuse of activation memory within one inference forward (CPU, oneDNN).

Why: PyTorch's CPU allocator takes every large tensor from the operating system (glibc
``mmap``) and gives it back when the tensor is freed, so each full-resolution activation
of a forward starts as fresh pages that the kernel faults in and zeroes on first write.
At 720x1280 with a batch of 3 (``gray``) that is about 12 GB of fresh pages, 3 million
page faults and several seconds of system CPU time per forward. TensorFlow with oneDNN
keeps its buffers in a pool of its own (tens of page faults per forward). The numbers,
per CPU kind, are printed by ``tools/bench.py`` (columns "faults" and "sys s").

What: a pool, made for one forward and dropped at its end (nothing is kept between
calls), takes back the storage of every activation at its last use and hands it to the
next convolution whose output fits. PyTorch's convolution has no ``out=`` argument, but
oneDNN's fused convolution (``torch.ops.mkldnn._convolution_pointwise_``, the op that
TorchInductor emits on CPU) computes ``conv(x) + other`` into ``other``. So a convolution
writes into a pooled buffer that was zero-filled (a user-space pass over memory that is
already mapped, instead of a page fault per 4 KiB), and the second convolution of a
ResnetBlock adds the block's input in the same pass, into the input's own buffer. The
bias is added before the sum and the ReLU after it, as in the unfused graph, so the
arithmetic is the same (the tests compare both paths; bit-identical where measured).

Used only where it applies: no autograd, no autocast, float32, NHWC (channels_last) on the CPU, a
oneDNN build, no activation capture, no emulation of naive ports, and not while tracing
or exporting (an exported graph keeps the portable ops).
"""

from __future__ import annotations

from math import prod
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .ops.conv import Conv2dSame

Shape = Tuple[int, ...]

#: New pool buffers get this much room beyond the request, so that the zero-padded input
#: of a stride-2 convolution (a few rows and columns larger) fits a freed activation.
SLACK = 1 / 64


def fused_conv_available() -> bool:
    """True when this torch has oneDNN and its in-place fused convolution op."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise_.binary
    except (AttributeError, RuntimeError):
        return False
    return True


def _nhwc_strides(shape: Shape) -> Shape:
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


class ActivationPool:
    """Free float32 buffers of one forward, handed out as NHWC tensors of any shape that
    fits (smallest first). Only storages it allocated are ever taken back."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self._free: List[torch.Tensor] = []  # 1-D base tensors, not in use
        self._owned: Dict[int, torch.Tensor] = {}  # storage pointer -> base tensor
        self.allocated = 0  # elements allocated from the system by this pool

    def take(self, shape: Shape) -> torch.Tensor:
        """An uninitialised NHWC tensor of ``shape`` on a free (or new) buffer."""
        n = prod(shape)
        # Activations shrink through an encoder and grow through a decoder: a free buffer
        # smaller than this request is released now rather than held to the end.
        self.release(below=n)
        if self._free:
            base = self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].numel()))
        else:
            base = torch.empty(n + int(n * SLACK), dtype=self.dtype)
            self._owned[base.untyped_storage().data_ptr()] = base
            self.allocated += base.numel()
        return base.as_strided(shape, _nhwc_strides(shape))

    def release(self, below: Optional[int] = None) -> None:
        """Hand the free buffers (those of fewer than ``below`` elements) back to the
        system: before an op whose output cannot be placed in the pool, so that its memory
        is not counted twice, or when they are too small for what is asked now."""
        keep = []
        for b in self._free:
            if below is None or b.numel() < below:
                del self._owned[b.untyped_storage().data_ptr()]
            else:
                keep.append(b)
        self._free = keep

    def owns(self, t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self._owned

    def give(self, t: torch.Tensor, live: Sequence[torch.Tensor] = ()) -> None:
        """Take back ``t``'s buffer, unless the pool did not make it or a tensor of
        ``live`` still uses it."""
        ptr = t.untyped_storage().data_ptr()
        base = self._owned.get(ptr)
        if base is None or any(o.untyped_storage().data_ptr() == ptr for o in live):
            return
        if all(b is not base for b in self._free):
            self._free.append(base)


def _conv_padding(conv: nn.Conv2d, h: int, w: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding the layer applies at this input size."""
    if isinstance(conv, Conv2dSame):
        return conv.tf_padding(h, w)
    ph, pw = conv.padding
    return (ph, ph), (pw, pw)


def conv_into(pool: ActivationPool, conv: nn.Conv2d, x: torch.Tensor, relu: bool,
              into: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x) + into`` (ReLU'd if ``relu``), written into ``into``; without ``into``,
    ``conv(x)`` into a zero-filled buffer of the pool."""
    n, _, h, w = x.shape
    (top, bottom), (left, right) = _conv_padding(conv, h, w)
    padded = None
    if top != bottom or left != right:  # TF's odd pixel at the end: pad into a pooled buffer
        padded = pool.take((n, x.shape[1], h + top + bottom, w + left + right))
        padded[:, :, :top].zero_()
        padded[:, :, top + h:].zero_()
        padded[:, :, top:top + h, :left].zero_()
        padded[:, :, top:top + h, left + w:].zero_()
        padded[:, :, top:top + h, left:left + w].copy_(x)
        x, h, w, top, left = padded, h + top + bottom, w + left + right, 0, 0
    kh, kw = conv.kernel_size
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    out_shape = (n, conv.out_channels, (h + 2 * top - dh * (kh - 1) - 1) // sh + 1,
                 (w + 2 * left - dw * (kw - 1) - 1) // sw + 1)
    if into is None:
        into = pool.take(out_shape).zero_()
    elif tuple(into.shape) != out_shape:
        raise AssertionError(f"conv_into: {tuple(into.shape)} != {out_shape}")
    torch.ops.mkldnn._convolution_pointwise_.binary(
        into, x, conv.weight, conv.bias, [top, left], [sh, sw], [dh, dw], conv.groups,
        "add", None, "relu" if relu else None, [], None)
    if padded is not None:
        pool.give(padded)
    return into

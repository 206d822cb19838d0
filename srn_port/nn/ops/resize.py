"""TensorFlow's CPU bilinear resize, bit for bit.

Reproduces ``ResizeBilinear`` (tensorflow/core/kernels/image/resize_bilinear_op.cc with
tensorflow/core/util/image_resizer_state.h) as docs/tf-numerics.md §2.1 spells it out:
scale, source coordinate and interpolation weight in float32; both neighbour indices
clamped; the blend ``top = TL + (TR - TL) * xlerp`` etc. as separate float32 operations.
Measured: max abs difference 0 against TF 2.21 CPU in all three sampling modes
(tests/test_ops_tf.py). ``F.interpolate`` cannot do this: TF1's default ("legacy",
``src = dst * in / out``) matches neither of its ``align_corners`` modes (differences up
to 0.7 on [0, 1] data), and its arithmetic (``l0 * a + l1 * b``) differs in the last bit
even where the sampling grid is the same.

Do not rewrite the blend with ``torch.lerp``/``addcmul`` or compile it: fused
multiply-adds change the rounding (measured up to 6e-8 per element).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple

import numpy as np
import torch


@lru_cache(maxsize=256)
def _axis_weights(in_size: int, out_size: int, align_corners: bool,
                  half_pixel_centers: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and float32 weight for each output position of one axis."""
    f32 = np.float32
    if align_corners and in_size > 1 and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    i = np.arange(out_size, dtype=f32)
    if half_pixel_centers:
        src = (i + f32(0.5)) * scale - f32(0.5)
    else:  # TF1 "legacy" sampling, used for both align_corners settings
        src = i * scale
    src = src.astype(f32)
    floor = np.floor(src)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    lerp = (src - floor).astype(f32)
    return lower, upper, lerp


def _axis_weights_traced(in_size, out_size, align_corners: bool, half_pixel_centers: bool,
                         device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_axis_weights` in torch ops, for sizes that are symbolic (``torch.export``,
    ONNX): the same float32 arithmetic, so the same indices and weights."""
    f32 = torch.float32
    i = torch.arange(out_size, device=device, dtype=torch.int64).to(f32)
    if align_corners:
        # in > 1 and out > 1 in every use here (SRN's sizes are multiples of 4)
        scale = (torch.full((), in_size - 1, device=device, dtype=torch.int64).to(f32)
                 / torch.full((), out_size - 1, device=device, dtype=torch.int64).to(f32))
    else:
        scale = (torch.full((), in_size, device=device, dtype=torch.int64).to(f32)
                 / torch.full((), out_size, device=device, dtype=torch.int64).to(f32))
    src = (i + 0.5) * scale - 0.5 if half_pixel_centers else i * scale
    floor = torch.floor(src)
    lower = floor.to(torch.int64).clamp(min=0)
    upper = torch.minimum(torch.ceil(src).to(torch.int64),
                          torch.full((), in_size - 1, device=device, dtype=torch.int64))
    return lower, upper, src - floor


def _is_symbolic(*sizes) -> bool:
    return any(not isinstance(v, int) for v in sizes)


def tf_resize_bilinear(x: torch.Tensor, size: Sequence[int], align_corners: bool = False,
                       half_pixel_centers: bool = False) -> torch.Tensor:
    """Resize an NCHW tensor like ``tf.compat.v1.image.resize_bilinear`` on the CPU.

    The defaults are TF1's ``resize_images(method=0)``, the resize SRN-Deblur uses;
    ``half_pixel_centers=True`` is TF2's ``tf.image.resize(method='bilinear')``.
    The result is float32 whatever the input dtype, as in TF. A same-size resize returns
    the input converted to float32 with no arithmetic, as TF does.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"tf_resize_bilinear expects a 4-D NCHW tensor, got {shape}")
    if half_pixel_centers and align_corners:
        raise ValueError("half_pixel_centers=True requires align_corners=False (as in TF)")
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {tuple(size)!r}")
    out_h, out_w = size
    in_h, in_w = x.shape[-2], x.shape[-1]
    symbolic = _is_symbolic(out_h, out_w, in_h, in_w)  # traced for export
    if not symbolic:
        out_h, out_w = int(out_h), int(out_w)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"output size must be positive, got {out_h}x{out_w}")
        if in_h <= 0 or in_w <= 0:
            raise ValueError(f"input size must be positive, got {in_h}x{in_w}")
    x = x.float()
    if in_h == out_h and in_w == out_w:
        return x

    dev = x.device
    if symbolic:
        ly, uy, wy = _axis_weights_traced(in_h, out_h, align_corners, half_pixel_centers, dev)
        lx, ux, wx = _axis_weights_traced(in_w, out_w, align_corners, half_pixel_centers, dev)
    else:
        ly, uy, wy = (torch.from_numpy(a).to(dev)
                      for a in _axis_weights(in_h, out_h, align_corners, half_pixel_centers))
        lx, ux, wx = (torch.from_numpy(a).to(dev)
                      for a in _axis_weights(in_w, out_w, align_corners, half_pixel_centers))
    # Work on whichever view has the channels innermost in memory: gathering columns of an
    # NCHW tensor is a strided gather (slow), of an NHWC one a copy of C-long runs. The
    # arithmetic per element is the same either way.
    nhwc = x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
    if nhwc:
        x = x.permute(0, 2, 3, 1)
        rows, cols = 1, 2
        wx, wy = wx.view(1, 1, -1, 1), wy.view(1, -1, 1, 1)
    else:
        rows, cols = 2, 3
        wx, wy = wx.view(1, 1, 1, -1), wy.view(1, 1, -1, 1)
    if out_h >= in_h:
        # Upsampling rows: blend horizontally once per *input* row, then pick rows. TF's
        # top = TL + (TR - TL) * xlerp depends only on (source row, output column), so
        # top[i] == blended[lower_y[i]] exactly, and the input has fewer rows.
        left, right = x.index_select(cols, lx), x.index_select(cols, ux)
        blended = right.sub_(left).mul_(wx).add_(left)  # left + (right - left) * wx
        top, bottom = blended.index_select(rows, ly), blended.index_select(rows, uy)
    else:
        top_rows, bottom_rows = x.index_select(rows, ly), x.index_select(rows, uy)
        tl, tr = top_rows.index_select(cols, lx), top_rows.index_select(cols, ux)
        bl, br = bottom_rows.index_select(cols, lx), bottom_rows.index_select(cols, ux)
        top = tr.sub_(tl).mul_(wx).add_(tl)  # tl + (tr - tl) * wx
        bottom = br.sub_(bl).mul_(wx).add_(bl)
    # In place on fresh tensors: the same three float32 operations (addition commutes
    # exactly), without allocating a temporary per step.
    out = bottom.sub_(top).mul_(wy).add_(top)  # top + (bottom - top) * wy
    return out.permute(0, 3, 1, 2) if nhwc else out


def tf_resize_images(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """TF1's ``tf.image.resize_images(x, size, method=0)``, the resize SRN-Deblur calls:
    :func:`tf_resize_bilinear` with the result in ``x``'s dtype, and no resize at all where
    the size already matches (TF skips the op there, so a float64 input keeps its float64
    values; through the kernel it would be rounded to float32). For float32 and narrower
    dtypes the two are the same values; sizes traced for export take the kernel path."""
    h, w = x.shape[-2], x.shape[-1]
    if len(size) == 2 and not _is_symbolic(h, w, *size) and h == size[0] and w == size[1]:
        return x
    return tf_resize_bilinear(x, size).to(x.dtype)

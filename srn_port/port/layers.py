"""TF-exact layers for porting any TF1 / tf-slim network (NCHW tensors, TF's arithmetic).

Each layer computes what its TF op computes, including the parts a hand port usually gets
wrong (docs/porting.md lists them): 'SAME' padding that puts the odd pixel *after*
(:mod:`srn_port.nn.ops.padding`, shared with SRN's layers), average pooling that divides
by the number of real pixels in each window, slim's ``batch_norm`` (epsilon 0.001, no
``gamma`` by default, moving statistics), TF1's resize sampling and ``fully_connected``
on features flattened in NHWC order.

Every layer declares ``TF_LEAVES``: the TF variable names it owns inside its scope
(``weights``, ``biases``, ``BatchNorm/beta`` ...), the attribute each fills and the layout
transform (:data:`srn_port.port.mapping.LAYOUTS`), so that a checkpoint maps onto a module
tree by scope alone (:func:`srn_port.port.mapping.convert`).

A few attributes reproduce the classic porting mistakes on purpose (``naive_padding``,
``count_include_pad``, ``eps``, ``flatten_order``): the tests and ``docs/porting.md`` use
them to show that :func:`srn_port.port.compare.compare` finds and names each one.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn.ops.conv import Conv2dSame, ConvTranspose2dSame
from ..nn.ops.padding import same_padding
from ..nn.ops.resize import tf_resize_bilinear

IntPair = Union[int, Tuple[int, int]]
#: 'SAME', 'VALID', or explicit ((top, bottom), (left, right)) zero padding followed by a
#: VALID op (what tf-slim's ``resnet_utils.conv2d_same`` does for strides > 1).
Padding = Union[str, Tuple[Tuple[int, int], Tuple[int, int]]]
#: TF variable leaf name -> (module attribute, layout name in mapping.LAYOUTS)
Leaves = Dict[str, Tuple[str, str]]

#: slim.batch_norm's default epsilon (tf_slim/layers/layers.py: epsilon=0.001).
SLIM_BN_EPSILON = 0.001


def _pair(v: IntPair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_padding(padding: Padding) -> Padding:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)),"
                             f" got {padding!r}")
        return padding.upper()
    (t, b), (l, r) = padding
    return ((int(t), int(b)), (int(l), int(r)))


def window_padding(padding: Padding, h: int, w: int, kernel: Tuple[int, int],
                   stride: Tuple[int, int], dilation: Tuple[int, int] = (1, 1)
                   ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((top, bottom), (left, right)) that TF applies for ``padding`` on an h x w input."""
    if padding == "SAME":
        return (same_padding(h, kernel[0], stride[0], dilation[0]),
                same_padding(w, kernel[1], stride[1], dilation[1]))
    if padding == "VALID":
        return ((0, 0), (0, 0))
    return padding  # explicit


def symmetric_padding(kernel: Tuple[int, int], dilation: Tuple[int, int] = (1, 1)
                      ) -> Tuple[int, int]:
    """What a hand port writes for 'SAME': PyTorch's ``padding=k // 2`` on both sides."""
    return (((kernel[0] - 1) * dilation[0] + 1) // 2, ((kernel[1] - 1) * dilation[1] + 1) // 2)


class Conv2d(Conv2dSame):
    """``tf.nn.conv2d`` / the convolution of ``slim.conv2d``: any kernel, stride, dilation
    (slim's ``rate``) and groups, padding 'SAME' (TF's split, from each input's size:
    :class:`srn_port.nn.ops.Conv2dSame`), 'VALID' or explicit. Weights ``weights``
    [kh, kw, in, out] -> ``weight`` [out, in, kh, kw]."""

    TF_LEAVES: Leaves = {"weights": ("weight", "conv"), "biases": ("bias", "vector")}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Padding = "SAME", dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, _pair(kernel_size), stride=_pair(stride),
                         dilation=_pair(dilation), bias=bias, groups=groups)
        self.tf_padding_mode = _check_padding(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding_mode == "SAME":
            return super().forward(x)  # TF's split; naive_padding emulates padding=k//2
        if self.naive_padding:
            pad = symmetric_padding(self.kernel_size, self.dilation)
            return F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation,
                            self.groups)
        if self.tf_padding_mode != "VALID":
            (t, b), (l, r) = self.tf_padding_mode
            x = F.pad(x, (l, r, t, b))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tf_padding={self.tf_padding_mode!r}"


class DepthwiseConv2d(Conv2d):
    """``tf.nn.depthwise_conv2d`` (slim ``separable_conv2d(num_outputs=None)``): output
    channel ``c * multiplier + m`` is input channel ``c`` filtered by its ``m``-th kernel, as
    in TF. Weights ``depthwise_weights`` [kh, kw, in, multiplier] -> [in * multiplier, 1,
    kh, kw]."""

    TF_LEAVES: Leaves = {"depthwise_weights": ("weight", "depthwise"),
                         "biases": ("bias", "vector")}

    def __init__(self, in_channels: int, kernel_size: IntPair, multiplier: int = 1,
                 stride: IntPair = 1, padding: Padding = "SAME", dilation: IntPair = 1,
                 bias: bool = False):
        super().__init__(in_channels, in_channels * multiplier, kernel_size, stride, padding,
                         dilation, groups=in_channels, bias=bias)


class ConvTranspose2d(ConvTranspose2dSame):
    """``tf.nn.conv2d_transpose`` / ``slim.conv2d_transpose``, padding 'SAME' (output
    ``I * S``, :class:`srn_port.nn.ops.ConvTranspose2dSame`) or 'VALID' (output
    ``I * S + max(K - S, 0)``: the full transposed convolution, zero-extended at the end
    where K < S). Weights ``weights`` [kh, kw, out, in] -> ``weight`` [in, out, kh, kw]."""

    TF_LEAVES: Leaves = {"weights": ("weight", "conv_transpose"),
                         "biases": ("bias", "vector")}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: str = "SAME", dilation: IntPair = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, _pair(kernel_size), stride=_pair(stride),
                         dilation=_pair(dilation), bias=bias)
        mode = _check_padding(padding)
        if mode not in ("SAME", "VALID"):
            raise ValueError("conv2d_transpose takes padding 'SAME' or 'VALID'")
        self.tf_padding_mode = mode

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.tf_padding_mode == "SAME":
            return super().forward(x, output_size)
        extra = []
        for axis in (0, 1):
            k_eff = (self.kernel_size[axis] - 1) * self.dilation[axis] + 1
            extra.append(max(self.stride[axis] - k_eff, 0))
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, 0, 0, self.groups,
                               self.dilation)
        if any(extra):  # TF's VALID size I*S + max(K - S, 0): zeros where no input reaches
            y = F.pad(y, (0, extra[1], 0, extra[0]))
            if self.bias is not None:  # the bias is added everywhere in TF
                b = self.bias.view(-1, 1, 1)
                y[..., y.shape[-2] - extra[0]:, :] = b
                y[..., :, y.shape[-1] - extra[1]:] = b
        return y


class _Pool2d(nn.Module):
    TF_LEAVES: Leaves = {}
    naive_padding: bool = False  # emulates nn.*Pool2d(padding=k // 2)

    def __init__(self, kernel_size: IntPair, stride: IntPair = 2, padding: Padding = "VALID"):
        super().__init__()
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = _check_padding(padding)

    def pads(self, h: int, w: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        if self.naive_padding and self.padding != "VALID":
            p = symmetric_padding(self.kernel_size)
            return ((p[0], p[0]), (p[1], p[1]))
        return window_padding(self.padding, h, w, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"


class MaxPool2d(_Pool2d):
    """``tf.nn.max_pool`` / ``slim.max_pool2d`` (slim's default padding is 'VALID'); 'SAME'
    pads with -inf (padding never wins), the odd pixel after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (t, b), (l, r) = self.pads(x.shape[-2], x.shape[-1])
        if t or b or l or r:
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class AvgPool2d(_Pool2d):
    """``tf.nn.avg_pool`` / ``slim.avg_pool2d``: with 'SAME' padding each output is the mean
    of the *real* pixels in its window (TF does not count the padding; PyTorch's
    ``count_include_pad=True`` default does). ``count_include_pad = True`` emulates that
    mistake."""

    count_include_pad: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (t, b), (l, r) = self.pads(x.shape[-2], x.shape[-1])
        if not (t or b or l or r):
            return F.avg_pool2d(x, self.kernel_size, self.stride)
        total = F.avg_pool2d(F.pad(x, (l, r, t, b)), self.kernel_size, self.stride,
                             divisor_override=1)
        if self.count_include_pad:
            return total / (self.kernel_size[0] * self.kernel_size[1])
        ones = torch.ones((1, 1) + tuple(x.shape[-2:]), dtype=x.dtype, device=x.device)
        count = F.avg_pool2d(F.pad(ones, (l, r, t, b)), self.kernel_size, self.stride,
                             divisor_override=1)
        return total / count


class BatchNorm(nn.Module):
    """``slim.batch_norm`` (fused or not): ``center=True`` (``beta``), ``scale=False``
    (no ``gamma``, slim's default; pass ``scale=True`` where the net's arg_scope sets
    ``batch_norm_scale``), ``epsilon=0.001``, and at inference (``is_training=False``, the
    module in ``eval()``) the moving statistics: ``(x - moving_mean) * rsqrt(moving_variance
    + epsilon) * gamma + beta``. In ``train()`` the batch's statistics are used and the
    moving ones updated with slim's ``decay`` (0.999). Parameters and buffers carry TF's
    names, so the checkpoint maps one to one."""

    TF_LEAVES: Leaves = {"beta": ("beta", "vector"), "gamma": ("gamma", "vector"),
                         "moving_mean": ("moving_mean", "vector"),
                         "moving_variance": ("moving_variance", "vector")}

    def __init__(self, num_features: int, eps: float = SLIM_BN_EPSILON, scale: bool = False,
                 center: bool = True, decay: float = 0.999):
        super().__init__()
        self.num_features, self.eps, self.decay = num_features, float(eps), float(decay)
        self.beta = nn.Parameter(torch.zeros(num_features)) if center else None
        self.gamma = nn.Parameter(torch.ones(num_features)) if scale else None
        self.register_buffer("moving_mean", torch.zeros(num_features))
        self.register_buffer("moving_variance", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.batch_norm(x, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                                True, 1.0 - self.decay, self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        factor = torch.rsqrt(self.moving_variance + self.eps)
        if self.gamma is not None:
            factor = factor * self.gamma
        y = (x - self.moving_mean.view(shape)) * factor.view(shape)
        return y + self.beta.view(shape) if self.beta is not None else y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps:g}, scale={self.gamma is not None}, "
                f"center={self.beta is not None}")


class SlimConv2d(Conv2d):
    """``slim.conv2d``: the convolution, then ``normalizer_fn`` (a :class:`BatchNorm` under
    the child scope ``BatchNorm``, in which case there are no ``biases``), then
    ``activation_fn`` (ReLU by default; None for linear). Its output is the tensor slim
    records as the layer's end_point."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Padding = "SAME", dilation: IntPair = 1,
                 batch_norm: Optional[dict] = None, activation: Optional[nn.Module] = "relu"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias=batch_norm is None)
        self.BatchNorm = BatchNorm(out_channels, **batch_norm) if batch_norm is not None else None
        self.activation = nn.ReLU() if activation == "relu" else activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.BatchNorm is not None:
            y = self.BatchNorm(y)
        return self.activation(y) if self.activation is not None else y


class FullyConnected(nn.Linear):
    """``slim.fully_connected`` on ``slim.flatten``-ed NHWC features: a 4-D NCHW input is
    flattened in TF's (H, W, C) order, so the TF weights [H*W*C, out] apply unchanged
    (transposed). ``flatten_order = 'NCHW'`` emulates ``x.flatten(1)`` on the NCHW tensor,
    the classic mistake."""

    TF_LEAVES: Leaves = {"weights": ("weight", "fc"), "biases": ("bias", "vector")}
    flatten_order: str = "NHWC"

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: Optional[nn.Module] = "relu"):
        super().__init__(in_features, out_features, bias=bias)
        self.activation = nn.ReLU() if activation == "relu" else activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:
            x = (x.permute(0, 2, 3, 1) if self.flatten_order == "NHWC" else x).flatten(1)
        y = super().forward(x)
        return self.activation(y) if self.activation is not None else y


class Resize(nn.Module):
    """TF's image resize to a fixed ``size``, in its TF1 and TF2 conventions.

    ``method='bilinear'``: ``tf.compat.v1.image.resize_bilinear`` (``align_corners``,
    ``half_pixel_centers``; the default is TF1's legacy sampling ``src = dst * in / out``;
    TF2's ``tf.image.resize`` is ``half_pixel_centers=True``), bit for bit
    (:func:`srn_port.nn.ops.tf_resize_bilinear`). ``method='nearest'``:
    ``resize_nearest_neighbor`` with the same flags (TF1: ``floor(dst * scale)``,
    ``align_corners``: rounded, half-pixel: ``floor((dst + 0.5) * scale)``)."""

    TF_LEAVES: Leaves = {}

    def __init__(self, size: Sequence[int], method: str = "bilinear",
                 align_corners: bool = False, half_pixel_centers: bool = False):
        super().__init__()
        if method not in ("bilinear", "nearest"):
            raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}")
        self.size = (int(size[0]), int(size[1]))
        self.method, self.align_corners = method, align_corners
        self.half_pixel_centers = half_pixel_centers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "bilinear":
            return tf_resize_bilinear(x, self.size, self.align_corners, self.half_pixel_centers)
        idx = [_nearest_index(x.shape[-2 + a], self.size[a], self.align_corners,
                              self.half_pixel_centers, x.device) for a in (0, 1)]
        return x.index_select(-2, idx[0]).index_select(-1, idx[1])

    def extra_repr(self) -> str:
        return (f"size={self.size}, method={self.method!r}, align_corners={self.align_corners}, "
                f"half_pixel_centers={self.half_pixel_centers}")


def _nearest_index(in_size: int, out_size: int, align_corners: bool, half_pixel: bool,
                   device) -> torch.Tensor:
    f32 = torch.float32
    if align_corners and out_size > 1:
        scale = torch.tensor(in_size - 1, dtype=f32) / torch.tensor(out_size - 1, dtype=f32)
    else:
        scale = torch.tensor(in_size, dtype=f32) / torch.tensor(out_size, dtype=f32)
    i = torch.arange(out_size, dtype=f32)
    if half_pixel:
        src = torch.floor((i + 0.5) * scale)
    elif align_corners:  # C's roundf: halves away from zero (torch.round: to even)
        v = i * scale
        src = torch.where(v - torch.floor(v) == 0.5, torch.floor(v) + 1, torch.round(v))
    else:
        src = torch.floor(i * scale)
    return src.to(torch.int64).clamp(0, in_size - 1).to(device)


class Squeeze(nn.Module):
    """``tf.squeeze(x, [1, 2])`` on NHWC, i.e. the spatial axes (slim's SpatialSqueeze)."""

    TF_LEAVES: Leaves = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) if x.shape[-2:] == (1, 1) else x


class GlobalMean(nn.Module):
    """``tf.reduce_mean(x, [1, 2], keepdims=True)`` on NHWC (ResNet's pool5)."""

    TF_LEAVES: Leaves = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)

"""TF-exact layers, checked without TF: the padding arithmetic against the cases that
docs/tf-numerics.md §1.1 lists, and properties of TF's legacy resize (§2.1) that follow from its formula."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from srn_port.nn.ops import (ConvTranspose2dSame, Conv2dSame, create_conv2d_same, pad_same,
                          same_padding, tf_resize_bilinear, tf_resize_images)


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (64, 5, 2, (1, 2)),   # SRN's enc2_1/enc3_1 on an even input: the asymmetric case
    (63, 5, 2, (2, 2)),
    (8, 3, 2, (0, 1)), (7, 3, 2, (1, 1)),
    (8, 4, 2, (1, 1)), (7, 4, 2, (1, 2)),
    (10, 3, 1, (1, 1)), (10, 5, 1, (2, 2)), (10, 4, 1, (1, 2)), (10, 2, 1, (0, 1)),
    (1, 5, 2, (2, 2)),
])
def test_same_padding_matches_tf_table(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_same_padding_dilation_uses_effective_kernel():
    assert same_padding(10, 3, 1, dilation=2) == (2, 2)  # K_eff = 5


def test_factory_takes_static_path_only_where_tf_is_symmetric():
    assert type(create_conv2d_same(3, 4, 5)) is nn.Conv2d
    assert create_conv2d_same(3, 4, 5).padding == (2, 2)
    assert isinstance(create_conv2d_same(3, 4, 5, stride=2), Conv2dSame)
    assert isinstance(create_conv2d_same(3, 4, 4), Conv2dSame)


def test_stride2_conv_equals_explicit_tf_padding():
    torch.manual_seed(0)
    conv = create_conv2d_same(3, 4, 5, stride=2)
    for h, w in [(64, 64), (63, 64), (13, 6)]:
        x = torch.randn(2, 3, h, w)
        ref = nn.functional.conv2d(pad_same(x, (5, 5), (2, 2)), conv.weight, conv.bias, 2)
        assert torch.equal(conv(x), ref)
        assert conv(x).shape[-2:] == (-(-h // 2), -(-w // 2))


def test_naive_padding_is_the_one_pixel_shift():
    """nn.Conv2d(padding=2) on an even input equals TF's result shifted by one input pixel."""
    torch.manual_seed(0)
    conv = create_conv2d_same(1, 1, 5, stride=2)
    x = torch.randn(1, 1, 32, 32)
    tf_like = conv(x)
    conv.naive_padding = True
    naive = conv(x)
    assert naive.shape == tf_like.shape
    assert not torch.allclose(naive, tf_like, atol=1e-3)
    # TF pads (1, 2): its window o starts at 2o - 1; padding 2 starts at 2o - 2, so naive
    # equals TF applied to the input shifted right/down by one pixel (away from the last
    # row/column, where the shifted input lost its last pixel).
    shifted = nn.functional.pad(x, (1, 0, 1, 0))[..., :32, :32]
    conv.naive_padding = False
    assert torch.allclose(naive[..., :-1, :-1], conv(shifted)[..., :-1, :-1], atol=1e-5)


def test_transpose_output_size_is_input_times_stride():
    for k, s in [(4, 2), (3, 2), (5, 2), (1, 2), (4, 1), (4, 3)]:
        m = ConvTranspose2dSame(2, 3, k, stride=s)
        assert m(torch.randn(1, 2, 7, 9)).shape == (1, 3, 7 * s, 9 * s)


def test_srn_deconv_is_plain_convtranspose_padding_1():
    torch.manual_seed(0)
    m = ConvTranspose2dSame(4, 3, 4, stride=2)
    ref = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 6, 5)
    assert torch.equal(m(x), ref(x))


def test_legacy_resize_exact_2x_downsample_is_subsampling():
    x = torch.rand(2, 3, 64, 48)
    assert torch.equal(tf_resize_bilinear(x, (32, 24)), x[:, :, ::2, ::2])
    assert torch.equal(tf_resize_bilinear(x, (16, 12)), x[:, :, ::4, ::4])


def test_legacy_resize_2x_upsample_formula():
    x = torch.rand(1, 1, 5, 5)
    y = tf_resize_bilinear(x, (10, 10))
    assert torch.equal(y[..., ::2, ::2], x)
    assert torch.equal(y[..., -1, -1], x[..., -1, -1])
    mid = x[..., 0, 0] + (x[..., 0, 1] - x[..., 0, 0]) * 0.5
    assert torch.equal(y[..., 0, 1], mid)


def test_resize_differs_from_interpolate_in_legacy_mode():
    x = torch.rand(1, 1, 37, 37)
    ours = tf_resize_bilinear(x, (19, 19))
    torch_ = nn.functional.interpolate(x, size=(19, 19), mode="bilinear", align_corners=False)
    assert (ours - torch_).abs().max() > 0.05


@pytest.mark.parametrize("size", [(19, 30), (80, 20), (10, 90), (90, 100)])
def test_resize_layouts_agree_and_input_is_untouched(size):
    # channels_last inputs take the NHWC gather path; the arithmetic must be the same
    x = torch.rand(2, 5, 37, 45)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    a, b = tf_resize_bilinear(x, size), tf_resize_bilinear(x_cl, size)
    assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before) and torch.equal(x_cl, before)


def test_resize_same_size_returns_float32_unchanged():
    x = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)
    y = tf_resize_bilinear(x, (3, 4))
    assert y.dtype == torch.float32 and torch.equal(y, x.float())


def test_resize_images_skips_a_same_size_resize_in_any_dtype():
    # TF1's resize_images returns its input at the same size: float64 stays float64 there
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64) / 3
    assert tf_resize_images(x, (4, 4)) is x
    y = tf_resize_images(x, (2, 2))
    assert y.dtype == torch.float64 and torch.equal(y, tf_resize_bilinear(x, (2, 2)).double())


def test_resize_half_pixel_negative_source_clamps_both_indices():
    x = torch.tensor([[[[1.0, 2.0]]]])
    y = tf_resize_bilinear(x, (1, 4), half_pixel_centers=True)
    assert y[0, 0, 0, 0] == 1.0  # src = -0.25: lower = upper = 0


@pytest.mark.parametrize("kwargs,match", [
    ({"size": (4, 4), "align_corners": True, "half_pixel_centers": True}, "half_pixel"),
    ({"size": (0, 4)}, "positive"),
    ({"size": (4, -1)}, "positive"),
    ({"size": (4,)}, "height, width"),
])
def test_resize_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tf_resize_bilinear(torch.rand(1, 1, 8, 8), **kwargs)


def test_resize_rejects_non_4d():
    with pytest.raises(ValueError, match="4-D"):
        tf_resize_bilinear(torch.rand(8, 8), (4, 4))
    with pytest.raises(ValueError, match="4-D"):
        tf_resize_bilinear(np.zeros((1, 1, 8, 8)), (4, 4))

"""TF-exact layers against live TensorFlow: resize bit-identical in all three sampling
modes; SAME convolutions within the 'layer' tolerance (float32 summation order)."""

import itertools

import numpy as np
import pytest
import torch

from srn_port.nn.ops import ConvTranspose2dSame, create_conv2d_same, tf_resize_bilinear
from srn_port.core.tolerances import TOLERANCES, within

pytestmark = pytest.mark.tf

RESIZE_SIZES = [((64, 64), (32, 32)), ((32, 32), (64, 64)), ((45, 45), (90, 90)),
                ((37, 37), (19, 19)), ((30, 40), (17, 23)), ((17, 23), (61, 47)),
                ((100, 100), (33, 33)), ((7, 5), (1000, 3)), ((720, 1280), (180, 320)),
                ((1, 1), (3, 5)), ((64, 48), (64, 48)), ((40, 10), (20, 31))]
MODES = [(False, False), (True, False), (False, True)]  # legacy, align_corners, half-pixel


@pytest.fixture(scope="module")
def tf():
    from srn_port.reference.graph import import_tf
    return import_tf()[0]


@pytest.mark.parametrize("sizes", RESIZE_SIZES, ids=lambda s: f"{s[0]}->{s[1]}")
def test_resize_bit_identical_to_tf(tf, sizes):
    (ih, iw), (oh, ow) = sizes
    rng = np.random.default_rng(ih * 1000 + ow)
    for channels, (ac, hpc) in itertools.product((1, 2, 3, 4), MODES):
        x = rng.random((2, ih, iw, channels), dtype=np.float32)
        ref = tf.compat.v1.image.resize_bilinear(x, [oh, ow], align_corners=ac,
                                                 half_pixel_centers=hpc).numpy()
        nhwc = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last memory
        for layout, xt in (("channels_last", nhwc), ("NCHW", nhwc.contiguous())):
            got = tf_resize_bilinear(xt, (oh, ow), ac, hpc).permute(0, 2, 3, 1).numpy()
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() == 0, (channels, ac, hpc, layout)


def test_resize_matches_v1_resize_images_and_tf2_resize(tf):
    x = np.random.default_rng(1).random((1, 37, 45, 3), dtype=np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    v1 = tf.compat.v1.image.resize_images(x, [19, 30], method=0).numpy()
    v2 = tf.image.resize(x, [19, 30], method="bilinear").numpy()
    assert np.array_equal(tf_resize_bilinear(xt, (19, 30)).permute(0, 2, 3, 1).numpy(), v1)
    assert np.array_equal(
        tf_resize_bilinear(xt, (19, 30), half_pixel_centers=True).permute(0, 2, 3, 1).numpy(), v2)


def _conv_cases():
    for size, k, s in itertools.product([(6, 6), (7, 7), (8, 8), (13, 6), (32, 31), (1, 5)],
                                        range(1, 8), (1, 2, 3)):
        for d in ((1, 2) if s == 1 else (1,)):
            yield size, k, s, d


def _load(module, w, b):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(w).permute(3, 2, 0, 1))
        module.bias.copy_(torch.from_numpy(b))


def test_conv2d_same_matches_tf(tf):
    tol = TOLERANCES["layer"]
    rng = np.random.default_rng(0)
    for size, k, s, d in _conv_cases():
        x = rng.standard_normal((2, *size, 3)).astype(np.float32)
        w = rng.standard_normal((k, k, 3, 4)).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)
        ref = tf.nn.bias_add(tf.nn.conv2d(x, w, s, "SAME", dilations=d), b).numpy()
        m = create_conv2d_same(3, 4, k, s, d)
        _load(m, w, b)
        with torch.no_grad():
            got = m(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        assert got.shape == ref.shape, (size, k, s, d)
        err = float(np.abs(got - ref).max())
        assert within(err, float(np.abs(ref).max()), tol), (size, k, s, d, err)


def test_conv2d_transpose_same_matches_tf(tf):
    tol = TOLERANCES["layer"]
    rng = np.random.default_rng(1)
    for size, k, s, d in _conv_cases():
        if d != 1:
            continue
        x = rng.standard_normal((2, *size, 3)).astype(np.float32)
        w = rng.standard_normal((k, k, 4, 3)).astype(np.float32)  # [kh, kw, out, in]
        b = rng.standard_normal(4).astype(np.float32)
        out_shape = (2, size[0] * s, size[1] * s, 4)
        ref = tf.nn.bias_add(tf.nn.conv2d_transpose(x, w, out_shape, s, "SAME"), b).numpy()
        m = ConvTranspose2dSame(3, 4, k, s)
        _load(m, w, b)
        with torch.no_grad():
            got = m(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        assert got.shape == ref.shape, (size, k, s)
        err = float(np.abs(got - ref).max())
        assert within(err, float(np.abs(ref).max()), tol), (size, k, s, err)


def test_slim_conv2d_transpose_srn_decoder_layer(tf):
    """The decoder's own layer as tf-slim builds it: 4x4, stride 2, SAME, ReLU."""
    import tf_slim as slim

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 6, 10, 8)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        y = slim.conv2d_transpose(tf.constant(x), 4, [4, 4], stride=2, scope="dec2_4")
        w_var, b_var = tf.compat.v1.global_variables()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            b_val = rng.standard_normal(4).astype(np.float32)
            b_var.load(b_val, sess)
            ref, w = sess.run([y, w_var])
    assert w.shape == (4, 4, 4, 8)  # [kh, kw, out, in]
    m = ConvTranspose2dSame(8, 4, 4, 2)
    _load(m, w, b_val)
    with torch.no_grad():
        got = torch.relu(m(torch.from_numpy(x).permute(0, 3, 1, 2))).permute(0, 2, 3, 1).numpy()
    assert within(float(np.abs(got - ref).max()), float(np.abs(ref).max()), TOLERANCES["layer"])

"""srn_port.port against TensorFlow: each TF-exact layer against the TF op it ports, and
tf-slim's own resnet_v1_50 and inception_v3 (examples/ports/) converted from a Saver
checkpoint and compared end_point by end_point; each classic porting mistake, emulated,
is found at the right module and named.

Each net's TF graph is built once (random weights, random batch-norm statistics, biases,
betas and gammas, is_training=False) at a small size: resnet 64x64, inception 107x107
with depth_multiplier 0.1, batch 1, 10 classes."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import REPO

from srn_port import port
from srn_port.core.tolerances import TOLERANCES

pytestmark = pytest.mark.tf


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def _judge(ours, ref_nhwc, key="layer"):
    ref = port.taps.to_nchw(ref_nhwc)
    assert tuple(ours.shape) == tuple(ref.shape)
    err, scale, rel, _ = port.error_stats(ours, ref)
    assert err <= TOLERANCES[key].rel * scale, (rel, key)


# -- the layers, one TF graph ------------------------------------------------------------
def test_layers_match_tf_ops():
    from srn_port.reference.graph import import_tf

    tf, slim = import_tf()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 11, 10, 3)).astype(np.float32)
    cases = []  # (name, torch module, tf weights {leaf: array})
    g = tf.Graph()
    with g.as_default():
        t = tf.constant(x)
        out = {}
        for k, s, d in ((3, 1, 1), (3, 2, 1), (4, 2, 1), (5, 2, 1), (3, 1, 2), (1, 2, 1),
                        (2, 3, 1)):
            w = rng.standard_normal((k, k, 3, 4)).astype(np.float32)
            name = f"conv{k}s{s}d{d}"
            out[name] = tf.nn.conv2d(t, w, s, "SAME", dilations=d)
            cases.append((name, port.Conv2d(3, 4, k, s, "SAME", d, bias=False), {"weights": w}))
        w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
        out["conv_valid"] = tf.nn.conv2d(t, w, 2, "VALID")
        cases.append(("conv_valid", port.Conv2d(3, 4, 3, 2, "VALID", bias=False),
                      {"weights": w}))
        for s in (1, 2):
            w = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
            out[f"dw{s}"] = tf.nn.depthwise_conv2d(t, w, [1, s, s, 1], "SAME")
            cases.append((f"dw{s}", port.DepthwiseConv2d(3, 3, 2, s), {"depthwise_weights": w}))
        for k, s, pad in ((3, 2, "SAME"), (4, 2, "SAME"), (3, 2, "VALID"), (1, 2, "VALID"),
                          (5, 3, "SAME")):
            w = rng.standard_normal((k, k, 4, 3)).astype(np.float32)
            b = rng.standard_normal(4).astype(np.float32)
            name = f"deconv{k}s{s}{pad}"
            out[name] = slim.conv2d_transpose(t, 4, k, s, pad, activation_fn=None,
                                              weights_initializer=tf.constant_initializer(w),
                                              biases_initializer=tf.constant_initializer(b),
                                              scope=name)
            cases.append((name, port.ConvTranspose2d(3, 4, k, s, pad), {"weights": w,
                                                                        "biases": b}))
        for k, s in ((3, 1), (3, 2), (2, 2), (5, 3)):
            out[f"max{k}{s}"] = tf.nn.max_pool2d(t, k, s, "SAME")
            cases.append((f"max{k}{s}", port.MaxPool2d(k, s, "SAME"), {}))
            out[f"avg{k}{s}"] = tf.nn.avg_pool2d(t, k, s, "SAME")
            cases.append((f"avg{k}{s}", port.AvgPool2d(k, s, "SAME"), {}))
        stats = {n: rng.uniform(0.5, 2.0, 3).astype(np.float32) for n in
                 ("beta", "gamma", "moving_mean", "moving_variance")}
        for fused, scale in ((True, False), (False, False), (True, True), (None, True)):
            name = f"bn_{fused}_{scale}"
            init = {"beta": tf.constant_initializer(stats["beta"]),
                    "gamma": tf.constant_initializer(stats["gamma"]),
                    "moving_mean": tf.constant_initializer(stats["moving_mean"]),
                    "moving_variance": tf.constant_initializer(stats["moving_variance"])}
            from srn_port.reference.porting import _legacy_layers
            _legacy_layers()
            out[name] = slim.batch_norm(t, scale=scale, is_training=False, fused=fused,
                                        param_initializers=init, scope=name)
            cases.append((name, port.BatchNorm(3, scale=scale),
                          {k: v for k, v in stats.items() if scale or k != "gamma"}))
        w = rng.standard_normal((11 * 10 * 3, 5)).astype(np.float32)
        out["fc"] = slim.fully_connected(slim.flatten(t), 5, activation_fn=None,
                                         weights_initializer=tf.constant_initializer(w),
                                         biases_initializer=tf.zeros_initializer(), scope="fc")
        cases.append(("fc", port.FullyConnected(330, 5, activation=None),
                      {"weights": w, "biases": np.zeros(5, np.float32)}))
        for size in ((7, 6), (23, 19)):
            for ac, hp in ((False, False), (True, False), (False, True)):
                name = f"bilinear{size}{ac}{hp}"
                out[name] = tf.compat.v1.image.resize_bilinear(t, size, ac,
                                                               half_pixel_centers=hp)
                cases.append((name, port.Resize(size, "bilinear", ac, hp), {}))
                name = f"nearest{size}{ac}{hp}"
                out[name] = tf.compat.v1.image.resize_nearest_neighbor(t, size, ac,
                                                                       half_pixel_centers=hp)
                cases.append((name, port.Resize(size, "nearest", ac, hp), {}))
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            values = sess.run(out)
    xt = _nchw(x)
    for name, module, weights in cases:
        leaves = port.tf_leaves(module)
        state = {leaves[leaf][0]: torch.from_numpy(np.ascontiguousarray(
            port.LAYOUTS[leaves[leaf][1]](a))) for leaf, a in weights.items()}
        module.load_state_dict({**module.state_dict(), **state})
        with torch.no_grad():
            ours = module.eval()(xt)
        exact = name.startswith(("max", "bilinear", "nearest"))
        try:
            _judge(ours, values[name], "exact" if exact else "layer")
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


# -- the nets --------------------------------------------------------------------------
def _net(tmp_path_factory, module_name, size, cls):
    sys.path.insert(0, str(REPO))
    try:
        mod = __import__(f"examples.ports.{module_name}", fromlist=["RULES"])
    finally:
        sys.path.remove(str(REPO))
    from srn_port.reference.porting import run_tf

    x = np.random.default_rng(1).uniform(0, 1, (1, size, size, 3)).astype(np.float32)
    ckpt = tmp_path_factory.mktemp(module_name) / "model"
    run = run_tf(mod.build_tf, x, save_to=str(ckpt))
    model = getattr(mod, cls)()
    conversion = port.load(run.checkpoint, model, mod.RULES)
    taps, untapped = port.taps_for(run.end_points, model, mod.RULES,
                                   getattr(mod, "TAPS", None))
    return mod, model, conversion, run, taps, untapped, _nchw(x)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return _net(tmp_path_factory, "resnet_v1_50", 64, "ResNetV1_50")


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return _net(tmp_path_factory, "inception_v3", 107, "InceptionV3")


def _check_passes(net, n_end_points):
    mod, model, conversion, run, taps, untapped, x = net
    assert untapped == [] and len(taps) == len(run.end_points) == n_end_points
    assert conversion.dropped == {"global_step": "the global step"}
    assert len(conversion.mapped) == len(run.variables) - 1
    result = port.compare(model, x, run.activations, taps, conversion=conversion)
    assert result.passed, [(r.name, r.max_rel_err) for r in result.rows if not r.passed]
    assert [r.name for r in result.rows] == list(run.end_points)  # graph order
    return result


@pytest.mark.slow
def test_resnet_v1_50_matches_tf_at_every_end_point(resnet):
    result = _check_passes(resnet, 75)
    logits = next(r for r in result.rows if r.name == "resnet_v1_50/logits")
    assert logits.tolerance == "output" and logits.max_rel_err <= 1e-5


def _trap(net, path, module):
    mod, model, conversion, run, taps, untapped, x = net
    broken = copy.deepcopy(model)
    if module is not None:
        parent, _, name = path.rpartition(".")
        setattr(broken.get_submodule(parent) if parent else broken, name, module)
    return broken, port.compare(broken, x, run.activations, taps, conversion=conversion)


@pytest.mark.slow
def test_resnet_traps_are_found_and_named(resnet):
    # PyTorch's symmetric padding for pool1's 3x3 stride-2 'SAME' max pool (0/1 in TF)
    _, result = _trap(resnet, "pool1", nn.MaxPool2d(3, 2, padding=1))
    assert result.first_divergence.name == "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut"
    assert result.diagnosis.cause == "padding" and result.diagnosis.module == "pool1"
    assert "pads rows 0/1" in result.diagnosis.summary
    # TF 'SAME' where resnet_utils.conv2d_same pads 1/1 explicitly (the strided 3x3 conv2)
    conv2 = copy.deepcopy(resnet[1].block1.unit_3.conv2)
    conv2.tf_padding_mode = "SAME"
    _, result = _trap(resnet, "block1.unit_3.conv2", conv2)
    assert result.first_divergence.name == "resnet_v1_50/block1/unit_3/bottleneck_v1/conv2"
    assert result.diagnosis.cause == "padding"
    assert result.diagnosis.module == "block1.unit_3.conv2"
    assert "resnet_utils.conv2d_same" in result.diagnosis.summary
    # slim's default epsilon 0.001 where resnet_arg_scope sets 1e-5
    bn = copy.deepcopy(resnet[1].block3.unit_2.conv2.BatchNorm)
    bn.eps = 0.001
    _, result = _trap(resnet, "block3.unit_2.conv2.BatchNorm", bn)
    assert result.first_divergence.name == "resnet_v1_50/block3/unit_2/bottleneck_v1/conv2"
    assert result.diagnosis.cause == "bn-epsilon"
    assert result.diagnosis.module == "block3.unit_2.conv2.BatchNorm"
    assert "epsilon 0.001; the TF graph's is 1e-05" in result.diagnosis.summary


@pytest.mark.slow
def test_inception_v3_matches_tf_at_every_end_point(inception):
    result = _check_passes(inception, 21)
    logits = next(r for r in result.rows if r.name == "Logits")
    assert logits.tolerance == "output" and logits.max_rel_err <= 1e-5


@pytest.mark.slow
def test_inception_traps_are_found_and_named(inception):
    # average pooling that counts the padding: nn.AvgPool2d's default
    _, result = _trap(inception, "Mixed_5c.Branch_3.AvgPool_0a_3x3", nn.AvgPool2d(3, 1, 1))
    assert result.first_divergence.name == "Mixed_5c"
    assert result.diagnosis.cause == "avgpool-count"
    assert result.diagnosis.module == "Mixed_5c.Branch_3.AvgPool_0a_3x3"
    # PyTorch's default epsilon 1e-5 where inception's arg_scope (and slim) use 0.001
    bn = copy.deepcopy(inception[1].Mixed_6b.Branch_1.Conv2d_0b_1x7.BatchNorm)
    bn.eps = 1e-5
    _, result = _trap(inception, "Mixed_6b.Branch_1.Conv2d_0b_1x7.BatchNorm", bn)
    assert result.first_divergence.name == "Mixed_6b"
    assert result.diagnosis.cause == "bn-epsilon"
    assert result.diagnosis.module == "Mixed_6b.Branch_1.Conv2d_0b_1x7.BatchNorm"
    # a missing ReLU at a tapped layer
    broken = copy.deepcopy(inception[1])
    broken.Conv2d_4a_3x3.activation = None
    result = port.compare(broken, inception[6], inception[3].activations, inception[4])
    assert result.first_divergence.name == "Conv2d_4a_3x3"
    assert result.diagnosis.cause == "missing-activation"

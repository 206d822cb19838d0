"""tf-slim's ``inception_v3`` (tf_slim/nets/inception_v3.py) ported with srn_port.port.

The blocks are written as a table of TF scopes (one row per slim layer), the module tree
follows those scopes, and one Map rule converts the checkpoint. The traps this net holds:
every Mixed block averages a 3x3 'SAME' window whose border samples TF divides by the real
pixel count (PyTorch's ``nn.AvgPool2d(3, 1, 1)`` divides by 9); the stem and the
reduction blocks are 'VALID'; slim's batch_norm here has no ``gamma`` (``scale=False``)
and epsilon 0.001; the final average pool shrinks its 8x8 kernel to small inputs
(``_reduced_kernel_size_for_small_input``) and keeps slim's default stride 2.

    srn-port port-diff --tf-builder examples.ports.inception_v3:build_tf \\
        --checkpoint CKPT --torch examples.ports.inception_v3:InceptionV3 --size 107x107
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from srn_port.port import TRAINING_STATE, AvgPool2d, Map, MaxPool2d, SlimConv2d, Squeeze

NUM_CLASSES = 10
DEPTH_MULTIPLIER = 0.1  # small, for tests; 1.0 is the published network
MIN_DEPTH = 16
BN = {"eps": 0.001}  # inception_v3_arg_scope(): slim.batch_norm, scale=False

RULES = (Map(r"InceptionV3", ""),) + TRAINING_STATE
#: end_points that are not a scope: -> module path
TAPS = {"PreLogits": "Logits.Dropout_1b", "Logits": "Logits.SpatialSqueeze",
        "Predictions": "Predictions"}


def build_tf(images, num_classes: int = NUM_CLASSES, depth_multiplier: float = DEPTH_MULTIPLIER):
    """The TF side: tf-slim's own inception_v3 under its arg_scope, at inference."""
    import tf_slim as slim
    from tf_slim.nets import inception_v3

    with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
        return inception_v3.inception_v3(images, num_classes=num_classes, is_training=False,
                                         depth_multiplier=depth_multiplier, min_depth=MIN_DEPTH,
                                         create_aux_logits=False)


def c(scope, depth, k, stride=1, pad=None):
    """A slim.conv2d row: scope, output depth (before the multiplier), kernel, stride, padding
    (None: the block's default)."""
    return ("conv", scope, depth, k if isinstance(k, tuple) else (k, k), stride, pad)


def pool(kind, scope, stride=1, pad=None):
    return (kind, scope, 0, (3, 3), stride, pad)


def split(*convs):
    """Two convolutions of one input, concatenated (Mixed_7b/7c)."""
    return ("split", convs)


AVG = pool("avg", "AvgPool_0a_3x3")
STEM = [c("Conv2d_1a_3x3", 32, 3, 2), c("Conv2d_2a_3x3", 32, 3),
        c("Conv2d_2b_3x3", 64, 3, pad="SAME"), pool("max", "MaxPool_3a_3x3", 2),
        c("Conv2d_3b_1x1", 80, 1), c("Conv2d_4a_3x3", 192, 3), pool("max", "MaxPool_5a_3x3", 2)]


def _m5(b1a, b1b, b3):
    return [[c("Conv2d_0a_1x1", 64, 1)], [c(b1a, 48, 1), c(b1b, 64, 5)],
            [c("Conv2d_0a_1x1", 64, 1), c("Conv2d_0b_3x3", 96, 3), c("Conv2d_0c_3x3", 96, 3)],
            [AVG, c("Conv2d_0b_1x1", b3, 1)]]


def _m6(d):
    return [[c("Conv2d_0a_1x1", 192, 1)],
            [c("Conv2d_0a_1x1", d, 1), c("Conv2d_0b_1x7", d, (1, 7)),
             c("Conv2d_0c_7x1", 192, (7, 1))],
            [c("Conv2d_0a_1x1", d, 1), c("Conv2d_0b_7x1", d, (7, 1)), c("Conv2d_0c_1x7", d, (1, 7)),
             c("Conv2d_0d_7x1", d, (7, 1)), c("Conv2d_0e_1x7", 192, (1, 7))],
            [AVG, c("Conv2d_0b_1x1", 192, 1)]]


def _m7(b1b):
    return [[c("Conv2d_0a_1x1", 320, 1)],
            [c("Conv2d_0a_1x1", 384, 1),
             split(c("Conv2d_0b_1x3", 384, (1, 3)), c(b1b, 384, (3, 1)))],
            [c("Conv2d_0a_1x1", 448, 1), c("Conv2d_0b_3x3", 384, 3),
             split(c("Conv2d_0c_1x3", 384, (1, 3)), c("Conv2d_0d_3x1", 384, (3, 1)))],
            [AVG, c("Conv2d_0b_1x1", 192, 1)]]


MIXED = OrderedDict([
    ("Mixed_5b", _m5("Conv2d_0a_1x1", "Conv2d_0b_5x5", 32)),
    ("Mixed_5c", _m5("Conv2d_0b_1x1", "Conv_1_0c_5x5", 64)),
    ("Mixed_5d", _m5("Conv2d_0a_1x1", "Conv2d_0b_5x5", 64)),
    ("Mixed_6a", [[c("Conv2d_1a_1x1", 384, 3, 2, "VALID")],
                  [c("Conv2d_0a_1x1", 64, 1), c("Conv2d_0b_3x3", 96, 3),
                   c("Conv2d_1a_1x1", 96, 3, 2, "VALID")],
                  [pool("max", "MaxPool_1a_3x3", 2, "VALID")]]),
    ("Mixed_6b", _m6(128)), ("Mixed_6c", _m6(160)), ("Mixed_6d", _m6(160)),
    ("Mixed_6e", _m6(192)),
    ("Mixed_7a", [[c("Conv2d_0a_1x1", 192, 1), c("Conv2d_1a_3x3", 320, 3, 2, "VALID")],
                  [c("Conv2d_0a_1x1", 192, 1), c("Conv2d_0b_1x7", 192, (1, 7)),
                   c("Conv2d_0c_7x1", 192, (7, 1)), c("Conv2d_1a_3x3", 192, 3, 2, "VALID")],
                  [pool("max", "MaxPool_1a_3x3", 2, "VALID")]]),
    ("Mixed_7b", _m7("Conv2d_0b_3x1")), ("Mixed_7c", _m7("Conv2d_0c_3x1")),
])


class Concat(nn.Module):
    """Modules applied to one input, their outputs concatenated on the channels (TF axis 3)."""

    def __init__(self, parts):
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)

    def forward(self, x):
        return torch.cat([m(x) for m in self.children()], dim=1)


class Branch(nn.Module):
    """One branch of a Mixed block: its layers are children named by their TF scopes; a
    split step feeds one tensor to two of them and concatenates the results."""

    def __init__(self, steps):
        super().__init__()
        self.plan = []
        for step in steps:
            if isinstance(step, dict):  # a split
                for name, module in step.items():
                    self.add_module(name, module)
                self.plan.append(tuple(step))
            else:
                self.add_module(*step)
                self.plan.append(step[0])

    def forward(self, x):
        for step in self.plan:
            if isinstance(step, tuple):
                x = torch.cat([getattr(self, name)(x) for name in step], dim=1)
            else:
                x = getattr(self, step)(x)
        return x


class ReducedAvgPool(nn.Module):
    """The Logits average pool: an 8x8 kernel shrunk to the input, 'VALID', stride 2."""

    def forward(self, x):
        k = (min(x.shape[-2], 8), min(x.shape[-1], 8))
        return F.avg_pool2d(x, k, 2)


class InceptionV3(nn.Module):
    TF_RULES = RULES
    TF_TAPS = TAPS

    def __init__(self, num_classes: int = NUM_CLASSES,
                 depth_multiplier: float = DEPTH_MULTIPLIER, min_depth: int = MIN_DEPTH):
        super().__init__()
        depth = lambda d: max(int(d * depth_multiplier), min_depth)  # noqa: E731

        def layer(row, cin, default_pad):
            if row[0] == "split":
                parts = {r[1]: layer(r, cin, default_pad)[0] for r in row[1]}
                return parts, sum(depth(r[2]) for r in row[1])
            kind, scope, d, k, stride, pad = row
            pad = pad or default_pad
            if kind == "conv":
                return SlimConv2d(cin, depth(d), k, stride, pad, batch_norm=BN), depth(d)
            cls = MaxPool2d if kind == "max" else AvgPool2d
            return cls(k, stride, pad), cin

        cin = 3
        for row in STEM:
            module, cin = layer(row, cin, "VALID")
            self.add_module(row[1], module)
        for name, branches in MIXED.items():
            parts, cout = OrderedDict(), 0
            for i, rows in enumerate(branches):
                steps, bc = [], cin
                for row in rows:
                    module, bc = layer(row, bc, "SAME")
                    steps.append(module if row[0] == "split" else (row[1], module))
                parts[f"Branch_{i}"] = Branch(steps)
                cout += bc
            self.add_module(name, Concat(parts))
            cin = cout
        self.Logits = nn.Sequential(OrderedDict([
            ("AvgPool", ReducedAvgPool()), ("Dropout_1b", nn.Identity()),
            ("Conv2d_1c_1x1", SlimConv2d(cin, num_classes, 1, activation=None)),
            ("SpatialSqueeze", Squeeze())]))
        self.Predictions = nn.Softmax(dim=-1)

    def forward(self, x):
        for name in [r[1] for r in STEM] + list(MIXED):
            x = getattr(self, name)(x)
        logits = self.Logits(x)
        self.Predictions(logits)  # tapped against end_points['Predictions']
        return logits

"""tf-slim's ``resnet_v1_50`` (tf_slim/nets/resnet_v1.py) ported with srn_port.port.

The module tree follows TF's scopes, so two Map rules convert the whole checkpoint and tap
every end_point (docs/porting.md walks through it). The traps this net holds:
``resnet_utils.conv2d_same`` pads explicitly (3/3 for conv1's 7x7, 1/1 for the strided 3x3)
and then convolves 'VALID', which is *not* TF's 'SAME' on even sizes; ``pool1`` is a 3x3
stride-2 max pool with 'SAME' padding (0 before, 1 after on even sizes, unlike PyTorch's
``padding=1``); ``resnet_arg_scope`` sets batch_norm epsilon 1e-5 and ``scale=True``.

    srn-port port-diff --tf-builder examples.ports.resnet_v1_50:build_tf \\
        --checkpoint CKPT --torch examples.ports.resnet_v1_50:ResNetV1_50 --size 64x64
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from srn_port.port import TRAINING_STATE, GlobalMean, Map, MaxPool2d, SlimConv2d

NUM_CLASSES = 10
#: resnet_arg_scope(): batch_norm_epsilon=1e-5, batch_norm_scale=True
BN = {"eps": 1e-5, "scale": True}
#: (scope, base depth, units, stride of the last unit): resnet_v1_50's blocks
BLOCKS = (("block1", 64, 3, 2), ("block2", 128, 4, 2), ("block3", 256, 6, 2),
          ("block4", 512, 3, 1))

RULES = (
    Map(r"resnet_v1_50/(block\d)/unit_(\d+)/bottleneck_v1", r"\1.unit_\2"),
    Map(r"resnet_v1_50", ""),
) + TRAINING_STATE


def build_tf(images, num_classes: int = NUM_CLASSES):
    """The TF side: tf-slim's own resnet_v1_50 under its arg_scope, at inference."""
    import tf_slim as slim
    from tf_slim.nets import resnet_utils, resnet_v1

    with slim.arg_scope(resnet_utils.resnet_arg_scope()):
        return resnet_v1.resnet_v1_50(images, num_classes=num_classes, is_training=False)


def conv2d_same(cin: int, cout: int, k: int, stride: int) -> SlimConv2d:
    """resnet_utils.conv2d_same: 'SAME' at stride 1, else explicit (k-1)//2 / k//2 then VALID."""
    if stride == 1:
        return SlimConv2d(cin, cout, k, 1, "SAME", batch_norm=BN)
    pad = ((k - 1) // 2, (k - 1) - (k - 1) // 2)
    return SlimConv2d(cin, cout, k, stride, (pad, pad), batch_norm=BN)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, depth: int, bottleneck: int, stride: int):
        super().__init__()
        if cin == depth:  # resnet_utils.subsample: a 1x1 max pool with the stride
            self.shortcut = MaxPool2d(1, stride, "SAME") if stride > 1 else nn.Identity()
        else:
            self.shortcut = SlimConv2d(cin, depth, 1, stride, batch_norm=BN, activation=None)
        self.conv1 = SlimConv2d(cin, bottleneck, 1, batch_norm=BN)
        self.conv2 = conv2d_same(bottleneck, bottleneck, 3, stride)
        self.conv3 = SlimConv2d(bottleneck, depth, 1, batch_norm=BN, activation=None)

    def forward(self, x):
        return torch.relu(self.shortcut(x) + self.conv3(self.conv2(self.conv1(x))))


class ResNetV1_50(nn.Module):
    TF_RULES = RULES

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = conv2d_same(3, 64, 7, 2)
        self.pool1 = MaxPool2d(3, 2, "SAME")
        cin = 64
        for scope, base, units, stride in BLOCKS:
            block = OrderedDict()
            for i in range(units):
                block[f"unit_{i + 1}"] = Bottleneck(cin, base * 4, base,
                                                    stride if i == units - 1 else 1)
                cin = base * 4
            setattr(self, scope, nn.Sequential(block))
        self.global_pool = GlobalMean()
        self.logits = SlimConv2d(cin, num_classes, 1, activation=None)
        self.predictions = nn.Softmax(dim=1)  # over the classes (channels) of [N, C, 1, 1]

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        for scope, *_ in BLOCKS:
            x = getattr(self, scope)(x)
        logits = self.logits(self.global_pool(x))  # [N, classes, 1, 1], as TF's (NHWC) net
        self.predictions(logits)  # tapped against end_points['predictions']
        return logits

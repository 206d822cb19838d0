"""``srn-port port-diff`` on a porter's own pair, written here: a small tf-slim network
(a strided 'SAME' conv with batch norm, a 'SAME' average pool, a fully-connected layer on
flattened features) and its PyTorch port, with mistakes emulated and named."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from srn_port.cli import cli

pytestmark = pytest.mark.tf

SMALL = textwrap.dedent('''
    import torch.nn as nn
    from srn_port.port import (TRAINING_STATE, AvgPool2d, FullyConnected, Map, SlimConv2d)

    def build(images, is_training=False):
        import tf_slim as slim
        end_points = {}
        net = slim.conv2d(images, 8, 3, stride=2, normalizer_fn=slim.batch_norm,
                          normalizer_params={"is_training": is_training}, scope="small/conv1")
        end_points["conv1"] = net
        net = slim.avg_pool2d(net, 3, stride=1, padding="SAME", scope="small/pool")
        end_points["pool"] = net
        net = slim.fully_connected(slim.flatten(net), 6, activation_fn=None, scope="small/fc")
        end_points["logits"] = net
        return net, end_points

    def build_training(images):  # slim.batch_norm's default, is_training=True
        return build(images, is_training=True)

    class Small(nn.Module):
        TF_RULES = (Map("small", ""),) + TRAINING_STATE
        TF_TAPS = {"logits": "fc"}

        def __init__(self):
            super().__init__()
            self.conv1 = SlimConv2d(3, 8, 3, 2, batch_norm={})
            self.pool = AvgPool2d(3, 1, "SAME")
            self.fc = FullyConnected(8 * 8 * 8, 6, activation=None)

        def forward(self, x):
            return self.fc(self.pool(self.conv1(x)))

    class NchwFlatten(Small):
        def __init__(self):
            super().__init__()
            self.fc.flatten_order = "NCHW"

    class TorchPadding(Small):
        def __init__(self):
            super().__init__()
            self.conv1.naive_padding = True

    class NoRules(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = SlimConv2d(3, 8, 3, 2, batch_norm={})

    NO_DROP = (Map("small", ""),)
''')


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    import sys

    import numpy as np

    from srn_port.reference.porting import run_tf

    root = tmp_path_factory.mktemp("porter")
    (root / "porter_small.py").write_text(SMALL)
    sys.path.insert(0, str(root))
    try:
        import porter_small
        x = np.zeros((1, 16, 16, 3), np.float32)
        run_tf(porter_small.build, x, save_to=str(root / "ckpt" / "small"))
    finally:
        sys.path.remove(str(root))
    return root


def _port_diff(root, monkeypatch, *args, builder="porter_small:build"):
    monkeypatch.chdir(root)
    return CliRunner().invoke(cli, ["port-diff", "--tf-builder", builder,
                                    "--checkpoint", "ckpt/small", "--size", "16x16", *args])


@pytest.mark.slow
def test_a_correct_port_passes_every_tap(pair, monkeypatch):
    # a graph tensor (the batch norm's output, before the ReLU) tapped with --tap
    bn = "small/conv1/BatchNorm/FusedBatchNormV3:0"
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:Small", "--batch", "2",
                     "--tap", f"{bn}=conv1.BatchNorm")
    assert res.exit_code == 0, res.output
    assert "PASS: all 4 taps within the tolerance table" in res.output
    assert "6 variables mapped, 1 dropped by rule" in res.output
    rows = [line.split()[0] for line in res.output.splitlines()
            if line.split() and line.split()[-1] == "pass"]
    assert rows == [bn, "conv1", "pool", "logits"]


@pytest.mark.slow
def test_nchw_flatten_order_is_named_at_the_fully_connected_layer(pair, monkeypatch):
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:NchwFlatten", "--json", "-")
    assert res.exit_code == 1, res.output
    data = json.loads(res.output)
    assert [r["passed"] for r in data["rows"]] == [True, True, False]
    assert data["first_divergence"]["name"] == "logits"
    assert data["first_divergence"]["tolerance"] == "output"
    assert data["diagnosis"]["cause"] == "flatten-order"
    assert data["diagnosis"]["module"] == "fc"
    assert data["variables_dropped"] == {"global_step": "the global step"}


@pytest.mark.slow
def test_torch_padding_is_named_at_the_strided_conv(pair, monkeypatch):
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:TorchPadding")
    assert res.exit_code == 1, res.output
    assert "FIRST DIVERGENCE: conv1 (module conv1)" in res.output
    assert "diagnosis (padding at conv1)" in res.output
    assert "TF 'SAME' pads rows 0/1 and columns 0/1 on this 16x16 input" in res.output
    # isolated, the layers after conv1 compute from TF's conv1 and are right
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:TorchPadding", "--isolate",
                     "--json", "-")
    assert res.exit_code == 1, res.output
    data = json.loads(res.output)
    assert data["mode"] == "isolated"
    assert [(r["name"], r["passed"]) for r in data["rows"]] == [
        ("conv1", False), ("pool", True), ("logits", True)]


@pytest.mark.slow
def test_a_graph_built_for_training_is_named_at_its_batch_norm(pair, monkeypatch):
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:Small", "--batch", "2",
                     builder="porter_small:build_training")
    assert res.exit_code == 1, res.output
    assert "diagnosis (bn-training at conv1.BatchNorm)" in res.output


@pytest.mark.slow
def test_usage_errors_exit_2_with_one_paragraph(pair, monkeypatch):
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:NoRules")
    assert res.exit_code == 2 and "Error: No mapping rules" in res.output
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:Small", "--rules",
                     "porter_small:NO_DROP")
    assert res.exit_code == 2
    assert "variables that no rule maps or drops:\n  global_step []" in res.output
    res = _port_diff(pair, monkeypatch, "--torch", "porter_small:Missing")
    assert res.exit_code == 2 and "module 'porter_small' has no 'Missing'" in res.output
    res = _port_diff(pair, monkeypatch, "--torch", "no_such_module_here:X")
    assert res.exit_code == 2 and "cannot import module 'no_such_module_here'" in res.output

"""srn_port.port without TensorFlow: importable without TF or SRN, the strict ledger of the
weight mapper (real V2 checkpoints written by srn_port.core.checkpoint.writer), the pooling
rules on inputs whose TF results are known by hand, and the diagnosis of mistakes that need
no TF graph (the input's channel order and value range, NCHW flatten order).
The layers against TF and the tf-slim nets: tests/test_port_tf.py."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from srn_port import port
from srn_port.core.checkpoint.writer import write_checkpoint
from srn_port.core.errors import ConversionError


def test_the_toolkit_imports_without_tf_or_srn():
    code = ("import sys, srn_port.port; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_slim') or m in ('srn_port.nn.model', 'srn_port.core.network', "
            "'srn_port.core.naming', 'srn_port.parity', 'srn_port.api')]; print(bad)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


class Tiny(nn.Module):
    def __init__(self, scale=False):
        super().__init__()
        self.conv = port.SlimConv2d(3, 4, 3, 2, batch_norm={"scale": scale})
        self.dw = port.DepthwiseConv2d(4, 3, multiplier=2)
        self.fc = port.FullyConnected(8 * 2 * 2, 5, activation=None)

    def forward(self, x):
        return self.fc(self.dw(self.conv(x)))


RULES = (port.Map(r"net", ""),) + port.TRAINING_STATE


def _tensors(rng, scale=False):
    t = {"net/conv/weights": rng.standard_normal((3, 3, 3, 4)),
         "net/conv/BatchNorm/beta": rng.standard_normal(4),
         "net/conv/BatchNorm/moving_mean": rng.standard_normal(4),
         "net/conv/BatchNorm/moving_variance": rng.uniform(0.5, 2, 4),
         "net/dw/depthwise_weights": rng.standard_normal((3, 3, 4, 2)),
         "net/fc/weights": rng.standard_normal((32, 5)),
         "net/fc/biases": rng.standard_normal(5),
         "net/fc/weights/Adam": rng.standard_normal((32, 5)),
         "net/fc/weights/Adam_1": rng.standard_normal((32, 5)),
         "beta1_power": np.float32(0.9), "global_step": np.int64(7)}
    if scale:
        t["net/conv/BatchNorm/gamma"] = rng.uniform(0.5, 1.5, 4)
    return {k: np.asarray(v, np.float32) if k != "global_step" else v for k, v in t.items()}


def test_a_checkpoint_maps_by_scope_with_tf_layouts(tmp_path):
    rng = np.random.default_rng(0)
    tensors = _tensors(rng)
    write_checkpoint(tmp_path / "model", tensors)
    model = Tiny()
    conv = port.load(tmp_path / "model", model, RULES)
    assert conv.dropped == {"net/fc/weights/Adam": "an optimizer slot",
                            "net/fc/weights/Adam_1": "an optimizer slot",
                            "beta1_power": "Adam's beta powers",
                            "global_step": "the global step"}
    assert conv.mapped["net/conv/BatchNorm/beta"] == "conv.BatchNorm.beta"
    w = tensors["net/conv/weights"]
    assert torch.equal(model.conv.weight, torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
    # depthwise: output channel c * multiplier + m is input channel c's m-th kernel
    dw = tensors["net/dw/depthwise_weights"]
    for c in range(4):
        for m in range(2):
            assert torch.equal(model.dw.weight[c * 2 + m, 0], torch.from_numpy(dw[:, :, c, m]))
    assert torch.equal(model.fc.weight, torch.from_numpy(tensors["net/fc/weights"].T.copy()))


def test_the_ledger_lists_every_problem_and_converts_nothing(tmp_path):
    rng = np.random.default_rng(1)
    tensors = _tensors(rng, scale=True)  # a gamma that Tiny (scale=False) does not have
    tensors["net/head/weights"] = rng.standard_normal((1, 1, 8, 3)).astype(np.float32)
    tensors["other/thing"] = np.zeros(2, np.float32)
    tensors["net/fc/biases"] = np.zeros(6, np.float32)
    del tensors["net/conv/BatchNorm/moving_mean"]
    write_checkpoint(tmp_path / "model", tensors)
    model = Tiny()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConversionError) as info:
        port.load(tmp_path / "model", model, RULES)
    msg = str(info.value)
    assert "variables that no rule maps or drops:\n  other/thing [2]" in msg
    assert "net/head/weights -> module 'head', which the model does not have" in msg
    assert ("net/conv/BatchNorm/gamma -> module 'conv.BatchNorm' (BatchNorm), which owns "
            "beta, moving_mean, moving_variance") in msg
    assert "net/fc/biases [6] -> fc.bias [5]" in msg
    assert "conv.BatchNorm.moving_mean [4]" in msg
    assert "Nothing was converted" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_missing_gamma_names_slims_scale_default():
    rng = np.random.default_rng(2)
    with pytest.raises(ConversionError, match="slim's batch_norm has scale=False by default"):
        port.convert(_tensors(rng, scale=False), Tiny(scale=True), RULES)


def test_glob_rules_and_end_point_taps():
    assert port.Map(port.glob("net/*/unit_*"), r"\1.u\2").match("net/b1/unit_3/conv/x") == \
        "b1.u3.conv.x"
    assert port.module_path("net/conv/BatchNorm", RULES) == "conv.BatchNorm"
    taps, untapped = port.taps_for(["net/conv", "net/fc", "predictions"], Tiny(), RULES)
    assert [(t.name, t.module) for t in taps] == [("net/conv", "conv"), ("net/fc", "fc")]
    assert untapped == ["predictions"]


def test_same_pooling_follows_tf_at_the_border():
    x = torch.ones(1, 1, 4, 4)
    # TF divides each window by its real pixels: all ones; PyTorch's count_include_pad=True
    # divides a corner window (4 real pixels of 9) by 9
    assert torch.equal(port.AvgPool2d(3, 1, "SAME")(x), x)
    naive = port.AvgPool2d(3, 1, "SAME")
    naive.count_include_pad = True
    assert float(naive(x)[0, 0, 0, 0]) == pytest.approx(4 / 9)
    # max pool pads with -inf: a negative input never yields the padding's 0
    neg = -torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    out = port.MaxPool2d(3, 2, "SAME")(neg)
    assert out.shape[-2:] == (2, 2) and float(out.max()) < 0
    # 4 -> 2 with 3x3 stride 2: TF pads 0 before, 1 after; window rows {0,1,2} and {2,3}
    assert out[0, 0, :, 0].tolist() == [-1.0, -9.0]


class Pre(nn.Module):
    def __init__(self, flip=False, scale=1.0):
        super().__init__()
        self.flip, self.scale = flip, scale

    def forward(self, x):
        return (x.flip(1) if self.flip else x) * self.scale


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Pre()
        self.conv = port.SlimConv2d(3, 4, 3, 2, batch_norm={})
        self.fc = port.FullyConnected(4 * 3 * 3, 5, activation=None)

    def forward(self, x):
        return self.fc(self.conv(self.pre(x)))


def _reference(model, x, taps):
    # the diagnosis logic on its own: the reference is a correct model's activations
    # (NHWC, as TF's); the TF tests check the layers and nets against TF itself
    tr = port.taps.trace(model, x, taps)
    return {k: (v.permute(0, 2, 3, 1) if v.dim() == 4 else v).numpy()
            for k, v in tr.outputs.items()}


@pytest.mark.parametrize("pre, cause", [
    (Pre(flip=True), "channel-order"), (Pre(scale=255.0), "value-range")])
def test_the_input_convention_is_named_at_the_first_tap(pre, cause):
    torch.manual_seed(0)
    model = Small().eval()
    taps = [port.Tap("conv", "conv"), port.Tap("fc", "fc")]
    x = torch.rand(1, 3, 6, 6)
    ref = _reference(model, x, taps)
    model.pre = pre
    result = port.compare(model, x, ref, taps)
    assert result.first_divergence.name == "conv"
    assert result.diagnosis.cause == cause


def test_nchw_flatten_order_is_named_at_the_fully_connected_layer():
    torch.manual_seed(0)
    model = Small().eval()
    with torch.no_grad():
        model.conv.BatchNorm.moving_mean.uniform_(-0.5, 0.5)
    taps = [port.Tap("conv", "conv"), port.Tap("fc", "fc")]
    x = torch.rand(2, 3, 6, 6)
    ref = _reference(model, x, taps)
    assert port.compare(model, x, ref, taps).passed
    model.fc.flatten_order = "NCHW"
    result = port.compare(model, x, ref, taps)
    assert [r.passed for r in result.rows] == [True, False]
    assert result.rows[1].tolerance == "output"
    assert result.diagnosis.cause == "flatten-order" and result.diagnosis.module == "fc"


def test_plain_torch_modules_map_too():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.up = nn.ConvTranspose2d(4, 2, 2, 2)
            self.fc = nn.Linear(6, 5)

    rng = np.random.default_rng(3)
    arrays = {"m/conv/weights": rng.standard_normal((3, 3, 3, 4)),
              "m/bn/gamma": rng.standard_normal(4), "m/bn/beta": rng.standard_normal(4),
              "m/bn/moving_mean": rng.standard_normal(4),
              "m/bn/moving_variance": rng.uniform(0.5, 2, 4),
              "m/up/weights": rng.standard_normal((2, 2, 2, 4)),  # [kh, kw, out, in]
              "m/up/biases": rng.standard_normal(2),
              "m/fc/weights": rng.standard_normal((6, 5)), "m/fc/biases": rng.standard_normal(5)}
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    model = Plain()
    conv = port.load(arrays, model, (port.Map("m", ""),))
    assert len(conv.mapped) == 9 and conv.dropped == {}
    assert torch.equal(model.bn.running_var, torch.from_numpy(arrays["m/bn/moving_variance"]))
    assert torch.equal(model.bn.weight, torch.from_numpy(arrays["m/bn/gamma"]))
    up = arrays["m/up/weights"]  # torch's [in, out, kh, kw]
    assert torch.equal(model.up.weight[3, 1], torch.from_numpy(up[:, :, 1, 3]))
    assert int(model.bn.num_batches_tracked) == 0  # no TF quantity: left as it was


def test_isolation_feeds_tfs_activations_on():
    torch.manual_seed(0)
    model = Small().eval()
    taps = [port.Tap("conv", "conv"), port.Tap("fc", "fc")]
    x = torch.rand(1, 3, 5, 5)
    ref = _reference(model, x, taps)
    model.conv.naive_padding = True  # 3x3 stride 2 on 5x5: TF pads 1/1, so no change...
    assert port.compare(model, x, ref, taps).passed
    x = torch.rand(1, 3, 6, 6)  # ... on 6x6 TF pads 0/1: a one-pixel shift
    model.conv.naive_padding = False
    ref = _reference(model, x, taps)
    model.conv.naive_padding = True
    chained = port.compare(model, x, ref, taps)
    assert [r.passed for r in chained.rows] == [False, False] and chained.mode == "chained"
    assert chained.diagnosis.cause == "padding" and chained.diagnosis.module == "conv"
    isolated = port.compare(model, x, ref, taps, isolate=True)
    assert isolated.mode == "isolated"
    assert [(r.passed, r.tolerance) for r in isolated.rows] == [(False, "layer"), (True, "layer")]
    assert isolated.diagnosis.cause == "padding"


class Shared(nn.Module):
    """One convolution applied twice (shared weights), an average pool in between."""

    def __init__(self):
        super().__init__()
        self.conv = port.Conv2d(4, 4, 3)
        self.mid = port.AvgPool2d(3, 1, "SAME")

    def forward(self, x):
        return self.conv(self.mid(self.conv(x)))


def test_a_module_called_twice_is_tapped_per_call():
    torch.manual_seed(0)
    model = Shared().eval()
    taps, untapped = port.taps_for(["c0", "mid", "c1"], model, (),
                                   {"c0": "conv@0", "mid": "mid", "c1": "conv@1"})
    assert [(t.module, t.call) for t in taps] == [("conv", 0), ("mid", 0), ("conv", 1)]
    x = torch.rand(1, 4, 6, 6)
    ref = _reference(model, x, taps)
    assert not np.array_equal(ref["c0"], ref["c1"])
    assert port.compare(model, x, ref, taps).passed
    model.mid.count_include_pad = True
    chained = port.compare(model, x, ref, taps)
    assert [r.passed for r in chained.rows] == [True, False, False]
    assert chained.diagnosis.cause == "avgpool-count" and chained.diagnosis.module == "mid"
    isolated = port.compare(model, x, ref, taps, isolate=True)  # conv@1 fed TF's mid
    assert [r.passed for r in isolated.rows] == [True, False, True]


class Up(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = port.Conv2d(3, 4, 3)
        self.up = port.Resize((11, 9))  # TF1's legacy bilinear sampling
        self.deconv = port.ConvTranspose2d(4, 2, 4, 2)

    def forward(self, x):
        return self.deconv(self.up(self.conv(x)))


@pytest.mark.parametrize("mistake, cause, module", [
    ("half-pixel resize", "resize", "up"),
    ("transposed kernel", "weight-layout", "deconv"),
])
def test_resize_convention_and_kernel_layout_are_named(mistake, cause, module):
    torch.manual_seed(0)
    model = Up().eval()
    taps = [port.Tap("conv", "conv"), port.Tap("up", "up"), port.Tap("out", "deconv")]
    x = torch.rand(1, 3, 6, 5)
    ref = _reference(model, x, taps)
    if mistake == "half-pixel resize":
        model.up = port.Resize((11, 9), half_pixel_centers=True)
    else:
        with torch.no_grad():
            model.deconv.weight.copy_(model.deconv.weight.transpose(-1, -2).clone())
    result = port.compare(model, x, ref, taps)
    assert result.diagnosis.cause == cause and result.diagnosis.module == module
    if cause == "resize":
        assert "TF1's legacy bilinear sampling" in result.diagnosis.summary


@pytest.mark.parametrize("variant", ["color", "lstm"])
def test_srns_own_checkpoints_convert_through_the_toolkit_as_srn_port_converts_them(
        tmp_path, variant):
    # one rule maps SRN-Deblur's g_net onto srn-port's SRN module: the same tensors as
    # SRN's own converter (srn_port.core.convert), Adam slots, beta powers and step dropped
    from _srn_ckpt import write_srn_checkpoint

    from srn_port.core.convert import convert_checkpoint
    from srn_port.core.network import SRNConfig
    from srn_port.nn.model import SRN

    config = SRNConfig(variant=variant, width=4)
    prefix = write_srn_checkpoint(tmp_path, config, seed=3)
    ours = port.convert(prefix, SRN(config), (port.Map("g_net", ""),) + port.TRAINING_STATE)
    srn = convert_checkpoint(prefix)
    assert list(ours.state_dict) == list(srn.arrays)
    for key, array in srn.arrays.items():
        assert torch.equal(ours.state_dict[key], torch.from_numpy(array)), key
    assert set(ours.dropped) == set(srn.dropped)


@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
def test_srn_port_convert_is_the_toolkits_mechanism(tmp_path, variant):
    # SRN's target, read from the level graph without torch, is what the toolkit reads from
    # SRN's own modules (layouts included); with SRN's rules the toolkit's ledger is
    # srn-port convert's, each dropped variable under the same rule name
    from _srn_ckpt import write_srn_checkpoint

    from srn_port.core import naming
    from srn_port.core.checkpoint import CheckpointReader
    from srn_port.core.convert import convert_checkpoint
    from srn_port.core.network import SRNConfig
    from srn_port.nn.model import SRN

    config = SRNConfig(variant=variant, width=4)
    model = SRN(config)
    graph, modules = naming.srn_target(config), port.target_of(model)
    assert graph.params == modules.params
    assert graph.owners == {path: leaves for path, leaves in modules.owners.items() if leaves}
    prefix = write_srn_checkpoint(tmp_path, config, seed=5)
    with CheckpointReader(prefix) as reader:
        names = reader.keys()
    toolkit = port.convert(prefix, model, naming.rules(names))
    srn = convert_checkpoint(prefix)
    assert toolkit.mapped == srn.mapped and toolkit.dropped == srn.dropped
    assert set(srn.dropped.values()) == {"optimizer slot", "adam beta power", "global step"}


def test_moving_averages_are_read_in_place_of_their_variables(tmp_path):
    rng = np.random.default_rng(4)
    tensors = _tensors(rng)
    shadowed = ("net/fc/weights", "net/conv/BatchNorm/moving_mean")
    for name in shadowed:
        tensors[f"{name}/ExponentialMovingAverage"] = tensors[name] + np.float32(1)
    write_checkpoint(tmp_path / "model", tensors)
    plain = port.convert(tmp_path / "model", Tiny(), RULES)
    assert all(plain.dropped[f"{n}/ExponentialMovingAverage"]
               == "an exponential-moving-average shadow" for n in shadowed)
    ema = port.convert(tmp_path / "model", Tiny(), port.ema_rules(list(tensors)) + RULES)
    assert all(ema.dropped[n] == "replaced by EMA" for n in shadowed)
    assert torch.equal(ema.state_dict["fc.weight"],
                       torch.from_numpy(tensors["net/fc/weights"].T + 1))
    assert torch.equal(ema.state_dict["conv.BatchNorm.moving_mean"],
                       torch.from_numpy(tensors["net/conv/BatchNorm/moving_mean"] + 1))
    # a variable without a shadow is read as it is
    assert torch.equal(ema.state_dict["fc.bias"], plain.state_dict["fc.bias"])


@pytest.mark.parametrize("layout,shape", [("conv", (3, 5, 7, 9)), ("conv_transpose", (3, 5, 7, 9)),
                                          ("depthwise", (3, 5, 7, 2)), ("fc", (4, 6)),
                                          ("vector", (5,))])
def test_the_ledger_checks_a_layout_on_its_shape_alone(layout, shape):
    from srn_port.core.mapping import layout_shape

    assert layout_shape(layout, shape) == port.LAYOUTS[layout](np.zeros(shape)).shape
    assert layout_shape(layout, shape + (1,)) is None or layout == "vector"

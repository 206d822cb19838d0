"""The PyTorch SRN without TF: structure, names, shapes, errors, capture and node-level
evaluation."""

import pytest
import torch

from srn_port.core.network import SRNConfig
from srn_port.core.network import level_graph
from srn_port.nn.model import SRN, InputShapeError, capture_activations
from srn_port.core.naming import tf_to_torch_name, torch_to_tf_name


@pytest.mark.parametrize("variant,millions", [("color", 6.88), ("gray", 6.88), ("lstm", 8.06)])
def test_parameter_count_of_released_width(variant, millions):
    with torch.device("meta"):
        model = SRN(SRNConfig(variant))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - millions) < 0.01


def test_module_names_mirror_tf_scopes():
    with torch.device("meta"):
        sd = SRN(SRNConfig("lstm")).state_dict()
    assert "enc1_2.conv1.weight" in sd and "convLSTM.LSTM_conv.bias" in sd
    for key in sd:
        assert tf_to_torch_name(torch_to_tf_name(key)) == key
    assert torch_to_tf_name("enc2_1.weight") == "g_net/enc2_1/weights"
    assert sd["dec2_4.weight"].shape == (128, 64, 4, 4)  # TF [4, 4, 64, 128] permuted
    # 6 plain layers + 18 ResNet blocks (2 convs each) + the LSTM conv; weights and biases
    assert len(sd) == 2 * (6 + 18 * 2 + 1)


@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
def test_forward_returns_three_levels_coarse_to_fine(variant):
    cfg = SRNConfig(variant, width=4)
    model = SRN(cfg).eval()
    x = torch.rand(2, cfg.channels, 48, 80)
    with torch.no_grad():
        outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, cfg.channels, 12, 20), (2, cfg.channels, 24, 40),
                                              (2, cfg.channels, 48, 80)]


@pytest.mark.parametrize("shape", [(1, 3, 50, 64), (1, 3, 64, 40), (1, 1, 64, 64), (3, 64, 64)])
def test_bad_input_shapes_give_clear_errors(shape):
    model = SRN(SRNConfig("color", width=4))
    with pytest.raises(InputShapeError) as err:
        model(torch.rand(*shape))
    assert "multiples of 16" in str(err.value) or "channel" in str(err.value)


@pytest.mark.parametrize("variant", ["color", "lstm"])
def test_capture_sees_every_node_and_changes_nothing(variant):
    torch.manual_seed(0)
    cfg = SRNConfig(variant, width=4)
    model = SRN(cfg).eval()
    x = torch.rand(1, cfg.channels, 32, 48)
    with torch.no_grad():
        plain = model(x)
        acts = capture_activations(model, x)
    names = [n.name for n in level_graph(cfg)]
    assert set(acts) == {(lvl, n) for lvl in range(3) for n in names}
    for lvl in range(3):
        assert torch.equal(acts[(lvl, "dec1_0")], plain[lvl])
    assert ("convLSTM" in names) == (variant == "lstm")
    assert names.index("enc2_1") < names.index("dec2_4") < names.index("cat2")


def test_apply_node_on_captured_inputs_reproduces_each_node():
    """Node-level evaluation (what `diff --isolate` builds on) equals the chained run."""
    torch.manual_seed(0)
    cfg = SRNConfig("lstm", width=4)
    model = SRN(cfg).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        acts = capture_activations(model, x)
        outs = model(x)
        for lvl in range(3):
            feeds = {"input": x, "prev_output": x if lvl == 0 else outs[lvl - 1],
                     "prev_state": model.initial_state(x) if lvl == 0 else acts[(lvl - 1, "convLSTM_state")]}
            size = acts[(lvl, "inp_blur")].shape[-2:]
            for node in model.graph:
                args = [feeds[i] if i in feeds else acts[(lvl, i)] for i in node.inputs]
                assert torch.equal(model.apply_node(node, args, tuple(size)), acts[(lvl, node.name)])


def test_emulations_change_results_and_switch_back():
    torch.manual_seed(0)
    model = SRN(SRNConfig("color", width=4)).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        exact = model(x)[-1]
        for emu in (["torch-padding"], ["torch-resize"]):
            model.set_emulation(emu)
            assert not torch.allclose(model(x)[-1], exact, atol=1e-4)
        model.set_emulation([])
        assert torch.equal(model(x)[-1], exact)
    with pytest.raises(ValueError):
        model.set_emulation(["tf-magic"])


def test_lstm_forget_bias_and_gate_order():
    """One cell step against the equations written out by hand."""
    from srn_port.nn.model import ConvLSTMCell
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3)
    x, state = torch.randn(1, 2, 4, 4), torch.randn(1, 6, 4, 4)
    c, h = state[:, :3], state[:, 3:]
    g = cell.LSTM_conv(torch.cat([x, h], 1))
    i, j, f, o = g[:, 0:3], g[:, 3:6], g[:, 6:9], g[:, 9:12]
    new_c = c * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)
    new_h = torch.tanh(new_c) * torch.sigmoid(o)
    assert torch.allclose(cell(x, state), torch.cat([new_c, new_h], 1))


@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
@pytest.mark.parametrize("width", [3, 32])
def test_param_shapes_spec_equals_the_model(variant, width):
    from srn_port.core.network import param_shapes
    cfg = SRNConfig(variant, width)
    with torch.device("meta"):
        sd = SRN(cfg).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == list(param_shapes(cfg).items())

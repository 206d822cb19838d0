"""Conversion without TF: checkpoints written by the test-only bundle writer -> convert ->
load -> the same tensors; strictness of the name rules; atomic, non-destructive output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from srn_port import load_model
from srn_port.core.network import SRNConfig
from srn_port.api.convert import convert
from srn_port.core.convert import convert_checkpoint
from srn_port.core.errors import FileWriteError
from srn_port.core.errors import ConversionError, SrnPortError
from srn_port.core.naming import tf_to_torch_name
from srn_port.api.weights import as_state_dict, load_weights

from _srn_ckpt import srn_tensors, write_srn_checkpoint


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("variant,width", [("color", 4), ("gray", 8), ("lstm", 4), ("color", 32)])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_convert_load_round_trip_reproduces_every_tensor(tmp_path, variant, width, suffix):
    cfg = SRNConfig(variant, width)
    tensors = srn_tensors(cfg, seed=3)
    write_srn_checkpoint(tmp_path / "ckpt", cfg, tensors=tensors)
    before = _digest(tmp_path / "ckpt")
    out = tmp_path / f"model{suffix}"
    conv = convert(tmp_path / "ckpt", out)
    assert _digest(tmp_path / "ckpt") == before  # input untouched
    assert conv.config == cfg and conv.step == 523000
    model = load_model(out)
    assert model.config == cfg and not model.training
    sd = model.state_dict()
    n_weights = 0
    for name, value in tensors.items():
        pt = tf_to_torch_name(name)
        if pt is None or "/Adam" in name:
            continue
        n_weights += 1
        expect = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
        assert torch.equal(sd[pt], torch.from_numpy(np.ascontiguousarray(expect))), name
    assert n_weights == len(sd)
    meta = model.metadata
    assert (meta["variant"], meta["width"], meta["step"]) == (variant, width, 523000)
    assert meta["source"].endswith("deblur.model-523000") and meta["srn_port_version"]


def test_pt_file_loads_with_weights_only(tmp_path):
    cfg = SRNConfig("lstm", 4)
    write_srn_checkpoint(tmp_path / "ckpt", cfg)
    convert(tmp_path / "ckpt", tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["format"] == "srn-port/weights" and payload["metadata"]["variant"] == "lstm"
    assert set(payload["state_dict"]) == set(load_model(tmp_path / "m.pt").state_dict())


def test_detects_variant_and_width(tmp_path):
    for variant, width in [("color", 6), ("gray", 4), ("lstm", 3)]:
        cfg = SRNConfig(variant, width)
        folder = tmp_path / f"{variant}{width}"
        write_srn_checkpoint(folder, cfg)
        assert convert_checkpoint(folder).config == cfg


def test_variant_mismatch_is_an_error(tmp_path):
    write_srn_checkpoint(tmp_path, SRNConfig("gray", 4))
    with pytest.raises(ConversionError, match="variant 'lstm' was requested.*'gray'"):
        convert_checkpoint(tmp_path, variant="lstm")
    assert convert_checkpoint(tmp_path, variant="gray").config.variant == "gray"


def test_unknown_missing_and_misshaped_variables_are_listed(tmp_path):
    cfg = SRNConfig("color", 4)
    tensors = srn_tensors(cfg)
    tensors["g_net/extra_layer/weights"] = np.zeros((3, 3, 4, 4), np.float32)
    tensors["some_other_thing"] = np.zeros(2, np.float32)
    del tensors["g_net/dec1_2/conv2/biases"]
    tensors["g_net/enc2_3/conv1/weights"] = np.zeros((5, 5, 8, 7), np.float32)
    write_srn_checkpoint(tmp_path / "c", cfg, tensors=tensors)
    with pytest.raises(ConversionError) as err:
        convert(tmp_path / "c", tmp_path / "out.pt")
    msg = str(err.value)
    for piece in ("some_other_thing", "g_net/extra_layer/weights", "g_net/dec1_2/conv2/biases",
                  "g_net/enc2_3/conv1/weights: shape [5, 5, 8, 7], expected [5, 5, 8, 8]",
                  "Nothing was written"):
        assert piece in msg
    assert not (tmp_path / "out.pt").exists()


def test_optimizer_slots_of_any_v1_optimizer_are_dropped(tmp_path):
    cfg = SRNConfig("gray", 4)
    tensors = srn_tensors(cfg, slots=("Momentum", "RMSProp", "RMSProp_1", "RMSProp_2", "Adagrad",
                                      "Adadelta", "Adadelta_1", "Ftrl", "Ftrl_1"))
    tensors["global_step"] = np.int64(12)
    tensors["beta1_power_1"] = np.float32(0.9)
    write_srn_checkpoint(tmp_path, cfg, tensors=tensors)
    conv = convert_checkpoint(tmp_path)
    assert set(conv.dropped.values()) == {"optimizer slot", "global step", "adam beta power"}


def test_ema_shadows_dropped_by_default_and_used_with_ema(tmp_path):
    cfg = SRNConfig("color", 4)
    tensors = srn_tensors(cfg)
    weights = [n for n in list(tensors) if tf_to_torch_name(n) and "/Adam" not in n]
    for n in weights:
        tensors[f"{n}/ExponentialMovingAverage"] = tensors[n] + np.float32(1.0)
    write_srn_checkpoint(tmp_path, cfg, tensors=tensors)
    plain = convert_checkpoint(tmp_path)
    ema = convert_checkpoint(tmp_path, ema=True)
    assert all(plain.dropped[f"{n}/ExponentialMovingAverage"] == "EMA shadow" for n in weights)
    name = "g_net/enc1_1/biases"
    assert torch.equal(as_state_dict(ema.arrays)["enc1_1.bias"], torch.from_numpy(tensors[name] + 1))
    assert torch.equal(as_state_dict(plain.arrays)["enc1_1.bias"], torch.from_numpy(tensors[name]))
    assert ema.dropped[name] == "replaced by EMA" and ema.metadata()["ema"] is True


def test_other_network_is_rejected(tmp_path):
    from _bundle_writer import write_bundle
    write_bundle(tmp_path / "resnet.ckpt-1", {
        "resnet/conv1/weights": np.zeros((7, 7, 3, 64), np.float32), "global_step": np.int64(1)})
    with pytest.raises(ConversionError, match="not an SRN-Deblur generator"):
        convert_checkpoint(tmp_path / "resnet.ckpt-1")


def test_refuses_to_overwrite_without_force_and_writes_atomically(tmp_path, monkeypatch):
    cfg = SRNConfig("color", 4)
    write_srn_checkpoint(tmp_path / "c", cfg)
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    with pytest.raises(SrnPortError, match="--force"):
        convert(tmp_path / "c", out)
    assert out.read_bytes() == b"precious"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(FileWriteError, match="Cannot write .*m.pt.*disk full"):
        convert(tmp_path / "c", out, force=True)
    assert out.read_bytes() == b"precious"  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "m.pt"]  # no temp left behind
    monkeypatch.undo()
    convert(tmp_path / "c", out, force=True)
    assert load_weights(out)[1]["variant"] == "color"


def test_bad_output_extension(tmp_path):
    write_srn_checkpoint(tmp_path / "c", SRNConfig("color", 4))
    with pytest.raises(SrnPortError, match=r"\.pt.*\.safetensors"):
        convert(tmp_path / "c", tmp_path / "m.index")


def test_convert_to_safetensors_never_imports_torch(tmp_path):
    """The converter path is torch-free (fast start-up, works where torch is broken)."""
    import subprocess
    import sys
    write_srn_checkpoint(tmp_path / "c", SRNConfig("color", 4))
    code = ("import sys; sys.modules['torch'] = None; sys.modules['tensorflow'] = None\n"
            "from srn_port.cli import main\n"
            "main(["
            f"'convert', {str(tmp_path / 'c')!r}, {str(tmp_path / 'm.safetensors')!r}])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert load_model(tmp_path / "m.safetensors").config == SRNConfig("color", 4)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    write_srn_checkpoint(tmp_path / "c", SRNConfig("color", 4))
    convert(tmp_path / "c", tmp_path / "m.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask

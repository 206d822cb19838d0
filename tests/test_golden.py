"""Golden regression without TensorFlow: each committed golden checkpoint, converted by the
pure-Python reader, run through the PyTorch model, must reproduce the TF tensors stored in
golden/<name>.h5 at every node of every level, within the tolerance table.

The comparison here is written out on its own (capture_activations + the table), not through
srn_port.parity, so it also checks the library that `srn-port diff` is built on. A missing or
stale golden fails with the command that regenerates it.
"""

from __future__ import annotations

import shutil

import h5py
import pytest
import torch

from conftest import REPO
from srn_port.core.network import N_LEVELS
from srn_port.api.weights import as_state_dict
from srn_port.core.convert import convert_checkpoint
from srn_port.nn.model import SRN, capture_activations
from srn_port.parity.golden import (FORMAT_VERSION, FROM_CHECKPOINT, GENERATED, GoldenError,
                                    GoldenFile, regenerate_command)
from srn_port.core.tolerances import TOLERANCES, node_tolerance_keys, within

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = REPO / "golden"


def golden_names():
    extra = sorted(p.stem for p in GOLDEN.glob("*.h5") if p.stem not in GENERATED)
    return list(GENERATED) + extra


def open_or_fail(name) -> GoldenFile:
    path = GOLDEN / f"{name}.h5"
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing; make it with: {regenerate_command(name)}")
    try:
        return GoldenFile(path, verify_checkpoint=True, require_checkpoint=True)
    except GoldenError as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("name", golden_names())
def test_pytorch_reproduces_golden(name):
    with open_or_fail(name) as golden:
        info = golden.info
        conv = convert_checkpoint(golden.checkpoint_prefix())  # no TF involved
        assert conv.config == info.config
        model = SRN(conv.config).eval()
        model.load_state_dict(as_state_dict(conv.arrays), strict=True)
        x = golden.input()
        assert tuple(x.shape) == info.input_shape
        with torch.no_grad():
            acts = capture_activations(model, x)
        failures, checked = [], 0
        for level in range(N_LEVELS):
            for node, key in node_tolerance_keys(model.graph, level).items():
                ours, ref = acts[(level, node)], golden.tensor(level, node)
                assert ours.shape == ref.shape, (level, node)
                err = float((ours - ref).abs().max())
                scale = float(ref.abs().max())
                checked += 1
                if not within(err, scale, TOLERANCES[key]):
                    failures.append(f"level {level} {node}: {err:.3g} of max {scale:.3g} "
                                    f"exceeds '{key}' ({TOLERANCES[key].rel:g})")
            out = golden.output(level)
            assert torch.equal(out, golden.tensor(level, "dec1_0"))
            assert float(out.abs().max()) > 0.1  # a real signal, not a collapsed network
            err = float((acts[(level, "dec1_0")] - out).abs().max())
            assert within(err, float(out.abs().max()), TOLERANCES["output"]), (level, err)
    assert checked == N_LEVELS * len(model.node_names())
    assert not failures, "\n".join(failures)


def test_goldens_are_small_and_describe_themselves():
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert total < 30e6, f"golden/ holds {total / 1e6:.1f} MB; the budget is 30 MB"
    for name in GENERATED:
        with open_or_fail(name) as golden:
            a = golden.info.attrs
            assert a["variant"] == name and a["layout"] == "NCHW"
            assert a["batch"] == (1 if name == "color" else 3)
            assert golden.info.input_shape[2:] == (64, 96)  # non-square
            for key in ("tf_version", "tf_slim_version", "command", "checkpoint_seed"):
                assert a[key] not in ("", None)
            assert not list((GOLDEN / "ckpt" / name).glob("*.meta"))
            state = (GOLDEN / "ckpt" / name / "checkpoint").read_text()
            assert '"deblur.model-523000"' in state  # relative, works wherever the repo is


def test_trained_golden_records_its_checkpoint():
    # the demo's `srn-port diff` finds this golden by variant and width (color, 8)
    for name, folder in FROM_CHECKPOINT.items():
        assert regenerate_command(name) == (f"python tools/make_golden.py --checkpoint {folder} "
                                            f"--name {name}")
        with open_or_fail(name) as golden:
            assert golden.checkpoint_prefix().parent == (REPO / folder).resolve()
            assert golden.info.attrs["checkpoint_seed"] == -1  # trained, not generated


# -- staleness: every way a golden can go stale names the regenerating command ----------
def _copy(tmp_path, name="color"):
    shutil.copy(GOLDEN / f"{name}.h5", tmp_path / f"{name}.h5")
    shutil.copytree(GOLDEN / "ckpt" / name, tmp_path / "ckpt" / name)
    return tmp_path / f"{name}.h5"


def test_copy_of_a_golden_is_valid(tmp_path):
    with GoldenFile(_copy(tmp_path), require_checkpoint=True) as g:
        assert g.checkpoint_prefix().parent == tmp_path / "ckpt" / "color"


def test_changed_checkpoint_makes_golden_stale(tmp_path):
    path = _copy(tmp_path)
    data = next((tmp_path / "ckpt" / "color").glob("*.data-*"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(GoldenError) as err:
        GoldenFile(path)
    assert "python tools/make_golden.py --variant color" in str(err.value)
    assert "SHA-256" in str(err.value) and data.name in str(err.value)


def test_old_format_version_is_stale(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION - 1
    with pytest.raises(GoldenError) as err:
        GoldenFile(path)
    assert "format version" in str(err.value)
    assert "python tools/make_golden.py --variant color" in str(err.value)


def test_missing_tensor_is_stale(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["level1/enc2_3"]
    with pytest.raises(GoldenError) as err:
        GoldenFile(path)
    assert "enc2_3" in str(err.value) and "--variant color" in str(err.value)


def test_missing_golden_and_missing_checkpoint(tmp_path):
    with pytest.raises(GoldenError) as err:
        GoldenFile(tmp_path / "lstm.h5")
    assert "python tools/make_golden.py --variant lstm" in str(err.value)
    path = _copy(tmp_path)
    shutil.rmtree(tmp_path / "ckpt")
    GoldenFile(path).close()  # its tensors are usable without the checkpoint...
    with pytest.raises(GoldenError) as err:  # ...but the regression test needs it
        GoldenFile(path, require_checkpoint=True)
    assert "--variant color" in str(err.value)

"""`srn-port convert` / `inspect` from the command line, and every bad input the converter
issue lists: a one-paragraph error naming the file, exit code 1, no traceback, no output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from srn_port.cli import cli
from srn_port.core.network import SRNConfig

from _bundle_writer import build_table, write_bundle
from _srn_ckpt import write_srn_checkpoint


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    write_srn_checkpoint(folder, SRNConfig("lstm", 4))
    return folder


def _copy(good, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(good, dst)
    return dst


def _expect_failure(tmp_path, ckpt, *needles):
    out = tmp_path / "out.pt"
    result = run("convert", ckpt, out)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ")
    for needle in needles:
        assert needle in result.output, result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".out.pt.*"))


def test_convert_and_inspect_succeed(good, tmp_path):
    result = run("convert", good, tmp_path / "m.safetensors")
    assert result.exit_code == 0, result.output
    assert "SRN lstm, width 4, step 523000" in result.output
    assert "mapped 86 variables" in result.output and "172 optimizer slot" in result.output
    result = run("inspect", good)
    assert result.exit_code == 0
    assert "g_net/convLSTM/LSTM_conv/weights" in result.output
    assert "-> convLSTM.LSTM_conv.weight" in result.output
    assert "dropped (optimizer slot)" in result.output and "0 unknown" in result.output


def test_convert_with_step_and_prefix(good, tmp_path):
    assert run("convert", good, tmp_path / "a.pt", "--step", 523000).exit_code == 0
    assert run("convert", good / "deblur.model-523000", tmp_path / "b.pt").exit_code == 0
    result = run("convert", good, tmp_path / "c.pt", "--step", 7)
    assert result.exit_code == 1 and "523000" in result.output  # lists the steps available


def test_missing_index(good, tmp_path):
    ckpt = _copy(good, tmp_path)
    (ckpt / "deblur.model-523000.index").unlink()
    _expect_failure(tmp_path, ckpt, "deblur.model-523000")


def test_missing_data(good, tmp_path):
    ckpt = _copy(good, tmp_path)
    (ckpt / "deblur.model-523000.data-00000-of-00001").unlink()
    _expect_failure(tmp_path, ckpt, "data-00000-of-00001")


@pytest.mark.parametrize("suffix", [".index", ".data-00000-of-00001"])
def test_truncated_files(good, tmp_path, suffix):
    ckpt = _copy(good, tmp_path)
    path = ckpt / f"deblur.model-523000{suffix}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_failure(tmp_path, ckpt, path.name)


@pytest.mark.parametrize("suffix,where", [(".index", 40), (".data-00000-of-00001", 1000)])
def test_flipped_byte_fails_the_checksum(good, tmp_path, suffix, where):
    ckpt = _copy(good, tmp_path)
    path = ckpt / f"deblur.model-523000{suffix}"
    data = bytearray(path.read_bytes())
    data[where] ^= 0x10
    path.write_bytes(bytes(data))
    _expect_failure(tmp_path, ckpt, path.name)
    assert "corrupt" in run("convert", ckpt, tmp_path / "x.pt").output.lower()


def test_v1_checkpoint(tmp_path):
    folder = tmp_path / "v1"
    folder.mkdir()
    # A V1 checkpoint is a single SSTable file of SavedSlices with no .index beside it.
    (folder / "model.ckpt").write_bytes(build_table([(b"", b"\x0a\x00")], 262144, 0))
    _expect_failure(tmp_path, folder / "model.ckpt", "V1")


def test_checkpoint_of_another_network(tmp_path):
    folder = tmp_path / "other"
    write_bundle(folder / "model.ckpt-10", {"vgg/conv1_1/weights": np.zeros((3, 3, 3, 8), np.float32)})
    _expect_failure(tmp_path, folder, "not an SRN-Deblur")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    _expect_failure(tmp_path, tmp_path / "empty", "empty")


def test_checkpoint_file_pointing_nowhere(good, tmp_path):
    ckpt = _copy(good, tmp_path)
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "/data/old/deblur.model-999"\n')
    _expect_failure(tmp_path, ckpt, "deblur.model-999")


def test_checkpoint_file_with_absolute_path_from_another_machine(good, tmp_path):
    ckpt = _copy(good, tmp_path)
    (ckpt / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/SRN/checkpoints/color/deblur.model-523000"\n')
    assert run("convert", ckpt, tmp_path / "m.pt").exit_code == 0


def test_existing_output_needs_force(good, tmp_path):
    out = tmp_path / "m.pt"
    out.write_text("keep me")
    result = run("convert", good, out)
    assert result.exit_code == 1 and "--force" in result.output
    assert out.read_text() == "keep me"
    assert run("convert", good, out, "--force").exit_code == 0


def test_nonexistent_path(tmp_path):
    _expect_failure(tmp_path, tmp_path / "nope", "nope", "does not exist")

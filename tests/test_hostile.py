"""Hostile input: crafted files (checksums valid), odd file kinds, failing writes.

Every case gives a one-paragraph error (exit 1; ``diff``: 2) that names the file, leaves
nothing half-written, never touches an input, and stays bounded in memory and time
whatever the file claims. The crafted files are built here, small.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import save_file

from _bundle_writer import Stored, build_table, write_bundle
from _srn_ckpt import srn_tensors, write_srn_checkpoint
from conftest import REPO
from srn_port.api.convert import convert
from srn_port.api.weights import load_model, save_weights
from srn_port.cli import cli
from srn_port.core import limits
from srn_port.core.checkpoint import CheckpointError, CheckpointReader, protos
from srn_port.core.convert import convert_checkpoint
from srn_port.core.errors import (ConversionError, FileWriteError, ImageError, ModelFileError,
                                  SrnPortError)
from srn_port.core.fileio import atomic_write
from srn_port.core.network import SRNConfig, param_shapes
from srn_port.core.weightfile import FORMAT, save_safetensors
from srn_port.data.images import encode_image, read_image
from srn_port.parity.golden import GoldenFile

GOLDEN = REPO / "golden"
CFG = SRNConfig("color", 4)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def flat(result) -> str:
    return " ".join(result.output.split())


def one_paragraph_error(result) -> str:
    text = flat(result)
    assert "Traceback" not in result.output and "UserWarning" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Error:" in text, result.output
    return text


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_srn_checkpoint(tmp_path_factory.mktemp("ckpt"), CFG)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, ckpt):
    out = tmp_path_factory.mktemp("w") / "color.safetensors"
    convert(ckpt, out)
    return out


# -- crafted checkpoint indexes -------------------------------------------------------------

def craft(prefix: Path, entries: dict, num_shards: int = 1, data: bytes = b"\0" * 16) -> Path:
    """A checksum-valid bundle: the header claims ``num_shards``, the entries are given as
    protos, and data file 0 holds ``data``."""
    header = protos.BundleHeaderProto(num_shards=num_shards, endianness=0)
    header.version.producer = 1
    table = [(b"", header.SerializeToString())] + sorted(
        (k.encode() if isinstance(k, str) else k, v.SerializeToString()) for k, v in entries.items())
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.index").write_bytes(build_table(table))
    Path(f"{prefix}.data-00000-of-{num_shards:05d}").write_bytes(data)
    return prefix


def entry(dtype=1, shape=(4,), size=16, offset=0, shard=0, slices=()):
    e = protos.BundleEntryProto(dtype=dtype, shard_id=shard, offset=offset, size=size)
    for d in shape:
        e.shape.dim.add(size=d)
    for extents in slices:
        s = e.slices.add()
        for start, length in extents:
            x = s.extent.add(start=start)
            if length is not None:
                x.length = length
    return e


def test_a_header_claiming_two_billion_shards_is_refused_at_once(tmp_path):
    prefix = craft(tmp_path / "p", {"a": entry()}, num_shards=2147483647)
    with pytest.raises(CheckpointError, match="2,147,483,647 data files.*SRN_PORT_MAX_SHARDS"):
        CheckpointReader(prefix)
    res = run("inspect", prefix)
    assert res.exit_code == 1 and len(one_paragraph_error(res)) < 800


def test_many_missing_shards_are_summarised(tmp_path, monkeypatch):
    monkeypatch.setenv(limits.SHARDS.env, "200000")
    prefix = craft(tmp_path / "p", {"a": entry()}, num_shards=100000)
    with pytest.raises(CheckpointError) as err:
        CheckpointReader(prefix)
    message = str(err.value)
    assert "99,999 are missing" in message and "99,994 more" in message and len(message) < 1500


def test_an_oversized_index_is_refused_unread(tmp_path):
    index = tmp_path / "big.index"
    with open(index, "wb") as f:  # sparse: 3 GB claimed, nothing written
        f.truncate(3 * 2**30)
    rss_before = _rss_mb()
    with pytest.raises(CheckpointError, match="3,221,225,472 bytes.*SRN_PORT_MAX_INDEX_BYTES"):
        CheckpointReader(tmp_path / "big")
    assert _rss_mb() - rss_before < 100


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_tensor_of_65_dimensions_is_an_error(tmp_path):
    prefix = craft(tmp_path / "p", {"a": entry(shape=(1,) * 65, size=4)})
    with CheckpointReader(prefix) as reader, pytest.raises(CheckpointError, match="65 dimensions"):
        reader.get_tensor("a")


@pytest.mark.parametrize("shape,claimed", [
    ((100000, 1000000), 4 * 100000 * 1000000),  # 373 GiB of float32
    ((2**62, 4), 16),  # the element count overflows int64
])
def test_partitioned_tensors_claiming_absurd_sizes_are_errors(tmp_path, shape, claimed):
    from srn_port.core.checkpoint.ordered_code import tensor_slice_key

    full = [(0, shape[0]), (0, shape[1])]
    key = tensor_slice_key("big", full)
    prefix = craft(tmp_path / "p", {"big": entry(shape=shape, size=0, slices=[full]),
                                    key: entry(shape=shape, size=claimed % 2**63)})
    with CheckpointReader(prefix) as reader, pytest.raises(CheckpointError):
        reader.get_tensor("big")


def test_width_zero_is_a_conversion_error(tmp_path):
    tensors = srn_tensors(CFG)
    tensors["g_net/enc1_1/weights"] = np.zeros((5, 5, 6, 0), np.float32)
    prefix = write_srn_checkpoint(tmp_path, CFG, tensors=tensors)
    with pytest.raises(ConversionError, match="width of 0"):
        convert_checkpoint(prefix)


@pytest.mark.parametrize("named", [".", "/", "..", "./"])
def test_a_state_file_naming_a_folder_is_refused(tmp_path, named):
    # Beside the folder lies another checkpoint whose prefix is the folder's own name: the
    # state file must not lead the reader to it.
    write_bundle(tmp_path / "ck", srn_tensors(SRNConfig("gray", 4)))
    folder = tmp_path / "ck"
    write_srn_checkpoint(folder, CFG)
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')
    with pytest.raises(CheckpointError, match="folder, not a checkpoint prefix"):
        convert_checkpoint(folder)


def test_a_flipped_byte_in_an_optimizer_slot_fails_the_conversion(tmp_path, ckpt):
    import shutil

    folder = tmp_path / "c"
    shutil.copytree(ckpt.parent, folder)
    prefix = folder / ckpt.name
    with CheckpointReader(prefix) as reader:
        bundle = reader._open_bundle()
        slot = bundle._entries["g_net/dec1_0/weights/Adam_1"]
        where = slot.offset + slot.size // 2
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[where] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="Adam_1.*fails its checksum"):
        convert_checkpoint(prefix)
    res = run("convert", prefix, tmp_path / "out.pt")
    assert res.exit_code == 1 and not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused(tmp_path, bad, weights):
    tensors = srn_tensors(CFG)
    tensors["g_net/enc2_3/conv1/weights"].flat[7] = bad
    prefix = write_srn_checkpoint(tmp_path / "c", CFG, tensors=tensors)
    with pytest.raises(ConversionError, match="NaN or infinite.*enc2_3/conv1/weights.*1 of"):
        convert_checkpoint(prefix)
    sd = {k: v.clone() for k, v in load_model(weights, channels_last=False).state_dict().items()}
    sd["dec1_0.bias"][0] = float(bad)
    out = tmp_path / "bad.pt"
    save_weights(sd, {"variant": "color", "width": 4}, out)
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(out)
    res = run("export-tf", out, tmp_path / "tf")
    assert res.exit_code == 1 and "NaN or infinite" in one_paragraph_error(res)
    assert not list(tmp_path.glob("tf/*.index"))
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(np.full((32, 32, 3), 100, np.uint8), ".png"))
    res = run("deblur", out, photo, "-o", tmp_path / "o")
    assert res.exit_code == 1 and "NaN or infinite" in one_paragraph_error(res)
    assert not (tmp_path / "o").exists()


# -- weights files ---------------------------------------------------------------------------

def test_metadata_claiming_width_4096_is_refused_before_building_a_model(tmp_path, weights):
    arrays = {k: v.numpy() for k, v in load_model(weights, channels_last=False).state_dict().items()}
    out = tmp_path / "w.safetensors"
    save_safetensors(arrays, {"variant": "color", "width": 4096}, out)
    rss_before = _rss_mb()
    with pytest.raises(ModelFileError, match="width"):
        load_model(out)
    assert _rss_mb() - rss_before < 200
    # within the width bound, the tensors are checked before the model is built
    save_safetensors(arrays, {"variant": "color", "width": 200}, out, force=True)
    with pytest.raises(ModelFileError, match="does not fit an SRN color model of width 200"):
        load_model(out)


@pytest.mark.parametrize("key", ["width", "step", "format_version"])
def test_non_numeric_safetensors_metadata_is_an_error(tmp_path, weights, key):
    arrays = {k: v.numpy() for k, v in load_model(weights, channels_last=False).state_dict().items()}
    meta = {"format": FORMAT, "format_version": "1", "variant": "color", "width": "4",
            key: "four"}
    out = tmp_path / "w.safetensors"
    save_file(arrays, str(out), metadata=meta)
    with pytest.raises(ModelFileError, match=f"{key}='four'.*not an integer"):
        load_model(out)


@pytest.mark.parametrize("payload", [
    {"format": FORMAT, "format_version": 1, "metadata": {"variant": "color", "width": 4}},
    {"format": FORMAT, "format_version": 1, "metadata": ["color", 4], "state_dict": {}},
    {"format": FORMAT, "format_version": 1, "metadata": {"variant": "color", "width": 4},
     "state_dict": [torch.zeros(3)]},
])
def test_malformed_pt_files_are_errors_everywhere(tmp_path, payload):
    out = tmp_path / "w.pt"
    torch.save(payload, out)
    with pytest.raises(ModelFileError):
        load_model(out)
    res = run("diff", out)
    assert res.exit_code == 2, res.output  # a user error, not the "divergence" code 1
    one_paragraph_error(res)
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(np.full((16, 16, 3), 9, np.uint8), ".png"))
    res = run("deblur", out, photo, "-o", tmp_path / "o")
    assert res.exit_code == 1
    one_paragraph_error(res)


def test_an_unsafe_pt_file_gets_no_advice_to_unpickle_it(tmp_path):
    import argparse

    out = tmp_path / "w.pt"
    torch.save({"format": FORMAT, "obj": argparse.Namespace(a=1)}, out)
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(np.full((16, 16, 3), 9, np.uint8), ".png"))
    res = run("deblur", out, photo, "-o", tmp_path / "o")
    text = one_paragraph_error(res)
    assert res.exit_code == 1 and "weights_only=False" not in text
    assert "loads safely" in text


# -- writing ---------------------------------------------------------------------------------

def test_diff_never_writes_over_its_inputs(tmp_path, weights):
    import shutil

    w = tmp_path / weights.name
    shutil.copy(weights, w)
    before = w.read_bytes()
    golden = tmp_path / "g.h5"
    shutil.copy(GOLDEN / "color.h5", golden)
    golden_before = golden.read_bytes()
    for target in (w, golden):
        res = run("diff", w, "--golden", golden, "--level", "0", "--json", target)
        assert res.exit_code == 2 and "destroy the input" in one_paragraph_error(res)
    res = run("diff", w, "--golden", golden, "--heatmap", w)
    assert res.exit_code == 2
    assert w.read_bytes() == before and golden.read_bytes() == golden_before
    existing = tmp_path / "old.json"
    existing.write_text("keep")
    res = run("diff", w, "--golden", golden, "--json", existing)
    assert res.exit_code == 2 and "--force" in flat(res) and existing.read_text() == "keep"
    res = run("diff", w, "--golden", golden, "--json", tmp_path / "missing" / "r.json")
    assert res.exit_code == 2 and "does not exist" in one_paragraph_error(res)


def test_an_unwritable_output_is_a_clean_error(tmp_path, ckpt, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    res = run("convert", ckpt, tmp_path / "m.pt")
    assert res.exit_code == 1
    assert "Cannot write" in one_paragraph_error(res) and "Permission denied" in flat(res)
    assert list(tmp_path.iterdir()) == []


def test_deblur_into_an_impossible_folder_is_a_clean_error(tmp_path, weights):
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(np.full((16, 16, 3), 9, np.uint8), ".png"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run("deblur", weights, photo, "-o", blocker / "sub")
    assert res.exit_code == 1 and "Cannot create the output folder" in one_paragraph_error(res)


def test_temporaries_of_killed_writes_are_cleaned_up(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target = tmp_path / "m.safetensors"
        stale = tmp_path / f".m.safetensors.{dead.pid}.abc123.tmp"
        busy = tmp_path / f".m.safetensors.{alive.pid}.def456.tmp"
        for f in (stale, busy):
            f.write_bytes(b"half-written")
        atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
        assert target.read_bytes() == b"new"
        assert not stale.exists() and busy.exists()  # a running writer's file is left alone
    finally:
        alive.kill()
        alive.wait()


def test_a_write_killed_midway_leaves_only_a_temporary_that_the_next_write_removes(tmp_path,
                                                                                    ckpt):
    out = tmp_path / "m.safetensors"
    code = (f"import os, signal\nimport srn_port.core.fileio as f\n"
            f"def die(tmp):\n    open(tmp, 'wb').write(b'partial')\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"f.atomic_write({str(out)!r}, die)\n")
    subprocess.run([sys.executable, "-c", code])
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".m.safetensors.") and not out.exists()
    convert(ckpt, out)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# -- golden files ----------------------------------------------------------------------------

def test_hand_edited_golden_structure_is_a_golden_error(tmp_path):
    import shutil

    for edit in ("group", "attr", "huge"):
        path = tmp_path / f"{edit}.h5"
        shutil.copy(GOLDEN / "color.h5", path)
        with h5py.File(path, "r+") as f:
            if edit == "group":
                del f["level0/inp"]
                f["level0"].create_group("inp")
            elif edit == "attr":
                f.attrs["input_shape"] = "not a shape"
            else:  # a compressed dataset claiming 64 GB of zeros
                del f["level0/inp"]
                f["level0"].create_dataset("inp", shape=(1, 6, 2**17, 2**15), dtype="f4",
                                           compression="gzip", chunks=(1, 1, 1024, 1024))
        with pytest.raises(SrnPortError):
            with GoldenFile(path, verify_checkpoint=False) as g:
                g.tensor(0, "inp")
        res = run("diff", GOLDEN / "ckpt" / "color", "--golden", path)
        assert res.exit_code == 2, res.output
        one_paragraph_error(res)


def test_golden_files_with_flipped_bytes_never_crash(tmp_path):
    data = bytearray((GOLDEN / "color.h5").read_bytes())
    rng = random.Random(5)
    errors = 0
    for case in range(12):
        damaged = bytearray(data)
        for _ in range(8):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"{case}.h5"
        path.write_bytes(bytes(damaged))
        try:
            with GoldenFile(path, verify_checkpoint=False) as g:
                for level in range(3):
                    for name in g.node_names:
                        g.tensor(level, name)
        except SrnPortError:
            errors += 1
    assert errors > 0  # damage to the HDF5 structure or a compressed chunk is reported


# -- images ----------------------------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit RGB) and holds no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12000, 30000])
def test_a_pixel_bomb_is_reported_and_skipped_before_decoding(tmp_path, weights, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(side, side))
    good = tmp_path / "good.png"
    good.write_bytes(encode_image(np.full((32, 48, 3), 120, np.uint8), ".png"))
    with pytest.raises(ImageError, match=f"declares {side}x{side}.*--max-pixels"):
        read_image(bomb)
    res = run("deblur", weights, bomb, good, "-o", tmp_path / "o", "--tile", "512")
    assert res.exit_code == 1 and f"{side}x{side}" in flat(res)
    assert (tmp_path / "o" / "good.png").exists() and not (tmp_path / "o" / "bomb.png").exists()


def test_max_pixels_option_and_environment(tmp_path, weights, monkeypatch):
    img = tmp_path / "a.png"
    img.write_bytes(encode_image(np.full((32, 48, 3), 120, np.uint8), ".png"))
    res = run("deblur", weights, img, "-o", tmp_path / "o", "--max-pixels", "1000")
    assert res.exit_code == 1 and "more than the limit of 0.001 MP" in flat(res)
    monkeypatch.setenv(limits.PIXELS.env, "1000")
    with pytest.raises(ImageError, match="limit"):
        read_image(img)
    assert read_image(img, max_pixels=32 * 48).shape == (32, 48, 3)


def test_only_regular_files_are_read(tmp_path, weights):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    zero = tmp_path / "z.png"
    zero.symlink_to("/dev/zero")
    missing = tmp_path / "gone.png"
    good = tmp_path / "good.png"
    good.write_bytes(encode_image(np.full((16, 16, 3), 120, np.uint8), ".png"))
    for path, kind in ((fifo, "FIFO"), (zero, "device")):
        with pytest.raises(ImageError, match=f"{kind}.*not a regular file"):
            read_image(path)
    res = run("deblur", weights, fifo, zero, missing, good, "-o", tmp_path / "o")
    assert res.exit_code == 1
    text = flat(res)
    assert "FIFO" in text and "device" in text and "gone.png" in text and "3 failed" in text
    assert (tmp_path / "o" / "good.png").exists()


def test_an_opencv_failure_is_an_image_error(tmp_path, monkeypatch):
    import cv2

    img = tmp_path / "a.png"
    img.write_bytes(encode_image(np.full((8, 8, 3), 1, np.uint8), ".png"))

    def fail(*a, **k):
        raise cv2.error("Insufficient memory")

    monkeypatch.setattr(cv2, "imdecode", fail)
    with pytest.raises(ImageError, match="a.png.*Insufficient memory"):
        read_image(img)


# -- fuzzing the checkpoint reader -----------------------------------------------------------

def test_fuzzed_checkpoints_give_the_right_tensors_or_a_checkpoint_error(tmp_path):
    """Seeded random mutations of both files of a small bundle (a few hundred cases): each
    either reads every tensor exactly as written or raises CheckpointError; nothing else."""
    rng = np.random.default_rng(2018)
    tensors = {"a": np.arange(60, dtype=np.float32).reshape(3, 4, 5), "b": np.int64(7),
               "c": np.array([b"x", b"yz"], dtype=object),
               "p": Stored(np.arange(24, dtype=np.int32).reshape(6, 4),
                           slices=[((0, 3), (0, None)), ((3, 3), (0, None))])}
    prefix = write_bundle(tmp_path / "orig", tensors)
    files = {"index": Path(f"{prefix}.index"), "data": Path(f"{prefix}.data-00000-of-00001")}
    original = {k: f.read_bytes() for k, f in files.items()}
    with CheckpointReader(prefix) as reader:
        expected = {n: reader.get_tensor(n) for n in reader.keys()}
    outcomes = {"same": 0, "error": 0}
    for case in range(300):
        which = ("index", "data")[case % 2]
        blob = bytearray(original[which])
        kind = rng.integers(4)
        if kind == 0:  # flip bits
            for _ in range(rng.integers(1, 4)):
                blob[rng.integers(len(blob))] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # truncate
            del blob[rng.integers(len(blob)):]
        elif kind == 2:  # overwrite a run with random bytes
            start = int(rng.integers(len(blob)))
            blob[start:start + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        else:  # insert bytes
            at = int(rng.integers(len(blob)))
            blob[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        for k, f in files.items():
            f.write_bytes(bytes(blob) if k == which else original[k])
        try:
            with CheckpointReader(prefix) as reader:
                got = {n: reader.get_tensor(n) for n in reader.keys()}
        except CheckpointError:
            outcomes["error"] += 1
            continue
        assert got.keys() == expected.keys(), case
        for n in expected:
            assert np.array_equal(got[n], expected[n]) and got[n].dtype == expected[n].dtype, case
        outcomes["same"] += 1
    assert outcomes["error"] > 250, outcomes

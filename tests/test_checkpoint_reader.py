"""Tests of srn_port.core.checkpoint, the TF-free reader of TF V2 checkpoints.

Two halves:

* TF-free tests use bundles from the test-only writer (tests/_bundle_writer.py), so the
  reader is exercised where TensorFlow is not installed: every dtype, slices, shards,
  several index blocks, big-endian, memory use, path resolution and every error case.
* ``@pytest.mark.tf`` tests have TensorFlow write real checkpoints (tf.compat.v1 Saver,
  sharded Saver, raw SaveV2 with 6000+ names and with multi-byte slice keys, TF2
  tf.train.Checkpoint, a V1 checkpoint) once per module, and require the reader to
  return exactly what ``tf.train.load_checkpoint(prefix).get_tensor`` returns, for
  every key. They also make TF read the test writer's output, which keeps it honest.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import srn_port.core.checkpoint as ckpt_pkg
from _bundle_writer import Stored, build_table, rewrite_big_endian, write_bundle
from srn_port.core.checkpoint import (
    CheckpointError,
    CheckpointKeyError,
    CheckpointReader,
    TensorInfo,
    read_checkpoint,
    resolve_checkpoint,
)
from srn_port.core.checkpoint import crc, protos, sstable
from srn_port.core.checkpoint.ordered_code import (
    tensor_slice_key,
    write_num_increasing,
    write_signed_num_increasing,
    write_string,
)

REPO = Path(__file__).resolve().parents[1]

# -- sample data -----------------------------------------------------------------------

RNG = np.random.default_rng(20180618)

#: One array per supported dtype, with extreme and special values, for the TF-free tests.
SAMPLE = {
    "dtypes/float32": np.array([[1.5, -0.0, np.nan], [np.inf, -np.inf, 1e-45]], np.float32),
    "dtypes/float64": RNG.standard_normal((3, 2)),
    "dtypes/int32": np.array([-(2**31), 0, 2**31 - 1], np.int32),
    "dtypes/int64": np.array([-(2**63), 1, 2**63 - 1], np.int64),
    "dtypes/bool": np.array([[True, False], [False, True]]),
    "dtypes/float16": np.array([0.5, -65504, 6e-8], np.float16),
    "dtypes/uint8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "dtypes/int8": np.array([-128, 0, 127], np.int8),
    "dtypes/int16": np.array([-32768, 1, 32767], np.int16),
    "dtypes/uint16": np.array([0, 1, 65535], np.uint16),
    "dtypes/uint32": np.array([0, 7, 2**32 - 1], np.uint32),
    "dtypes/uint64": np.array([0, 7, 2**64 - 1], np.uint64),
    "dtypes/complex64": np.array([1 + 2j, -3.5j, 0.25], np.complex64),
    "dtypes/complex128": np.array([[1 - 2j], [np.pi + 1e-300j]], np.complex128),
    "strings/vector": np.array([b"ab", b"", b"x\x00y\xff" * 100], dtype=object),
    "strings/scalar": np.array(b"hello\x00world", dtype=object),
    "strings/empty_scalar": np.array(b"", dtype=object),
    "strings/matrix": np.array([[b"a", b"bc"], [b"", b"\xff\x00"]], dtype=object),
    "strings/zero": np.empty((2, 0), dtype=object),
    "scalars/float": np.array(3.25, np.float32),
    "scalars/int64": np.array(-7, np.int64),
    "zero/rows": np.zeros((0, 3), np.float32),
    "zero/middle": np.zeros((2, 0, 4), np.int32),
}
#: bfloat16 values are given as float32 that bfloat16 represents exactly.
BF16 = np.array([[1.5, -3.0], [2.0**-100, -(2.0**120)]], np.float32)


def sample_tensors() -> dict:
    tensors = dict(SAMPLE)
    tensors["dtypes/bfloat16"] = Stored(BF16, code=14)
    return tensors


def expected_value(name: str) -> np.ndarray:
    return BF16 if name == "dtypes/bfloat16" else SAMPLE[name]


def assert_identical(got: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Exact equality that also tells NaN payloads, -0.0 and dtypes apart."""
    expected = np.asarray(expected)
    assert isinstance(got, np.ndarray), what
    assert got.shape == expected.shape, what
    assert got.dtype == expected.dtype, (what, got.dtype, expected.dtype)
    if got.dtype == object:
        assert [bytes(x) for x in got.ravel()] == [bytes(x) for x in expected.ravel()], what
        assert all(type(x) is bytes for x in got.ravel()), what
    else:
        assert got.tobytes() == np.ascontiguousarray(expected).tobytes(), what


def assert_good_array(array: np.ndarray) -> None:
    assert array.flags.c_contiguous and array.flags.writeable
    assert array.dtype.isnative or array.dtype.itemsize == 1 or array.dtype == object


PARTITIONED = np.arange(300 * 3, dtype=np.float32).reshape(300, 3)


def small_bundle(directory: Path, name: str = "deblur.model-523000", **options) -> Path:
    """A small but representative bundle: a few dtypes, a string, a partitioned variable."""
    tensors = {
        "g_net/enc1_1/weights": RNG.standard_normal((5, 5, 6, 8)).astype(np.float32),
        "g_net/enc1_1/biases": np.linspace(-1, 1, 8, dtype=np.float32),
        "Variable": np.array(523000, np.int32),
        "label": np.array([b"color", b"\x00"], dtype=object),
        # Starts of 130 and lengths of 130/170 need two-byte OrderedCode keys.
        "g_net/part": Stored(PARTITIONED, slices=[((0, 130), (0, None)), ((130, 170), (0, 3))]),
    }
    return write_bundle(directory / name, tensors, **options)


def read_all(path, **kwargs) -> dict:
    """Open and read every tensor, the way a converter would."""
    with CheckpointReader(path, **kwargs) as reader:
        return {k: reader.get_tensor(k) for k in reader.keys()}


def raises_checkpoint_error(func, *args, **kwargs) -> str:
    """Call ``func``; it must raise CheckpointError (nothing else); return its message."""
    try:
        func(*args, **kwargs)
    except CheckpointError as exc:
        message = str(exc)
        assert "\n" not in message, "messages are one paragraph"
        return message
    except Exception as exc:  # noqa: BLE001 - the point is that nothing else escapes
        pytest.fail(f"{type(exc).__name__} escaped instead of CheckpointError: {exc}")
    pytest.fail("no CheckpointError raised")


# -- primitives ------------------------------------------------------------------------


def test_crc32c_and_mask_match_spec():
    assert crc.crc32c(b"123456789") == 0xE3069283
    assert crc.crc32c(bytearray(b"123456789")) == 0xE3069283  # writable buffers too
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF, 0x12345678):
        assert crc.unmask(crc.mask(value)) == value
    # The metaindex trailer of the annotated .index of docs/tf-numerics.md §3.2: "00 c0 f2 a1 b0".
    contents = bytes.fromhex("0000000001000000")
    assert crc.mask(crc.crc32c(contents + b"\x00")).to_bytes(4, "little") == bytes.fromhex(
        "c0f2a1b0"
    )


def test_ordered_code_matches_spec_examples():
    assert write_num_increasing(0) == b"\x00"
    assert write_num_increasing(2) == b"\x01\x02"
    assert write_num_increasing(256) == b"\x02\x01\x00"
    assert write_string(b"a\x00b\xff") == b"a\x00\xffb\xff\x00\x00\x01"
    one_byte = {0: "80", 5: "85", -1: "7f", 63: "bf", -64: "40"}
    multi_byte = {
        64: "c040",
        100: "c064",
        -65: "3fbf",
        70000: "e11170",
        2**62: "ffc04000000000000000",
        2**63 - 1: "ffc07fffffffffffffff",
        -(2**63): "003f8000000000000000",
    }
    for value, hexed in {**one_byte, **multi_byte}.items():
        assert write_signed_num_increasing(value).hex() == hexed, value
    assert tensor_slice_key("pv", [(0, 5), (0, 4)]).hex() == "00" + b"pv".hex() + "0001010280858084"
    assert (
        tensor_slice_key("big", [(100, 100), (0, -1)]).hex()
        == "00" + b"big".hex() + "00010102c064c064807f"
    )
    # Order-preserving: that is what makes the keys sort like the numbers.
    values = [-(2**63), -(2**40), -65, -64, -1, 0, 1, 63, 64, 100, 70000, 2**40, 2**63 - 1]
    codes = [write_signed_num_increasing(v) for v in values]
    assert codes == sorted(codes)


def test_varint_decoder():
    for value in (0, 1, 127, 128, 300, 2**32, 2**64 - 1):
        out, v = bytearray(), value
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
        assert sstable.decode_varint(bytes(out), 0, len(out)) == (value, len(out))
    with pytest.raises(sstable.TableFormatError):
        sstable.decode_varint(b"\x80\x80", 0, 2)
    with pytest.raises(sstable.TableFormatError):
        sstable.decode_varint(b"\x80" * 6, 0, 6, max_bytes=5)


# -- reading writer-made bundles (no TF) -------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_every_dtype_round_trips(tmp_path, big_endian):
    prefix = write_bundle(tmp_path / "all", sample_tensors(), big_endian=big_endian)
    with CheckpointReader(prefix) as reader:
        assert reader.keys() == sorted(sample_tensors())
        assert reader.metadata()["endianness"] == ("big" if big_endian else "little")
        for name in reader.keys():
            got = reader.get_tensor(name)
            assert_identical(got, expected_value(name), name)
            assert_good_array(got)
            info = reader.info(name)
            assert isinstance(info, TensorInfo)
            assert info.shape == got.shape and info.dtype == got.dtype and not info.partitioned
        bf16 = reader.info("dtypes/bfloat16")
        assert (bf16.tf_dtype, bf16.dtype, bf16.nbytes) == ("DT_BFLOAT16", np.dtype(np.float32), 8)
        assert reader.info("strings/vector").dtype == np.dtype(object)
        assert reader.info("strings/vector").tf_dtype == "DT_STRING"
        assert reader.info("dtypes/float16").tf_dtype == "DT_HALF"
        assert reader.info("dtypes/float32").nbytes == 24


def test_partitioned_variable_is_reassembled(tmp_path):
    strings = np.array([[b"%d" % (i * 3 + j) for j in range(3)] for i in range(4)], dtype=object)
    cube = np.arange(4 * 6 * 2, dtype=np.int16).reshape(4, 6, 2)
    tensors = {
        "rows": Stored(
            PARTITIONED, slices=[((0, 100), (0, 3)), ((100, 100), (0, 3)), ((200, 100), (0, None))]
        ),
        "cols": Stored(strings, slices=[((0, None), (0, 1)), ((0, None), (1, 2))]),
        "grid": Stored(cube, slices=[((a, 2), (b, 3), (0, None)) for a in (0, 2) for b in (0, 3)]),
        "plain": np.float32(1.0),
    }
    prefix = write_bundle(tmp_path / "p", tensors, big_endian=True)
    with CheckpointReader(prefix) as reader:
        assert reader.keys() == ["cols", "grid", "plain", "rows"]  # no slice keys
        assert_identical(reader.get_tensor("rows"), PARTITIONED)
        assert_identical(reader.get_tensor("cols"), strings)
        assert_identical(reader.get_tensor("grid"), cube)
        info = reader.info("rows")
        assert info.partitioned and info.shape == (300, 3) and info.nbytes == PARTITIONED.nbytes


@pytest.mark.parametrize(
    "slices, problem",
    [
        ([((0, 100), (0, 3)), ((200, 100), (0, 3))], "gap"),
        ([((0, 200), (0, 3)), ((100, 200), (0, 3))], "overlap"),
        ([((0, 300), (0, 3)), ((250, 100), (0, 3))], "outside"),
    ],
)
def test_partitioned_slices_must_tile_the_tensor(tmp_path, slices, problem):
    if problem == "outside":  # the writer cannot cut it, so declare a larger stored value
        value = np.zeros((350, 3), np.float32)
        prefix = write_bundle(tmp_path / "p", {"v": Stored(value, slices=slices)})
        index = Path(f"{prefix}.index")
        table = sstable.read_table(index)
        rewritten = []
        for key, val in table:
            if key == b"v":
                entry = protos.BundleEntryProto.FromString(val)
                entry.shape.dim[0].size = 300
                val = entry.SerializeToString()
            rewritten.append((key, val))
        index.write_bytes(build_table(rewritten))
    else:
        prefix = write_bundle(tmp_path / "p", {"v": Stored(PARTITIONED, slices=slices)})
    with CheckpointReader(prefix) as reader:
        message = raises_checkpoint_error(reader.get_tensor, "v")
    assert "'v'" in message and f"{prefix}.index" in message and "corrupt" in message


def test_sharded_bundle(tmp_path):
    prefix = write_bundle(tmp_path / "s", sample_tensors(), num_shards=3)
    assert len(list(tmp_path.glob("s.data-*-of-00003"))) == 3
    with CheckpointReader(prefix) as reader:
        meta = reader.metadata()
        assert meta["num_shards"] == 3 and len(meta["data_files"]) == 3
        for name in reader.keys():
            assert_identical(reader.get_tensor(name), expected_value(name), name)


def test_index_with_many_blocks(tmp_path):
    names = [
        f"scope_{i % 7}/very/long/variable/name/for/index/blocks/var_{i:05d}" for i in range(600)
    ]
    tensors = {n: np.array([i, -i], np.int64) for i, n in enumerate(names)}
    prefix = write_bundle(tmp_path / "m", tensors, block_size=2048)
    assert count_data_blocks(Path(f"{prefix}.index")) > 10
    with CheckpointReader(prefix) as reader:
        assert reader.keys() == sorted(names)
        for i, name in enumerate(names):
            assert reader.get_tensor(name).tolist() == [i, -i]


def count_data_blocks(index: Path) -> int:
    data = index.read_bytes()
    footer = len(data) - sstable.FOOTER_SIZE
    _, pos = sstable.decode_block_handle(data, footer, footer + 40)
    (offset, size), _ = sstable.decode_block_handle(data, pos, footer + 40)
    return len(list(sstable.iter_block_entries(data[offset : offset + size])))


def test_metadata_and_api(tmp_path):
    prefix = small_bundle(tmp_path)
    reader = CheckpointReader(prefix)
    assert reader.prefix == prefix.resolve() and isinstance(reader.prefix, Path)
    meta = reader.metadata()
    assert meta == {
        "prefix": str(prefix),
        "index_file": f"{prefix}.index",
        "data_files": [f"{prefix}.data-00000-of-00001"],
        "num_shards": 1,
        "endianness": "little",
        "version": {"producer": 1, "min_consumer": 0, "bad_consumers": []},
    }
    assert "g_net/part" in reader and "nope" not in reader
    with pytest.raises(KeyError) as caught:
        reader.get_tensor("g_net/enc1_1/weight")
    assert isinstance(caught.value, CheckpointKeyError) and isinstance(
        caught.value, CheckpointError
    )
    assert "g_net/enc1_1/weights" in str(caught.value)  # a close match is suggested
    with pytest.raises(CheckpointKeyError):
        reader.info("nope")
    array = reader.get_tensor("g_net/enc1_1/biases")
    array[0] = 42.0  # a writable copy: the next read is unaffected
    assert reader.get_tensor("g_net/enc1_1/biases")[0] == np.float32(-1)
    reader.close()
    reader.close()
    with pytest.raises(ValueError):
        reader.keys()
    everything = read_checkpoint(tmp_path)
    assert list(everything) == sorted(everything)
    assert everything["Variable"].shape == () and everything["Variable"] == 523000
    assert_identical(everything["g_net/part"], PARTITIONED)


def test_reading_one_tensor_does_not_load_the_data_file(tmp_path):
    big = np.zeros(10_000_000, np.float32)  # 40 MB
    prefix = write_bundle(tmp_path / "big", {"big": big, "small": np.arange(4, dtype=np.float32)})
    data_size = os.path.getsize(f"{prefix}.data-00000-of-00001")
    assert data_size > 40_000_000
    tracemalloc.start()
    try:
        with CheckpointReader(prefix) as reader:
            small = reader.get_tensor("small")
            _, peak_small = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            whole = reader.get_tensor("big")
            _, peak_big = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert small.tolist() == [0, 1, 2, 3]
    assert peak_small < 1_000_000, peak_small  # far below the 40 MB file
    assert whole.shape == big.shape and not whole.any()
    assert peak_big < 1.2 * big.nbytes, peak_big  # one buffer, no second copy


def test_no_tensorflow_needed(tmp_path):
    """The package imports and reads with TensorFlow import blocked."""
    prefix = small_bundle(tmp_path)
    out = tmp_path / "tensors.pkl"
    code = (
        "import sys, pickle\n"
        "sys.modules['tensorflow'] = None\n"
        "from srn_port.core.checkpoint import read_checkpoint\n"
        "tensors = read_checkpoint(sys.argv[1])\n"
        "assert not [m for m in sys.modules if m.startswith('tensorflow') and sys.modules[m] is not None]\n"
        "pickle.dump(tensors, open(sys.argv[2], 'wb'))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(prefix), str(out)], check=True, cwd=REPO)
    got = pickle.loads(out.read_bytes())
    expected = read_all(prefix)
    assert list(got) == list(expected)
    for name in expected:
        assert_identical(got[name], expected[name], name)


def test_package_source_never_imports_tensorflow():
    for path in Path(ckpt_pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+tensorflow", text, re.M), path


# -- path resolution -------------------------------------------------------------------


def test_resolve_prefix_and_its_files(tmp_path):
    prefix = small_bundle(tmp_path / "train")
    (tmp_path / "train" / "deblur.model-523000.meta").write_bytes(b"graph")
    for given in (
        prefix,
        str(prefix),
        f"{prefix}.index",
        f"{prefix}.data-00000-of-00001",
        f"{prefix}.meta",
        tmp_path / "train",  # a directory with a single checkpoint and no 'checkpoint' file
    ):
        assert resolve_checkpoint(given) == prefix.resolve(), given
    assert resolve_checkpoint(prefix, step=523000) == prefix.resolve()
    relative = os.path.relpath(prefix, Path.cwd())
    assert resolve_checkpoint(relative).is_absolute()


def test_resolve_directory_with_checkpoint_file_from_another_machine(tmp_path):
    train = tmp_path / "checkpoints"
    small_bundle(train, "deblur.model-500000")
    latest = small_bundle(train, "deblur.model-523000")
    (train / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/train/checkpoints/deblur.model-523000"\n'
        'all_model_checkpoint_paths: "/home/someone/train/checkpoints/deblur.model-500000"\n'
        'all_model_checkpoint_paths: "/home/someone/train/checkpoints/deblur.model-523000"\n'
        "all_model_checkpoint_timestamps: 1.5e9\n"
        "last_preserved_timestamp: 1.4e9\n"
    )
    assert resolve_checkpoint(train) == latest.resolve()
    (train / "checkpoint").write_text(
        'model_checkpoint_path: "C:\\\\Users\\\\me\\\\ckpt\\\\deblur.model-523000"\n'
    )
    assert resolve_checkpoint(train) == latest.resolve()
    (train / "checkpoint").write_text('model_checkpoint_path: "deblur.model-500000"\n')
    assert resolve_checkpoint(train).name == "deblur.model-500000"
    # An explicit step wins over the 'checkpoint' file.
    assert resolve_checkpoint(train, step=523000) == latest.resolve()
    with CheckpointReader(train, step=500000) as reader:
        assert reader.prefix.name == "deblur.model-500000"


def test_resolve_directory_errors(tmp_path):
    train = tmp_path / "train"
    small_bundle(train, "deblur.model-1000")
    small_bundle(train, "deblur.model-523000")
    message = raises_checkpoint_error(resolve_checkpoint, train)
    assert (
        "deblur.model-1000" in message and "deblur.model-523000" in message and "--step" in message
    )

    message = raises_checkpoint_error(resolve_checkpoint, train, step=7)
    assert "step 7" in message and "1000, 523000" in message

    message = raises_checkpoint_error(resolve_checkpoint, train / "deblur.model-1000", step=523000)
    assert "step 523000" in message

    (train / "checkpoint").write_text('model_checkpoint_path: "/old/machine/deblur.model-999"\n')
    message = raises_checkpoint_error(CheckpointReader, train)
    assert "/old/machine/deblur.model-999" in message and str(train / "deblur.model-999") in message
    assert "deblur.model-1000, deblur.model-523000" in message

    (train / "checkpoint").write_text("model_checkpoint_path: {{ broken\n")
    message = raises_checkpoint_error(resolve_checkpoint, train)
    assert str(train / "checkpoint") in message and "prefix" in message

    (train / "checkpoint").write_text("")
    assert "names no model_checkpoint_path" in raises_checkpoint_error(resolve_checkpoint, train)

    empty = tmp_path / "empty"
    empty.mkdir()
    message = raises_checkpoint_error(CheckpointReader, empty)
    assert str(empty) in message and "it is empty" in message

    (empty / "notes.txt").write_text("hello")
    assert "notes.txt" in raises_checkpoint_error(resolve_checkpoint, empty)

    message = raises_checkpoint_error(CheckpointReader, tmp_path / "missing" / "deblur.model-5")
    assert "does not exist" in message and str(tmp_path / "missing") in message
    message = raises_checkpoint_error(read_checkpoint, train / "deblur.model-5")
    assert "does not exist" in message and "deblur.model-1000" in message

    message = raises_checkpoint_error(resolve_checkpoint, empty / "notes.txt")
    assert "not a TensorFlow checkpoint file" in message
    assert "non-negative integer" in raises_checkpoint_error(resolve_checkpoint, train, step="5")


def test_missing_index_and_missing_shards(tmp_path):
    prefix = write_bundle(tmp_path / "model-3", sample_tensors(), num_shards=3)
    Path(f"{prefix}.data-00001-of-00003").unlink()
    Path(f"{prefix}.data-00002-of-00003").unlink()
    message = raises_checkpoint_error(CheckpointReader, prefix)
    assert "model-3.data-00001-of-00003, model-3.data-00002-of-00003" in message
    assert "model-3.data-00000-of-00003" in message and "Copy every file" in message

    Path(f"{prefix}.index").unlink()
    for given in (prefix, f"{prefix}.data-00000-of-00003"):
        message = raises_checkpoint_error(CheckpointReader, given)
        assert "model-3.index" in message and "copy" in message


# -- damaged and unsupported files (no TF) ---------------------------------------------


def _mentions_fix(message: str) -> bool:
    return "copy" in message and "again" in message


def test_truncated_index(tmp_path):
    prefix = small_bundle(tmp_path)
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 30, 0):
        index.write_bytes(data[:cut])
        message = raises_checkpoint_error(CheckpointReader, prefix)
        assert str(index) in message and "truncated" in message and _mentions_fix(message)
    # The footer survives but the blocks it points to do not: "block out of range".
    index.write_bytes(data[: len(data) // 3] + data[-48:])
    message = raises_checkpoint_error(CheckpointReader, prefix)
    assert "extends past the end" in message and "truncated" in message and str(index) in message


def test_truncated_data_file(tmp_path):
    prefix = small_bundle(tmp_path)
    data_file = Path(f"{prefix}.data-00000-of-00001")
    data_file.write_bytes(data_file.read_bytes()[:-10])
    with CheckpointReader(prefix) as reader:
        assert reader.get_tensor("Variable") == 523000  # stored first, still intact
        message = raises_checkpoint_error(lambda: [reader.get_tensor(k) for k in reader.keys()])
    assert str(data_file) in message and "truncated" in message and _mentions_fix(message)


def test_every_flipped_byte_is_detected(tmp_path):
    """A single damaged byte anywhere in .index or .data is reported, never returned."""
    tensors = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "s": np.array([b"ab", b"", b"\xff"], dtype=object),
        "step": np.array(5, np.int64),
        "p": Stored(
            np.arange(140, dtype=np.int8).reshape(140, 1),
            slices=[((0, 130), (0, None)), ((130, 10), (0, 1))],
        ),
    }
    prefix = write_bundle(tmp_path / "m-1", tensors, block_size=64)  # several data blocks too
    assert count_data_blocks(Path(f"{prefix}.index")) > 1
    for path in (Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")):
        original = path.read_bytes()
        for position in range(len(original)):
            damaged = bytearray(original)
            damaged[position] ^= 0xFF
            path.write_bytes(bytes(damaged))
            message = raises_checkpoint_error(read_all, prefix)
            assert str(path) in message and "corrupt" in message, (position, message)
            assert _mentions_fix(message), message
        path.write_bytes(original)
    read_all(prefix)


def test_crc_messages_name_block_and_tensor(tmp_path):
    prefix = small_bundle(tmp_path)
    index = Path(f"{prefix}.index")
    data = bytearray(index.read_bytes())
    data[5] ^= 0x01  # inside data block 0
    index.write_bytes(bytes(data))
    message = raises_checkpoint_error(CheckpointReader, prefix)
    assert "data block 0" in message and "CRC-32C" in message and str(index) in message

    prefix = small_bundle(tmp_path / "b")
    data_file = Path(f"{prefix}.data-00000-of-00001")
    with CheckpointReader(prefix) as reader:
        entry = reader._bundle._entries["g_net/enc1_1/biases"]
        raw = bytearray(data_file.read_bytes())
        raw[entry.offset + 3] ^= 0x10
        data_file.write_bytes(bytes(raw))
        message = raises_checkpoint_error(reader.get_tensor, "g_net/enc1_1/biases")
        assert (
            "'g_net/enc1_1/biases'" in message
            and str(data_file) in message
            and "checksum" in message
        )
        assert reader.get_tensor("g_net/enc1_1/weights").shape == (5, 5, 6, 8)


def test_wrong_size_for_dtype(tmp_path):
    prefix = write_bundle(
        tmp_path / "w", {"v": Stored(np.zeros((2, 3), np.float32), raw=b"\x00" * 20)}
    )
    with CheckpointReader(prefix) as reader:
        message = raises_checkpoint_error(reader.get_tensor, "v")
    assert "20 bytes" in message and "24" in message and "'v'" in message


def test_v1_checkpoint_is_recognised(tmp_path):
    # A V1 checkpoint is a bare SSTable of SavedTensorSlices: key "" -> metadata, then
    # OrderedCode slice keys -> data. The reader only needs to recognise it.
    v1 = build_table(
        [
            (b"", b"\x0a\x1b\x0a\x15\x0a\x01w"),
            (b"\x00w\x00\x01\x01\x02\x80\x7f\x80\x7f", b"\x12\x00"),
        ]
    )
    (tmp_path / "model.ckpt").write_bytes(v1)
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{tmp_path}/model.ckpt"\n')
    for given in (tmp_path / "model.ckpt", tmp_path):
        message = raises_checkpoint_error(CheckpointReader, given)
        assert "TF V1 format, not supported" in message and "tf.compat.v1.train.Saver" in message
        assert "TF >= 0.12 Saver (V2)" in message and str(tmp_path / "model.ckpt") in message
    (tmp_path / "checkpoint").unlink()
    assert "V1" in raises_checkpoint_error(CheckpointReader, tmp_path)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model.ckpt-00000-of-00002").write_bytes(v1)
    assert "V1" in raises_checkpoint_error(CheckpointReader, sharded / "model.ckpt")


def test_snappy_blocks_are_rejected(tmp_path):
    prefix = small_bundle(tmp_path, compression_type=1)
    message = raises_checkpoint_error(CheckpointReader, prefix)
    assert "snappy" in message and "never writes" in message and f"{prefix}.index" in message


def test_unknown_and_unsupported_dtypes(tmp_path):
    tensors = {
        "future": Stored(np.zeros(3, np.uint8), code=77, raw=b"abc"),
        "handle": Stored(np.zeros(1, np.uint8), code=20, raw=b"h"),
        "fine": np.ones(2, np.float32),
    }
    prefix = write_bundle(tmp_path / "d", tensors)
    with CheckpointReader(prefix) as reader:
        assert reader.keys() == ["fine", "future", "handle"]
        assert_identical(reader.get_tensor("fine"), np.ones(2, np.float32))
        message = raises_checkpoint_error(reader.get_tensor, "future")
        assert (
            "unknown DataType 77" in message
            and "'future'" in message
            and "tf.train.load_checkpoint" in message
        )
        assert "DT_RESOURCE" in raises_checkpoint_error(reader.get_tensor, "handle")
        info = reader.info("handle")  # describing never fails: the caller decides
        assert (info.dtype, info.tf_dtype, info.shape, info.nbytes) == (
            None,
            "DT_RESOURCE",
            (1,),
            1,
        )
        assert reader.info("future").tf_dtype == "unknown DataType 77"
    assert "unknown DataType 77" in raises_checkpoint_error(read_checkpoint, prefix)


@pytest.mark.parametrize(
    "version", [(2, 2, ()), (1, 0, (1,))], ids=["min_consumer", "bad_consumer"]
)
def test_unsupported_bundle_version(tmp_path, version):
    prefix = small_bundle(tmp_path, version=version)
    message = raises_checkpoint_error(CheckpointReader, prefix)
    assert "unsupported bundle format version" in message and f"{prefix}.index" in message


def test_not_a_bundle_index(tmp_path):
    prefix = tmp_path / "x"
    Path(f"{prefix}.index").write_bytes(build_table([(b"a", b"b")]))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"")
    assert "no header entry" in raises_checkpoint_error(CheckpointReader, prefix)
    Path(f"{prefix}.index").write_bytes(build_table([(b"", b"\xff\xff")]))
    assert "not a valid BundleHeaderProto" in raises_checkpoint_error(CheckpointReader, prefix)
    Path(f"{prefix}.index").write_bytes(b"\x00" * 100)
    assert "magic" in raises_checkpoint_error(CheckpointReader, prefix)


# -- TensorFlow-written checkpoints ----------------------------------------------------


def _tf_graph_checkpoint(tf, directory: Path) -> Path:
    """tf.compat.v1 graph + Saver: every dtype, scalars, zero sizes, strings,
    partitioned variables with Adam slots after one step, the SRN global step."""
    graph = tf.Graph()
    with graph.as_default():
        for name, value in SAMPLE.items():
            tensor = tf.constant(value, dtype=tf.string if value.dtype == object else value.dtype)
            tf.compat.v1.get_variable(name, initializer=tensor, trainable=False)
        tf.compat.v1.get_variable(
            "dtypes/bfloat16", initializer=tf.cast(tf.constant(BF16), tf.bfloat16), trainable=False
        )
        tf.Variable(initial_value=0, dtype=tf.int32, trainable=False)  # SRN's step: key "Variable"
        with tf.compat.v1.variable_scope("g_net"):
            weights = tf.compat.v1.get_variable("enc1_1/weights", shape=[5, 5, 6, 8])
            rows = tf.compat.v1.get_variable(
                "rows/weights", shape=[10, 4], partitioner=tf.compat.v1.fixed_size_partitioner(3)
            )
            cols = tf.compat.v1.get_variable(
                "cols/weights",
                shape=[3, 6],
                partitioner=tf.compat.v1.fixed_size_partitioner(2, axis=1),
            )
        loss = tf.reduce_sum(tf.square(rows)) + tf.reduce_sum(weights) + tf.reduce_sum(tf.sin(cols))
        train = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(train)
            return Path(saver.save(sess, str(directory / "model"), global_step=7))


def _tf_sharded_checkpoint(tf, directory: Path) -> Path:
    graph = tf.Graph()
    with graph.as_default():
        with tf.device("/cpu:0"):
            tf.compat.v1.get_variable("a", initializer=tf.constant(np.arange(5, dtype=np.float32)))
            tf.compat.v1.get_variable(
                "p", shape=[6, 2], partitioner=tf.compat.v1.fixed_size_partitioner(2)
            )
        with tf.device("/cpu:1"):
            tf.compat.v1.get_variable("b", initializer=tf.constant(np.arange(3, dtype=np.int64)))
            tf.compat.v1.get_variable("s", initializer=tf.constant([b"q", b""]))
        saver = tf.compat.v1.train.Saver(sharded=True)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            directory.mkdir(parents=True)
            return Path(saver.save(sess, str(directory / "model"), global_step=3))


def _tf_many_variables(tf, directory: Path) -> Path:
    # Hash-like leading parts defeat the index's prefix compression, as in the spec's
    # experiment, so that the keys fill more than one 256 KiB block.
    names = [
        f"{hashlib.sha1(b'%d' % i).hexdigest()}/generator/a_rather_long_layer_name_{i:05d}/weights"
        for i in range(6100)
    ]
    prefix = directory / "many"
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant([float(i)]) for i in range(len(names))],
    )
    return prefix


def _tf_saved_slices(tf, directory: Path) -> tuple[Path, Path]:
    """Slices saved with explicit specs: absent lengths and multi-byte OrderedCode keys."""
    wide = np.arange(70010 * 2, dtype=np.float32).reshape(70010, 2)
    prefix = directory / "slices"
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=["wide", "wide", "wide"],
        shape_and_slices=["70010 2 0,70000:-", "70010 2 70000,10:0,1", "70010 2 70000,10:1,1"],
        tensors=[wide[:70000], wide[70000:, :1], wide[70000:, 1:]],
    )
    # Only the keys matter here: a full shape of 2**62 + 10 rows with one 10-row slice.
    huge = directory / "huge_slices"
    tf.raw_ops.SaveV2(
        prefix=str(huge),
        tensor_names=["huge"],
        shape_and_slices=[f"{2**62 + 10} 1 {2**62},10:-"],
        tensors=[tf.ones((10, 1))],
    )
    return prefix, huge


def _tf2_checkpoint(tf, directory: Path) -> Path:
    module = tf.Module()
    module.conv = tf.Variable(RNG.standard_normal((3, 3, 2, 4)).astype(np.float32))
    module.steps = tf.Variable(np.int64(12))
    module.label = tf.Variable(b"srn")
    module.half = tf.Variable(np.array([1.5, 2.5], np.float16))
    return Path(tf.train.Checkpoint(model=module).save(str(directory / "tf2")))


def _tf_v1_checkpoint(tf, directory: Path) -> Path:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("w", initializer=tf.constant([[1.0, 2.0]]))
        saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            directory.mkdir(parents=True)
            return Path(saver.save(sess, str(directory / "model.ckpt")))


@pytest.fixture(scope="module")
def tf_ckpts(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("tf_checkpoints")
    slices, huge = _tf_saved_slices(tf, root / "slices")
    return {
        "tf": tf,
        "root": root,
        "graph": _tf_graph_checkpoint(tf, root / "graph"),
        "sharded": _tf_sharded_checkpoint(tf, root / "sharded"),
        "many": _tf_many_variables(tf, root / "many"),
        "slices": slices,
        "huge_slices": huge,
        "tf2": _tf2_checkpoint(tf, root / "tf2"),
        "v1": _tf_v1_checkpoint(tf, root / "v1"),
    }


def assert_same_as_tf(tf, prefix, tf_prefix=None) -> int:
    """Our reader returns exactly TF's keys, dtypes and values; returns the key count."""
    from tensorflow.core.framework import types_pb2

    tf_reader = tf.train.load_checkpoint(str(tf_prefix or prefix))
    tf_dtypes = tf_reader.get_variable_to_dtype_map()
    with CheckpointReader(prefix) as reader:
        assert reader.keys() == sorted(tf_dtypes)
        for name in reader.keys():
            got = reader.get_tensor(name)
            info = reader.info(name)
            # TF returns a string scalar as bytes (and other scalars as numpy scalars).
            expected = np.array(
                tf_reader.get_tensor(name), dtype=object if info.tf_dtype == "DT_STRING" else None
            )
            assert_good_array(got)
            assert info.tf_dtype == types_pb2.DataType.Name(tf_dtypes[name].as_datatype_enum), name
            assert info.shape == got.shape == expected.shape, name
            if info.tf_dtype == "DT_BFLOAT16":
                bits = expected.view(np.uint16).astype(np.uint32) << 16
                assert (
                    got.dtype == np.float32 and got.view(np.uint32).tolist() == bits.tolist()
                ), name
            else:
                assert_identical(got, expected, name)
        return len(reader.keys())


@pytest.mark.tf
@pytest.mark.parametrize("which", ["graph", "sharded", "many", "slices", "tf2"])
def test_matches_tensorflow(tf_ckpts, which):
    count = assert_same_as_tf(tf_ckpts["tf"], tf_ckpts[which])
    assert count >= {"graph": 30, "sharded": 4, "many": 6100, "slices": 1, "tf2": 5}[which]


@pytest.mark.tf
def test_tf_checkpoints_have_the_expected_structure(tf_ckpts):
    graph = tf_ckpts["graph"]
    with CheckpointReader(graph.parent) as reader:  # via the 'checkpoint' file TF wrote
        assert reader.prefix == graph.resolve()
        keys = set(reader.keys())
        assert {
            "g_net/rows/weights",
            "g_net/rows/weights/Adam",
            "g_net/rows/weights/Adam_1",
        } <= keys
        assert {"beta1_power", "beta2_power", "Variable", "strings/empty_scalar"} <= keys
        assert not [k for k in keys if "part_" in k or k.startswith("\x00")]
        assert reader.info("g_net/rows/weights").partitioned
        assert reader.info("g_net/cols/weights/Adam").partitioned
        assert reader.get_tensor("beta1_power") == np.float32(0.9) ** 2
        assert reader.info("Variable").tf_dtype == "DT_INT32"
    with CheckpointReader(tf_ckpts["sharded"]) as reader:
        assert reader.metadata()["num_shards"] == 2 and reader.info("p").partitioned
    assert count_data_blocks(Path(f"{tf_ckpts['many']}.index")) >= 2
    with CheckpointReader(tf_ckpts["tf2"].parent) as reader:
        assert "_CHECKPOINTABLE_OBJECT_GRAPH" in reader.keys()
        assert reader.info("_CHECKPOINTABLE_OBJECT_GRAPH").shape == ()
        assert "model/conv/.ATTRIBUTES/VARIABLE_VALUE" in reader.keys()


@pytest.mark.tf
def test_multi_byte_slice_keys_match_tensorflow(tf_ckpts):
    for prefix in (tf_ckpts["slices"], tf_ckpts["huge_slices"]):
        keys = [k for k, _ in sstable.read_table(f"{prefix}.index") if k.startswith(b"\x00")]
        assert keys
        for key, value in sstable.read_table(f"{prefix}.index"):
            if key and not key.startswith(b"\x00"):
                entry = protos.BundleEntryProto.FromString(value)
                for tslice in entry.slices:
                    extents = [
                        (e.start, e.length if e.HasField("length") else -1) for e in tslice.extent
                    ]
                    assert tensor_slice_key(key.decode(), extents) in keys
    with CheckpointReader(tf_ckpts["huge_slices"]) as reader:  # only 10 of 2**62 + 10 rows
        assert "do not tile" in raises_checkpoint_error(reader.get_tensor, "huge")


@pytest.mark.tf
def test_big_endian_rewrite_of_tf_checkpoint(tf_ckpts, tmp_path):
    tf = tf_ckpts["tf"]
    for which in ("graph", "sharded"):
        big = rewrite_big_endian(tf_ckpts[which], tmp_path / which / "model")
        with CheckpointReader(big) as reader:
            assert reader.metadata()["endianness"] == "big"
        assert Path(f"{big}.index").read_bytes() != Path(f"{tf_ckpts[which]}.index").read_bytes()
        # Our reader on the big-endian copy == TF on the original; and TF itself reads
        # the copy the same way, which validates the rewrite.
        assert_same_as_tf(tf, big, tf_prefix=tf_ckpts[which])
        assert_same_as_tf(tf, big)


@pytest.mark.tf
def test_tensorflow_reads_the_test_writer(tf_ckpts, tmp_path):
    tensors = sample_tensors()
    tensors["partitioned"] = Stored(
        PARTITIONED, slices=[((0, 130), (0, None)), ((130, 170), (0, 3))]
    )
    prefix = write_bundle(tmp_path / "w", tensors, num_shards=2, block_size=300)
    assert count_data_blocks(Path(f"{prefix}.index")) > 1
    assert_same_as_tf(tf_ckpts["tf"], prefix)
    with CheckpointReader(prefix) as reader:
        assert_identical(reader.get_tensor("partitioned"), PARTITIONED)


@pytest.mark.tf
def test_tf_import_blocked_on_tf_checkpoint(tf_ckpts, tmp_path):
    prefix = tf_ckpts["graph"]
    out = tmp_path / "tensors.pkl"
    code = (
        "import sys, pickle\n"
        "sys.modules['tensorflow'] = None\n"
        "from srn_port.core.checkpoint import read_checkpoint\n"
        "pickle.dump(read_checkpoint(sys.argv[1]), open(sys.argv[2], 'wb'))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(prefix), str(out)], check=True, cwd=REPO)
    got = pickle.loads(out.read_bytes())
    tf_reader = tf_ckpts["tf"].train.load_checkpoint(str(prefix))
    assert sorted(got) == sorted(tf_reader.get_variable_to_shape_map())
    for name, value in got.items():
        expected = np.array(
            tf_reader.get_tensor(name), dtype=object if value.dtype == object else None
        )
        if name == "dtypes/bfloat16":
            expected = expected.astype(np.float32)
        assert_identical(value, expected, name)


@pytest.mark.tf
def test_damaged_tf_checkpoint(tf_ckpts, tmp_path):
    source = tf_ckpts["graph"]
    copy = tmp_path / "model-7"
    for path in source.parent.glob(f"{source.name}.*"):
        shutil.copy(path, tmp_path / path.name)
    data_file = Path(f"{copy}.data-00000-of-00001")
    original = data_file.read_bytes()
    with CheckpointReader(copy) as reader:
        entry = reader._bundle._entries["strings/vector"]
    damaged = bytearray(original)
    damaged[entry.offset + entry.size - 1] ^= 0x20  # last byte of a string element
    data_file.write_bytes(bytes(damaged))
    message = raises_checkpoint_error(read_checkpoint, copy)
    assert "'strings/vector'" in message and str(data_file) in message and "corrupt" in message
    damaged = bytearray(original)
    damaged[entry.offset] ^= 0x01  # the first string length: the length checksum fails
    data_file.write_bytes(bytes(damaged))
    assert "string lengths" in raises_checkpoint_error(read_checkpoint, copy)
    data_file.write_bytes(original[: len(original) // 2])
    message = raises_checkpoint_error(read_checkpoint, copy)
    assert "truncated" in message and str(data_file) in message


@pytest.mark.tf
def test_tf_v1_checkpoint_and_the_advice_given(tf_ckpts):
    v1 = tf_ckpts["v1"]
    assert not Path(f"{v1}.index").exists()
    for given in (v1, v1.parent):
        message = raises_checkpoint_error(CheckpointReader, given)
        assert "TF V1 format, not supported" in message and "tf.compat.v1.train.Saver" in message
    # The re-save command in the message works and gives a checkpoint we can read.
    command = re.search(r'python -c "(.*?)"', message).group(1)
    subprocess.run([sys.executable, "-c", command], check=True, capture_output=True)
    with CheckpointReader(f"{v1}-v2") as reader:
        assert_identical(reader.get_tensor("w"), np.array([[1.0, 2.0]], np.float32))

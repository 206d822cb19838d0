"""`srn-port export-tf` and the TF-free checkpoint writer: back to a TF checkpoint.

Without TF: the writer's files read back bit-identically by srn-port's own reader, follow
the documented bytes (docs/tf-numerics.md §3), and a TF checkpoint -> convert -> export-tf
gives back the same variables. With TF (``tf`` marker): TF's own writer produces the same
bytes, ``tf.train.load_checkpoint`` lists the same variables, and the original graph
restores the export with a plain Saver and computes what srn-port's model computes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from srn_port.cli import cli
from srn_port.core.checkpoint import CheckpointReader, read_checkpoint
from srn_port.core.checkpoint.crc import crc32c, mask
from srn_port.core.checkpoint.sstable import decode_block_handle, iter_block_entries
from srn_port.core.checkpoint.writer import (build_table, write_checkpoint,
                                             write_checkpoint_state)
from srn_port.core.errors import SrnPortError
from srn_port.core.export import export_arrays, tf_variables
from srn_port.core.naming import (classify, tf_to_torch_name, tf_to_torch_tensor,
                                  torch_to_tf_name, torch_to_tf_tensor)
from srn_port.core.network import SRNConfig

from _srn_ckpt import write_srn_checkpoint

DATA = ".data-00000-of-00001"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == np.ascontiguousarray(b).tobytes())


def _tree(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _sample_tensors():
    rng = np.random.default_rng(3)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float32)
    out = {}
    shapes = [(), (0,), (1,), (7,), (3, 0, 2), (2, 3), (2, 3, 4, 5), (1, 1, 1, 1, 1)]
    for dtype in ("float32", "float64", "int32", "int64"):
        for shape in shapes:
            if dtype.startswith("float"):
                value = rng.standard_normal(shape).astype(dtype)
            else:
                info = np.iinfo(dtype)
                value = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
            out[f"{dtype}/{'x'.join(map(str, shape)) or 'scalar'}"] = value
    out["float32/special"] = special
    out["float64/special"] = special.astype(np.float64)
    out["int32/extremes"] = np.array([np.iinfo(np.int32).min, -1, 0, np.iinfo(np.int32).max],
                                     np.int32)
    out["int64/extremes"] = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max])
    out["big_endian"] = np.arange(6, dtype=">f4").reshape(2, 3)  # stored little-endian
    out["fortran"] = np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))
    out["numpy_scalar"] = np.float32(0.81)
    out["unicode/é"] = np.int64(5)
    return out


# -- the writer, read back by srn-port's reader ----------------------------------------


def test_writer_round_trips_every_dtype_and_shape(tmp_path):
    tensors = _sample_tensors()
    prefix = write_checkpoint(tmp_path / "m", tensors, step=12)
    assert prefix == tmp_path / "m-12"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-12" + DATA, "m-12.index"]
    with CheckpointReader(prefix) as reader:
        assert reader.keys() == sorted(tensors)
        meta = reader.metadata()
        for name, value in tensors.items():
            want = np.asarray(value)
            want = want.astype(want.dtype.newbyteorder("="))
            got = reader.get_tensor(name)
            assert bits_equal(got, want), name
            assert reader.info(name).shape == want.shape
    assert meta["num_shards"] == 1 and meta["endianness"] == "little"
    assert meta["version"] == {"producer": 1, "min_consumer": 0, "bad_consumers": []}
    # densely packed, in the order given (not key order)
    nbytes = sum(np.asarray(v).nbytes for v in tensors.values())
    assert os.path.getsize(f"{prefix}{DATA}") == nbytes
    assert Path(f"{prefix}{DATA}").read_bytes()[:4] == struct.pack("<f", tensors["float32/scalar"])


def test_writer_bytes_follow_the_documented_format(tmp_path):
    prefix = write_checkpoint(tmp_path / "p", {"scalar": np.array([1.0, 2.0], np.float32)})
    index = Path(f"{prefix}.index").read_bytes()
    data = Path(f"{prefix}{DATA}").read_bytes()
    assert data == struct.pack("<2f", 1.0, 2.0)
    # first entry: key "" -> header 08 01 1a 02 08 01 (§3.4)
    assert index[:9] == bytes.fromhex("000006" "08011a020801")
    # second: "scalar" -> dtype 1, shape [2], size 8, masked CRC (the §3.5 worked example)
    entry = bytes.fromhex("08011204120208022808") + b"\x35" + struct.pack("<I", mask(crc32c(data)))
    assert index[9:12 + 6 + len(entry)] == bytes([0, 6, len(entry)]) + b"scalar" + entry
    footer = index[-48:]
    assert footer[-8:] == bytes.fromhex("57fb808b247547db")
    (meta_off, meta_size), pos = decode_block_handle(footer, 0, 40)
    (idx_off, idx_size), pos = decode_block_handle(footer, pos, 40)
    assert footer[pos:40] == bytes(40 - pos)
    # empty metaindex: restarts [0], count 1; index: "scalar" -> the shortened key "t"
    assert index[meta_off:meta_off + meta_size] == bytes.fromhex("0000000001000000")
    idx = index[idx_off:idx_off + idx_size]
    assert list(iter_block_entries(idx)) == [(b"t", bytes([0, meta_off - 5]))]
    for off, size in ((meta_off, meta_size), (idx_off, idx_size)):
        block, trailer = index[off:off + size], index[off + size:off + size + 5]
        assert trailer[0] == 0
        assert struct.unpack("<I", trailer[1:])[0] == mask(crc32c(block + b"\x00"))
    assert idx_off + idx_size + 5 + 48 == len(index)


def _blocks(index: bytes):
    footer = index[-48:]
    _, pos = decode_block_handle(footer, 0, 40)
    (off, size), _ = decode_block_handle(footer, pos, 40)
    index_block = index[off:off + size]
    handles = [(k, decode_block_handle(v, 0, len(v))[0]) for k, v in iter_block_entries(index_block)]
    return index_block, handles


def test_large_table_splits_into_256k_blocks_with_tf_restarts(tmp_path):
    tensors = {f"v{i:05d}/" + "x" * 57: np.float32(i) for i in range(6000)}
    prefix = write_checkpoint(tmp_path / "big", tensors)
    index = Path(f"{prefix}.index").read_bytes()
    index_block, handles = _blocks(index)
    assert len(handles) == 2  # docs §3.2: 6000 entries with 64-character keys, two blocks
    (n_idx,) = struct.unpack_from("<I", index_block, len(index_block) - 4)
    assert n_idx == len(handles)  # restart interval 1 in the index block
    blocks = [list(iter_block_entries(index[off:off + size])) for _, (off, size) in handles]
    for i, (sep, (off, size)) in enumerate(handles):
        if i == 0:  # closed once its size reaches 256 KiB (TF's block_size)
            assert 262144 <= size < 262144 + 100
        (n_restarts,) = struct.unpack_from("<I", index, off + size - 4)
        assert n_restarts == (len(blocks[i]) + 15) // 16  # restart interval 16 in data blocks
        assert blocks[i][-1][0] <= sep  # a separator: >= the block's keys ...
        if i + 1 < len(blocks):
            assert sep < blocks[i + 1][0][0]  # ... and < the next block's
    keys = [k for block in blocks for k, _ in block]
    assert keys == [b""] + sorted(k.encode() for k in tensors)
    back = read_checkpoint(prefix)
    assert all(bits_equal(back[k], np.asarray(v)) for k, v in tensors.items())


def test_build_table_rejects_unsorted_keys():
    with pytest.raises(ValueError):
        build_table([(b"", b""), (b"b", b""), (b"a", b"")])


def test_writer_refuses_overwrite_and_bad_dtypes(tmp_path):
    prefix = write_checkpoint(tmp_path / "c", {"a": np.float32(1)})
    before = _tree(tmp_path)
    with pytest.raises(SrnPortError, match="already exists"):
        write_checkpoint(tmp_path / "c", {"a": np.float32(2)})
    assert _tree(tmp_path) == before
    write_checkpoint(tmp_path / "c", {"a": np.float32(2)}, force=True)
    assert bits_equal(read_checkpoint(prefix)["a"], np.float32(2))
    for bad in (np.array([True]), np.array(["s"]), np.float16(1), np.uint8(3)):
        with pytest.raises(SrnPortError, match="float32, float64, int32 and int64"):
            write_checkpoint(tmp_path / "d", {"x": bad})
    with pytest.raises(SrnPortError, match="does not exist"):
        write_checkpoint(tmp_path / "missing" / "c", {"a": np.float32(1)})
    assert sorted(_tree(tmp_path)) == ["c.data-00000-of-00001", "c.index"]  # no temporaries


def test_checkpoint_state_file(tmp_path):
    write_checkpoint(tmp_path / "deblur.model", {"a": np.float32(1)}, step=5)
    write_checkpoint_state(tmp_path, "deblur.model-5")
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "deblur.model-5"\n'
        'all_model_checkpoint_paths: "deblur.model-5"\n')
    write_checkpoint(tmp_path / "deblur.model", {"a": np.float32(2)}, step=9)
    write_checkpoint_state(tmp_path, "deblur.model-9")
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "deblur.model-9"\n'
        'all_model_checkpoint_paths: "deblur.model-5"\n'
        'all_model_checkpoint_paths: "deblur.model-9"\n')
    with CheckpointReader(tmp_path) as reader:  # the folder resolves to the latest
        assert reader.prefix.name == "deblur.model-9"
    (tmp_path / "checkpoint").write_text("not a { state")
    with pytest.raises(SrnPortError, match="not a TF 'checkpoint' state file"):
        write_checkpoint_state(tmp_path, "deblur.model-9")
    write_checkpoint_state(tmp_path, "deblur.model-9", force=True)
    assert "deblur.model-5" not in (tmp_path / "checkpoint").read_text()


# -- the variables: names, layouts, Adam, step -----------------------------------------


@pytest.fixture(scope="module")
def srn_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("srn")
    prefix = write_srn_checkpoint(folder, SRNConfig("lstm", 4))
    return prefix, read_checkpoint(prefix)


def _torch_side(tensors):
    arrays = {tf_to_torch_name(k): tf_to_torch_tensor(v) for k, v in tensors.items()
              if tf_to_torch_name(k)}
    adam = {"m": {}, "v": {}, "beta1_power": float(tensors["beta1_power"]),
            "beta2_power": float(tensors["beta2_power"])}
    for name, value in tensors.items():
        for key, slot in (("m", "/Adam"), ("v", "/Adam_1")):
            if name.endswith(slot):
                adam[key][tf_to_torch_name(name[:-len(slot)])] = tf_to_torch_tensor(value)
    return arrays, adam


def test_tf_variables_with_adam_and_step_give_back_the_checkpoint(srn_ckpt, tmp_path):
    _, original = srn_ckpt
    arrays, adam = _torch_side(original)
    tensors = tf_variables(arrays, adam=adam, step=523000)
    assert list(tensors) == sorted(original)
    for name, value in original.items():
        assert bits_equal(tensors[name], value), name
    prefix = write_checkpoint(tmp_path / "deblur.model", tensors, step=523000)
    back = read_checkpoint(prefix)
    assert list(back) == sorted(original)
    for name, value in original.items():
        assert bits_equal(back[name], value), name
    assert back["Variable"].dtype == np.int32 and back["beta1_power"].dtype == np.float32
    # without Adam and step: the weights alone, every one mapped back to its parameter
    plain = tf_variables(arrays)
    assert classify(plain).mapped == {torch_to_tf_name(p): p for p in arrays}
    assert not classify(plain).dropped


def test_tf_variables_reject_inconsistent_adam(srn_ckpt):
    arrays, adam = _torch_side(srn_ckpt[1])
    with pytest.raises(SrnPortError, match="lacks beta2_power"):
        tf_variables(arrays, adam={k: v for k, v in adam.items() if k != "beta2_power"})
    first = next(iter(arrays))
    short = dict(adam, m={k: v for k, v in adam["m"].items() if k != first})
    with pytest.raises(SrnPortError, match=f"missing {first}"):
        tf_variables(arrays, adam=short)
    wrong = dict(adam, v=dict(adam["v"], **{first: np.zeros(3, np.float32)}))
    with pytest.raises(SrnPortError, match="has shape"):
        tf_variables(arrays, adam=wrong)
    for step in (-1, 2**31, 1.5):
        with pytest.raises(SrnPortError, match="step"):
            tf_variables(arrays, step=step)


def test_export_arrays_with_adam(srn_ckpt, tmp_path):
    arrays, adam = _torch_side(srn_ckpt[1])
    prefix = export_arrays(arrays, tmp_path / "new" / "dir", metadata={"step": 42}, adam=adam)
    assert prefix == tmp_path / "new" / "dir" / "deblur.model-42"
    back = read_checkpoint(prefix.parent)
    assert set(back) == set(srn_ckpt[1]) and int(back["Variable"]) == 42


# -- the command: TF checkpoint -> convert -> export-tf -> same variables ---------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_convert_then_export_gives_back_the_weights(srn_ckpt, tmp_path, suffix):
    prefix, original = srn_ckpt
    weights = tmp_path / f"m{suffix}"
    assert run("convert", prefix, weights).exit_code == 0
    result = run("export-tf", weights, tmp_path / "tf")
    assert result.exit_code == 0, result.output
    out = tmp_path / "tf" / "deblur.model-523000"
    assert "87 variables (86 weights under g_net/, global step 'Variable' = 523000)" \
        in result.output
    assert f"wrote {out}.index" in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "checkpoint", "deblur.model-523000" + DATA, "deblur.model-523000.index"]
    mapped = classify(original).mapped
    with CheckpointReader(out.parent) as reader:
        assert reader.keys() == sorted([*mapped, "Variable"])
        for name in mapped:
            assert reader.info(name).tf_dtype == "DT_FLOAT"
            assert bits_equal(reader.get_tensor(name), original[name]), name
        assert bits_equal(reader.get_tensor("Variable"), np.int32(523000))
    # and it converts again to the same file content
    again = tmp_path / f"again{suffix}"
    assert run("convert", out.parent, again).exit_code == 0
    assert run("export-tf", again, tmp_path / "tf2", "--step", 7, "-q").output == ""
    first, second = (Path(f"{out}{DATA}").read_bytes(),
                     (tmp_path / "tf2" / f"deblur.model-7{DATA}").read_bytes())
    assert first[4:] == second[4:]  # the weights; first is 'Variable', which sorts first
    assert second[:4] == struct.pack("<i", 7)
    assert 'model_checkpoint_path: "deblur.model-7"' in (tmp_path / "tf2" / "checkpoint").read_text()


def test_api_returns_prefix_and_steps(srn_ckpt, tmp_path):
    from srn_port.api.export_tf import export_tf
    from srn_port.core.weightfile import save_safetensors

    arrays, _ = _torch_side(srn_ckpt[1])
    meta = {"variant": "lstm", "width": 4, "step": None}
    save_safetensors(arrays, meta, tmp_path / "nostep.safetensors")
    assert export_tf(tmp_path / "nostep.safetensors", tmp_path / "o") == \
        tmp_path / "o" / "deblur.model-0"
    assert export_tf(tmp_path / "nostep.safetensors", tmp_path / "o", step=3).name == \
        "deblur.model-3"


def _expect_error(tmp_path, weights, outdir, *needles, args=()):
    before = _tree(outdir) if Path(outdir).is_dir() else None
    result = run("export-tf", weights, outdir, *args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    for needle in needles:
        assert needle in result.output, result.output
    if before is not None:
        assert _tree(outdir) == before
    else:
        assert not Path(outdir).is_dir()
    return result


@pytest.fixture(scope="module")
def weights_file(srn_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "m.safetensors"
    assert run("convert", srn_ckpt[0], out).exit_code == 0
    return out


def test_bad_output_folder(weights_file, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _expect_error(tmp_path, weights_file, afile, "is a file, not a folder")
    assert afile.read_text() == "x"
    assert run("export-tf", weights_file, tmp_path / "o").exit_code == 0
    _expect_error(tmp_path, weights_file, tmp_path / "o", "already holds a checkpoint of step "
                  "523000", "--force")
    index = tmp_path / "o" / "deblur.model-523000.index"
    index.write_bytes(b"old")
    result = run("export-tf", weights_file, tmp_path / "o", "--force")
    assert result.exit_code == 0, result.output
    assert index.read_bytes() != b"old" and not list((tmp_path / "o").glob(".*"))
    _expect_error(tmp_path, weights_file, tmp_path / "o", "int32 step", args=("--step", -1))
    (tmp_path / "o" / "checkpoint").write_text("garbage {")
    _expect_error(tmp_path, weights_file, tmp_path / "o", "not a TF 'checkpoint' state file",
                  args=("--step", 1))


def test_weights_that_are_not_srn_port(srn_ckpt, tmp_path):
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    _expect_error(tmp_path, tmp_path / "other.safetensors", tmp_path / "o1",
                  "not srn-port weights", "srn-port convert")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    _expect_error(tmp_path, tmp_path / "junk.safetensors", tmp_path / "o2", "srn-port convert")
    import torch

    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    _expect_error(tmp_path, tmp_path / "other.pt", tmp_path / "o3", "not srn-port weights")
    _expect_error(tmp_path, srn_ckpt[0].parent, tmp_path / "o4",
                  "not an srn-port weights file", "already is one")
    _expect_error(tmp_path, tmp_path / "missing.pt", tmp_path / "o5", "does not exist")


# -- with TensorFlow --------------------------------------------------------------------


@pytest.mark.tf
def test_bytes_equal_tensorflows_own_writer(tmp_path):
    import tensorflow as tf

    tensors = _sample_tensors()
    tensors.pop("unicode/é")
    tensors.update({f"v{i:05d}/" + "x" * 57: np.float32(i) for i in range(6000)})
    names = list(tensors)
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "tf"), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(np.asarray(tensors[n])) for n in names])
    ours = write_checkpoint(tmp_path / "ours", tensors)
    for suffix in (".index", DATA):
        assert Path(f"{ours}{suffix}").read_bytes() == (tmp_path / f"tf{suffix}").read_bytes()


@pytest.mark.tf
def test_adam_checkpoint_is_byte_identical_to_the_savers(tf_checkpoints, tmp_path):
    prefix = tf_checkpoints("lstm", 4)  # tf.compat.v1.train.Saver after one Adam step
    original = read_checkpoint(prefix)
    arrays, adam = _torch_side(original)
    ours = write_checkpoint(tmp_path / "deblur.model",
                            tf_variables(arrays, adam=adam, step=int(original["Variable"])),
                            step=int(original["Variable"]))
    for suffix in (".index", DATA):
        assert Path(f"{ours}{suffix}").read_bytes() == Path(f"{prefix}{suffix}").read_bytes()


def _tf_restore_and_run(tf, outdir, config, x):
    """A plain Saver over all variables of the original graph (and its step Variable),
    restored from the folder's 'checkpoint' file."""
    from srn_port.reference.graph import build_generator

    graph = tf.Graph()
    with graph.as_default():
        step = tf.Variable(initial_value=0, dtype=tf.int32, trainable=False)
        inputs = tf.compat.v1.placeholder(tf.float32, list(x.shape))
        outputs = build_generator(inputs, config)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, tf.train.latest_checkpoint(str(outdir)))
            return sess.run(step), sess.run(outputs, feed_dict={inputs: x})


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
def test_tf_restores_the_export(tf_checkpoints, tmp_path, variant, one_torch_thread):
    import tensorflow as tf
    import torch

    from srn_port.api.weights import load_model
    from srn_port.core.tolerances import TOLERANCES, within
    from srn_port.reference.graph import run_reference

    prefix = tf_checkpoints(variant, 4)
    pt = tmp_path / "m.pt"
    assert run("convert", prefix, pt).exit_code == 0
    assert run("export-tf", pt, tmp_path / "tf").exit_code == 0
    orig = tf.train.load_checkpoint(str(prefix))
    back = tf.train.load_checkpoint(str(tmp_path / "tf"))
    mapped = classify(orig.get_variable_to_shape_map()).mapped
    assert back.get_variable_to_shape_map() == {
        **{n: orig.get_variable_to_shape_map()[n] for n in mapped}, "Variable": []}
    assert back.get_variable_to_dtype_map() == {
        **{n: tf.float32 for n in mapped}, "Variable": tf.int32}
    for name in mapped:
        assert bits_equal(back.get_tensor(name), orig.get_tensor(name)), name
    assert back.get_tensor("Variable") == orig.get_tensor("Variable")

    model = load_model(pt)
    config = model.config
    batch = 1 if variant == "color" else 3
    x = np.random.default_rng(5).random((batch, 32, 48, config.channels), dtype=np.float32)
    step, tf_out = _tf_restore_and_run(tf, tmp_path / "tf", config, x)
    assert step == orig.get_tensor("Variable")
    ref = run_reference(prefix, x, config, activations=False)
    with torch.no_grad():
        ours = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    for level in range(3):
        assert np.array_equal(tf_out[level], ref.outputs[level])  # same weights, same graph
        mine = ours[level].permute(0, 2, 3, 1).numpy()
        err = float(np.abs(mine - tf_out[level]).max())
        scale = float(np.abs(tf_out[level]).max())
        assert scale > 0.1 and within(err, scale, TOLERANCES["output"]), (level, err, scale)

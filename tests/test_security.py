"""Opening a model file never runs code from it (docs/security.md).

Every format srn-port opens is given a crafted file whose payload would leave a marker file
if anything unpickled or executed it; the command must end in a clean one-paragraph error
and the marker must not exist. For ``.pt2``, each crafted file is first opened with plain
``torch.export.load`` in a child process, to show that the payload is real: there the
marker does appear.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REPO
from srn_port.cli import cli
from srn_port.core.errors import ModelFileError
from srn_port.core.pt2check import _check_guard, _check_sympy, _parse, _Refused
from srn_port.data.images import encode_image

GOLDEN = REPO / "golden"


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def payload_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_paragraph(res) -> str:
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    text = res.output.strip()
    assert text.startswith("Error: ") and "Traceback" not in text, text
    assert "\n\n" not in text, text
    return text


@pytest.fixture(scope="module")
def genuine_pt2(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2") / "genuine.pt2"
    res = run("export", GOLDEN / "ckpt" / "color", out)
    assert res.exit_code == 0, res.output
    return out


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy the zip ``src`` to ``dst`` through ``edit(entries)``, entries keyed by the path
    below the archive's root folder; stored uncompressed as torch.export.save stores."""
    with zipfile.ZipFile(src) as zf:
        root = zf.namelist()[0].split("/", 1)[0]
        entries = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    edit(entries)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():  # "/NAME": at the top level, outside the root
            zf.writestr(name[1:] if name.startswith("/") else f"{root}/{name}", data)
    return dst


def _json_edit(entries, name, change):
    obj = json.loads(entries[name])
    change(obj)
    entries[name] = json.dumps(obj).encode()


def craft(kind: str, genuine: Path, folder: Path, marker: Path) -> Path:
    """A crafted .pt2 of ``kind`` whose payload touches ``marker``."""
    evil = payload_bytes(marker)
    assert "'" not in str(marker) and " " not in str(marker)
    cmd = f"__import__('os').system('touch {marker}')"

    def edit(entries):
        if kind == "pickled-weight":
            def change(cfg):
                first = next(iter(cfg["config"]))
                cfg["config"][first]["use_pickle"] = True
                entries["data/weights/" + cfg["config"][first]["path_name"]] = evil
            _json_edit(entries, "data/weights/model_weights_config.json", change)
        elif kind == "pickled-sample-inputs":
            entries["data/sample_inputs/model.pt"] = evil
        elif kind == "pickled-constant":
            def change(cfg):
                cfg["config"]["c0"] = {"path_name": "tensor_0", "is_param": False,
                                       "use_pickle": True, "tensor_meta": None}
            _json_edit(entries, "data/constants/model_constants_config.json", change)
            entries["data/constants/tensor_0"] = evil
        elif kind == "code-in-guards":
            _json_edit(entries, "models/model.json",
                       lambda m: m["guards_code"].insert(0, cmd + " is None"))
        elif kind == "code-in-shapes":
            def change(m):
                for v in m["graph_module"]["graph"]["sym_int_values"].values():
                    if v.get("as_expr"):
                        v["as_expr"]["expr_str"] = cmd + " or Integer(1)"
                        return
            _json_edit(entries, "models/model.json", change)
        elif kind == "legacy-layout":  # torch <= 2.7's zip, read by torch.export.load's fallback
            program = entries["models/model.json"]
            entries.clear()
            entries["/version"] = b"8.20"
            entries["/serialized_exported_program.json"] = program
            for name in ("state_dict", "constants", "example_inputs"):
                entries[f"/serialized_{name}.pt"] = evil
        else:
            raise AssertionError(kind)

    return rewrite(genuine, folder / f"{kind}.pt2", edit)


PT2_KINDS = ("pickled-weight", "pickled-sample-inputs", "pickled-constant", "code-in-guards",
             "code-in-shapes", "legacy-layout")


@pytest.fixture(scope="module")
def crafted(genuine_pt2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    return {k: craft(k, genuine_pt2, folder, folder / f"{k}.marker") for k in PT2_KINDS}


@pytest.mark.slow
def test_the_crafted_payloads_are_real(crafted, tmp_path):
    """Plain torch.export.load of each crafted file (its module called once) runs its payload:
    the protection, not a broken payload, is what keeps the markers away below."""
    script = ("import sys, torch, warnings\nwarnings.simplefilter('ignore')\n"
              "for f in sys.argv[1:]:\n"
              "    try:\n        torch.export.load(f).module()(torch.rand(1, 3, 32, 48))\n"
              "    except BaseException:\n        pass\n")
    files = []
    for kind, path in crafted.items():
        copy = tmp_path / path.name
        marker = path.parent / f"{kind}.marker"
        copy.write_bytes(path.read_bytes())
        files.append((copy, marker))
    subprocess.run([sys.executable, "-c", script, *[str(f) for f, _ in files]],
                   capture_output=True, timeout=600, cwd=tmp_path)
    ran = {m.name: m.exists() for _, m in files}
    for _, marker in files:
        if marker.exists():
            marker.unlink()
    assert all(ran.values()), ran


def _dataset(root: Path) -> Path:
    for sub in ("blur", "sharp"):
        (root / "s" / sub).mkdir(parents=True)
        (root / "s" / sub / "a.png").write_bytes(
            encode_image(np.full((32, 32, 3), 90, np.uint8), ".png"))
    return root


@pytest.mark.parametrize("kind", PT2_KINDS)
def test_crafted_pt2_is_refused_by_every_command_and_runs_nothing(crafted, tmp_path, kind):
    evil = crafted[kind]
    marker = evil.parent / f"{kind}.marker"
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(np.full((32, 32, 3), 90, np.uint8), ".png"))
    data = _dataset(tmp_path / "data")
    for args, code in ((("deblur", evil, photo, "-o", tmp_path / "o"), 1),
                       (("evaluate", evil, data), 1),
                       (("diff", evil), 2)):
        res = run(*args)
        text = one_paragraph(res)
        assert res.exit_code == code, (args[0], res.output)
        assert str(evil) in text and ("refused" in text or "not a readable" in text), text
        assert not marker.exists(), (kind, args[0])


def test_srn_port_exports_still_open(genuine_pt2, tmp_path):
    from srn_port.api.deploy import ExportedProgram

    model = ExportedProgram(genuine_pt2)
    outs = model(torch.rand(1, 3, 32, 48))
    assert [tuple(o.shape) for o in outs] == [(1, 3, 8, 12), (1, 3, 16, 24), (1, 3, 32, 48)]
    # a copy re-zipped entry by entry (as the crafted ones are) opens too: the refusals
    # below are for what the files hold, not for how they were zipped
    same = rewrite(genuine_pt2, tmp_path / "same.pt2", lambda entries: None)
    assert ExportedProgram(same).config == model.config


@pytest.mark.parametrize("kind,change,why", [
    ("aotinductor", lambda e: e.__setitem__("data/aotinductor/model/model.so", b"\x7fELF"),
     "AOTInductor"),
    ("unknown-entry", lambda e: e.__setitem__("data/weights/model.pt", b""), "entry"),
    ("operator", lambda e: _json_edit(e, "models/model.json", lambda m: m["graph_module"]
                                      ["graph"]["nodes"][0].__setitem__("target", "torch.load")),
     "torch.load"),
    ("parameter-name", lambda e: _json_edit(
        e, "data/weights/model_weights_config.json",
        lambda c: c["config"].__setitem__('x"); import os; ("', next(iter(c["config"].values())))),
     "weight name"),
    ("custom-object", lambda e: _json_edit(e, "models/model.json", lambda m: m["graph_module"]
                                           ["graph"].__setitem__("custom_obj_values",
                                                                 {"a": {"name": "x"}})),
     "custom objects"),
])
def test_pt2_with_code_paths_is_refused(genuine_pt2, tmp_path, kind, change, why):
    from srn_port.api.deploy import ExportedProgram

    path = rewrite(genuine_pt2, tmp_path / f"{kind}.pt2", change)
    with pytest.raises(ModelFileError, match=why):
        ExportedProgram(path)


def test_compressed_entries_are_refused(genuine_pt2, tmp_path):
    from srn_port.api.deploy import ExportedProgram

    with zipfile.ZipFile(genuine_pt2) as zf, \
            zipfile.ZipFile(tmp_path / "z.pt2", "w", zipfile.ZIP_DEFLATED) as out:
        for name in zf.namelist():
            out.writestr(name, zf.read(name))
    with pytest.raises(ModelFileError, match="compressed"):
        ExportedProgram(tmp_path / "z.pt2")


@pytest.mark.parametrize("text", [
    "Add(Mul(Integer(16), Symbol('s8', positive=True, integer=True)), Integer(-1))",
    "FloorDiv(Symbol('s22', integer=True), Integer(2))",
])
def test_sympy_grammar_accepts_what_torch_writes(text):
    _parse(text, _check_sympy, "a symbolic shape")


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "Symbol('s8').__class__",
    "Integer(1)[0]",
    "lambdify(x, 'os')",
    "Symbol('a b')",
    "Pow(Integer(10), Integer(10**9))",
    "Integer(99999999999999999999999)",
    "Symbol('s8', positive=__import__('os'))",
])
def test_sympy_grammar_refuses_code(text):
    with pytest.raises(_Refused):
        _parse(text, _check_sympy, "a symbolic shape")


@pytest.mark.parametrize("text,ok", [
    ("(L['x'].size()[2] % 16) == 0", True),
    ("max(0, 3 + (-1)*(L['x'].size()[2] // 4)) >= 5 or L['x'].size()[0] != 1", True),
    ("L['x'].size()[2].__class__", False),
    ("L['x\"; import os'].size()[2] == 1", False),
    ("torch._assert(False, 'x')", False),
    ("L['x'].numpy() == 0", False),
    ("[c for c in ()] == []", False),
    ("'a' == 'a'", False),
])
def test_guard_grammar(text, ok):
    if ok:
        _parse(text, _check_guard, "a guard")
    else:
        with pytest.raises(_Refused):
            _parse(text, _check_guard, "a guard")


# -- the other loaders ---------------------------------------------------------------------

def test_pickled_pt_weights_run_nothing(tmp_path):
    marker = tmp_path / "pt.marker"
    for i, obj in enumerate((_Payload(marker), {"format": "srn-port-weights",
                                                "state_dict": {"x": _Payload(marker)}})):
        w = tmp_path / f"w{i}.pt"
        torch.save(obj, w)
        photo = tmp_path / "a.png"
        photo.write_bytes(encode_image(np.full((16, 16, 3), 9, np.uint8), ".png"))
        res = run("deblur", w, photo, "-o", tmp_path / "o")
        assert res.exit_code == 1 and "loads safely" in one_paragraph(res)
        res = run("diff", w)
        assert res.exit_code == 2 and "loads safely" in one_paragraph(res)
    assert not marker.exists()


def test_pickled_train_state_runs_nothing(tmp_path):
    marker = tmp_path / "state.marker"
    out = tmp_path / "run"
    out.mkdir()
    torch.save(_Payload(marker), out / "train_state.pt")
    res = run("train", out, "--synthetic", "--steps", "2", "--width", "4", "--batch", "1",
              "--crop", "32", "--resume")
    assert res.exit_code == 1, res.output
    one_paragraph(res)
    assert not marker.exists()


def test_safetensors_metadata_is_never_unpickled(tmp_path):
    from safetensors.numpy import save_file

    marker = tmp_path / "st.marker"
    evil = payload_bytes(marker).hex()
    w = tmp_path / "w.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(w),
              metadata={"format": "srn-port-weights", "variant": evil, "pickle": evil})
    res = run("diff", w)
    assert res.exit_code == 2
    one_paragraph(res)
    assert not marker.exists()


def test_tf_checkpoint_strings_are_never_unpickled(tmp_path):
    from _bundle_writer import write_bundle
    from _srn_ckpt import srn_tensors
    from srn_port.core.network import SRNConfig

    marker = tmp_path / "ckpt.marker"
    tensors = srn_tensors(SRNConfig("color", 4))
    tensors["g_net/evil"] = np.array([payload_bytes(marker)], dtype=object)
    prefix = write_bundle(tmp_path / "ck" / "deblur.model-1", tensors)
    res = run("convert", prefix, tmp_path / "o.safetensors")
    assert res.exit_code == 1 and "g_net/evil" in one_paragraph(res)
    res = run("inspect", prefix)
    assert not marker.exists()


def test_golden_h5_with_outside_references_is_refused(tmp_path):
    import h5py

    from srn_port.parity.golden import GoldenError, GoldenFile

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    base = GOLDEN / "color.h5"
    cases = {
        "external-link": lambda f: f.__setitem__("extra", h5py.ExternalLink(str(secret), "/x")),
        "soft-link": lambda f: f.__setitem__("extra", h5py.SoftLink("/input")),
        "external-dataset": lambda f: f.create_dataset(
            "extra", shape=(16,), dtype="f4", external=[(str(secret), 0, 64)]),
        "virtual-dataset": lambda f: f.create_virtual_dataset(
            "extra", _virtual_layout(h5py, secret.with_suffix(".h5"))),
    }
    with h5py.File(secret.with_suffix(".h5"), "w") as other:
        other.create_dataset("x", data=np.zeros(4, np.float32))
    for kind, change in cases.items():
        path = tmp_path / f"{kind}.h5"
        path.write_bytes(base.read_bytes())
        with h5py.File(path, "a") as f:
            change(f)
        with pytest.raises(GoldenError, match="refused"):
            GoldenFile(path, verify_checkpoint=False)
        res = run("diff", GOLDEN / "ckpt" / "color", "--golden", path)
        assert res.exit_code == 2 and "refused" in one_paragraph(res), kind


def _virtual_layout(h5py, other: Path):
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "x", shape=(4,))
    return layout


def test_onnx_external_data_outside_its_folder_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from srn_port.api.deploy import METADATA_KEY, OnnxModel

    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.ones(4, np.float32).tobytes())
    (tmp_path / "m").mkdir()
    for location in ("../outside.bin", str(outside)):
        init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
        init.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "16")):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
        graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["level0"])], "g",
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4])],
                                  [helper.make_tensor_value_info("level0", TensorProto.FLOAT, [4])],
                                  initializer=[init])
        model = helper.make_model(graph)
        model.metadata_props.add(key=METADATA_KEY, value="color:4")
        path = tmp_path / "m" / "m.onnx"
        path.write_bytes(model.SerializeToString())
        with pytest.raises(ModelFileError, match="ONNX Runtime cannot load"):
            OnnxModel(path)

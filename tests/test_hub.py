"""Hugging Face Hub folders and torch.hub (issue 21): a converted checkpoint round-trips
through a Hub folder and through a local Hub cache (offline) to the same outputs; every
command that takes WEIGHTS takes the folder and ``hf://org/name``; the model card holds
the parity result that ``srn-port diff`` reports; pickled weights are never opened; a
config.json that disagrees with the weights is refused; torch.hub loads the model.

Offline throughout: ``HF_HUB_OFFLINE=1`` and a cache laid out as huggingface_hub's
(``models--org--name/{blobs,refs/main,snapshots/<commit>}``), built here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _disk import CHILD, mount_tmpfs, umount
from conftest import REPO
from srn_port.api.weights import load_model
from srn_port.cli import cli
from srn_port.core.errors import SrnPortError
from srn_port.data import synthetic
from srn_port.data.images import encode_image

pytest.importorskip("huggingface_hub", reason="the hub extra")
from srn_port.nn.model import SRN  # noqa: E402  (after the skip: the mixin needs it)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CKPT = REPO / "golden" / "ckpt" / "color"
PREFIX = CKPT / "deblur.model-523000"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "srn-color"
    res = run("convert", CKPT, out, "--hub", "-q")
    assert res.exit_code == 0, res.output
    return out


def add_to_cache(cache: Path, repo_id: str, files: dict) -> Path:
    """Lay out ``files`` (name -> bytes) as huggingface_hub's cache holds a downloaded
    revision: content-addressed blobs, ``refs/main`` naming the commit, and the snapshot's
    files as relative links to the blobs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snap


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty cache in tmp_path: for child processes (environment)
    and for this one (huggingface_hub reads both when it is imported)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def cached(folder, offline):
    """The converted folder as the cached Hub model org/srn-color."""
    add_to_cache(offline, "org/srn-color",
                 {p.name: p.read_bytes() for p in folder.iterdir()})
    return "org/srn-color"


def outputs(model, seed=0):
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return [o.clone() for o in model(x)]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# -- the folder ------------------------------------------------------------------------

def test_folder_layout_and_config(folder):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["variant"], config["width"], config["step"]) == ("color", 4, 523000)
    assert config["srn_port_version"] == __import__("srn_port").__version__
    assert config["source"] == "color/deblur.model-523000"
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (PREFIX.with_name(PREFIX.name + ".index"),
                      PREFIX.with_name(PREFIX.name + ".data-00000-of-00001"))}
    assert config["source_sha256"] == want
    # no temporary folder left beside it
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_round_trip_folder_and_cache_give_identical_outputs(folder, cached, offline):
    reference = outputs(load_model(CKPT))  # the TF checkpoint, converted in memory
    from_folder = SRN.from_pretrained(folder)
    assert not from_folder.training and from_folder.config.width == 4
    assert same(outputs(from_folder), reference)
    assert same(outputs(load_model(folder)), reference)
    # the local Hub cache, offline: by repo id, hf:// id, and through load_model
    from_cache = SRN.from_pretrained(cached)
    assert same(outputs(from_cache), reference)
    assert same(outputs(SRN.from_pretrained(f"hf://{cached}")), reference)
    assert same(outputs(load_model(f"hf://{cached}")), reference)
    assert same(outputs(load_model(Path(f"hf://{cached}"))), reference)  # pathlib folds //
    # a revision: a tag whose ref names the cached commit
    (offline / "models--org--srn-color" / "refs" / "v1.0").write_text(COMMIT)
    assert same(outputs(load_model(f"hf://{cached}@v1.0")), reference)
    assert same(outputs(SRN.from_pretrained(cached, revision="v1.0")), reference)


def test_save_pretrained_round_trip(folder, tmp_path):
    model = SRN.from_pretrained(folder)
    model.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert (saved["variant"], saved["width"], saved["step"]) == ("color", 4, 523000)
    assert "Not computed" in (tmp_path / "again" / "README.md").read_text()
    assert same(outputs(SRN.from_pretrained(tmp_path / "again")), outputs(model))


def test_card_holds_the_parity_result_of_diff(folder, tmp_path):
    card = (folder / "README.md").read_text()
    assert "license: mit" in card and "jiangsutx/SRN-Deblur" in card
    res = run("diff", folder, "--json", tmp_path / "d.json")
    assert res.exit_code == 0, res.output
    diff = json.loads((tmp_path / "d.json").read_text())
    assert diff["passed"] and "**PASS**" in card
    assert f"all {len(diff['rows'])} layer/level rows" in card
    assert "golden file `color.h5`" in card
    for row in diff["rows"]:
        if row["layer"] == "dec1_0":
            shape = "x".join(str(d) for d in row["shape"])
            line = (f"| {row['level']} | {shape} | {row['max_abs_err']:.3g} | "
                    f"{row['max_rel_err']:.3g} | {row['tolerance']} ")
            assert line in card, line


def test_card_without_a_golden_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SRN_PORT_GOLDEN_DIR", str(tmp_path / "no-goldens"))
    res = run("convert", CKPT, tmp_path / "m", "--hub", "-q")
    assert res.exit_code == 0, res.output
    card = (tmp_path / "m" / "README.md").read_text()
    assert "No parity result is recorded here" in card and "PASS" not in card


def test_card_of_another_checkpoint_reports_no_golden(tmp_path, folder):
    # the same variant and width, other weights: the golden of color width 4 is not its own
    model = load_model(folder)
    with torch.no_grad():
        model.enc1_1.bias.add_(0.5)
    model.save_pretrained(tmp_path / "edited")
    assert run("export-tf", tmp_path / "edited", tmp_path / "tf", "-q").exit_code == 0
    res = run("convert", tmp_path / "tf", tmp_path / "m", "--hub", "-q")
    assert res.exit_code == 0, res.output
    card = (tmp_path / "m" / "README.md").read_text()
    assert "computed from another checkpoint" in card and "PASS" not in card


def test_convert_hub_refuses_an_existing_folder(folder, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run("convert", CKPT, out, "--hub")
    assert res.exit_code == 1 and "already exists" in res.output
    assert (out / "keep.txt").read_text() == "mine"
    res = run("convert", CKPT, out, "--hub", "--force", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporaries left
    res = run("convert", CKPT, CKPT / "hub", "--hub", "--force")  # inside the input
    assert res.exit_code == 1 and "never modifies" in res.output
    assert not (CKPT / "hub").exists()


# -- every command ---------------------------------------------------------------------

def _dataset(root):
    for sub in ("blur", "sharp"):
        (root / "scene" / sub).mkdir(parents=True)
    blur, sharp = synthetic.held_out_set(1, 48, 64, seed=3, photos=False)[0]
    (root / "scene" / "blur" / "0.png").write_bytes(encode_image(blur, ".png"))
    (root / "scene" / "sharp" / "0.png").write_bytes(encode_image(sharp, ".png"))
    return root


@pytest.mark.parametrize("how", ["folder", "hf-id"])
def test_every_command_takes_the_folder_and_the_hub_id(folder, cached, tmp_path, how):
    weights = folder if how == "folder" else f"hf://{cached}"
    image = REPO / "examples" / "blurred_example.png"
    data = _dataset(tmp_path / "data")
    checks = [
        ("deblur", weights, image, "-o", tmp_path / "out"),
        ("diff", weights),
        ("evaluate", weights, data, "--csv", tmp_path / "s.csv"),
        ("export", weights, tmp_path / "m.pt2"),
        ("export-tf", weights, tmp_path / "tf", "-q"),
        ("train", tmp_path / "run", "--synthetic", "--init", weights, "--width", "4",
         "--steps", "1", "--batch", "1", "--crop", "32", "--device", "cpu"),
    ]
    for args in checks:
        res = run(*args)
        assert res.exit_code == 0, (args[0], res.output)
    assert (tmp_path / "out" / "blurred_example.png").is_file()
    # what each wrote came from these weights
    tf = load_model(tmp_path / "tf")
    assert same(outputs(tf), outputs(load_model(folder)))
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_an_uncached_hub_id_offline_is_a_clear_error(offline):
    res = run("deblur", "hf://org/not-cached", REPO / "examples" / "blurred_example.png",
              "-o", offline / "out")
    assert res.exit_code == 1
    assert "not in the local Hugging Face cache" in res.output and "Traceback" not in res.output
    with pytest.raises(SrnPortError, match="not in the local Hugging Face cache"):
        SRN.from_pretrained("org/not-cached")
    res = run("diff", "hf://not an id")
    assert res.exit_code == 2 and "not a Hugging Face Hub model id" in res.output


# -- what is refused ------------------------------------------------------------------

class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _pickle_folder(folder: Path, marker: Path, source: Path) -> Path:
    folder.mkdir()
    torch.save(_Payload(marker), folder / "pytorch_model.bin")
    shutil.copy(source / "config.json", folder / "config.json")
    return folder


def test_a_folder_with_only_pytorch_model_bin_is_refused_unopened(folder, offline, tmp_path):
    marker = tmp_path / "opened.marker"
    evil = _pickle_folder(tmp_path / "evil", marker, folder)
    # the payload is real: plain torch.load runs it (in a child, so the marker is its)
    probe = tmp_path / "probe.marker"
    torch.save(_Payload(probe), tmp_path / "probe.bin")
    subprocess.run([sys.executable, "-c", "import torch, sys; torch.load(sys.argv[1], "
                    "weights_only=False)", str(tmp_path / "probe.bin")], check=False)
    assert probe.exists()

    snap = add_to_cache(offline, "org/evil", {p.name: p.read_bytes() for p in evil.iterdir()})
    assert (snap / "pytorch_model.bin").exists()
    for weights in (evil, "hf://org/evil"):
        for args in (("deblur", weights, REPO / "examples" / "blurred_example.png", "-o",
                      tmp_path / "o"), ("diff", weights), ("export-tf", weights, tmp_path / "t")):
            res = run(*args)
            assert res.exit_code in (1, 2), res.output
            assert "pytorch_model.bin" in res.output and "never opens" in res.output
        with pytest.raises(SrnPortError, match="never opens"):
            load_model(weights)
    for ref in (evil, "org/evil"):
        with pytest.raises(SrnPortError, match="never opens"):
            SRN.from_pretrained(ref)
    # without config.json too
    (evil / "config.json").unlink()
    with pytest.raises(SrnPortError, match="never opens"):
        load_model(evil)
    assert not marker.exists()


def _edited(folder: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("changes", [{"width": 8}, {"variant": "gray"}, {"variant": "lstm"}])
def test_a_config_that_disagrees_with_the_weights_is_refused(folder, tmp_path, changes):
    edited = _edited(folder, tmp_path, **changes)
    for load in (load_model, SRN.from_pretrained):
        with pytest.raises(SrnPortError, match="disagrees with itself"):
            load(edited)
    res = run("deblur", edited, REPO / "examples" / "blurred_example.png", "-o", tmp_path / "o")
    assert res.exit_code == 1 and "disagrees with itself" in res.output


def test_weights_of_another_model_under_a_matching_config_are_refused(folder, tmp_path):
    # config.json and the safetensors metadata agree (gray, width 4), the tensors are color's
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    edited = _edited(folder, tmp_path, variant="gray")
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
        meta = dict(f.metadata(), variant="gray")
    save_file(load_file(folder / "model.safetensors"), edited / "model.safetensors",
              metadata=meta)
    with pytest.raises(SrnPortError, match="do not fit"):
        load_model(edited)
    with pytest.raises(SrnPortError, match="do not fit"):
        SRN.from_pretrained(edited)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"variant": "color"}',
                                  '{"variant": "color", "width": true}'])
def test_a_broken_config_json_is_refused(folder, tmp_path, text):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "config.json").write_text(text)
    with pytest.raises(SrnPortError, match="config.json"):
        load_model(copy)


def test_a_huge_config_json_is_refused_unread(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    with open(copy / "config.json", "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB claimed, nothing read
    with pytest.raises(SrnPortError, match="at most"):
        load_model(copy)


def test_without_huggingface_hub_the_model_works_and_the_error_says_how(folder):
    code = f"""
import sys
sys.modules['huggingface_hub'] = None  # not installed
from srn_port.nn.model import SRN
from srn_port.core.network import SRNConfig
from srn_port.api.weights import load_model
SRN(SRNConfig('color', 4))
load_model({str(folder)!r})  # a local folder needs no huggingface_hub
for call in (lambda: SRN.from_pretrained({str(folder)!r}),
             lambda: load_model('hf://org/name')):
    try:
        call()
    except Exception as exc:
        print(type(exc).__name__, exc)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("SrnPortError") and "pip install 'srn-port[hub]'" in line


# -- torch.hub --------------------------------------------------------------------------

def test_torch_hub_load_local(folder, cached):
    reference = outputs(load_model(folder))
    for weights in (str(folder), f"hf://{cached}"):
        model = torch.hub.load(str(REPO), "srn", source="local", weights=weights)
        assert isinstance(model, SRN) and not model.training
        assert same(outputs(model), reference)
    fresh = torch.hub.load(str(REPO), "srn", source="local", variant="gray", width=4)
    assert fresh.config.variant == "gray" and fresh.config.width == 4 and not fresh.training
    conv1 = fresh.enc1_1.weight
    assert float(conv1.detach().abs().sum()) > 0
    assert float(fresh.enc1_1.bias.detach().abs().sum()) == 0
    with pytest.raises(SrnPortError, match="not the variant"):
        torch.hub.load(str(REPO), "srn", source="local", weights=str(folder), width=8)


# -- faults, as they happen ------------------------------------------------------------

def _srn_port(*args, limit=-1, env=None, **kw):
    return subprocess.run([sys.executable, "-c", CHILD, str(limit), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, **kw)


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(params=["tmpfs", "rlimit"])
def small_disk(request, tmp_path):
    """(folder, limit): a 700 KiB tmpfs (room for one Hub folder of width 4, 445 KB, not
    two), or where none can be mounted (not root) a folder whose writer runs under
    RLIMIT_FSIZE of 100 kB."""
    path = tmp_path / "disk"
    path.mkdir()
    if request.param == "tmpfs":
        if not mount_tmpfs(path, "size=700k"):
            pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE variant runs")
        try:
            yield path, -1
        finally:
            umount(path)
    else:
        yield path, 100_000


def test_convert_hub_on_a_full_disk_leaves_the_old_folder(small_disk):
    disk, limit = small_disk
    out = disk / "m"
    first = _srn_port("convert", CKPT, out, "--hub", "-q")
    assert first.returncode == 0, first.stderr
    before = _tree(out)
    res = _srn_port("convert", CKPT, out, "--hub", "--force", limit=limit)
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and "Traceback" not in text, text
    assert len(re.findall(r"(?<![A-Za-z])Error: ", text)) == 1, text  # one paragraph
    assert f"Cannot write '{out}/model.safetensors'" in text
    assert ("no space is left" in text) if limit < 0 else ("largest file" in text), text
    assert _tree(out) == before  # the old folder, as it was
    assert sorted(p.name for p in disk.iterdir() if p.name != "lost+found") == ["m"]


def test_convert_hub_killed_mid_write_leaves_nothing_and_is_cleaned_up(tmp_path):
    out = tmp_path / "m"
    env = dict(os.environ, SRN_PORT_TEST_WRITE_DELAY="30")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "-1", "convert", str(CKPT),
                             str(out), "--hub", "-q"], cwd=REPO, env=env)
    try:
        for _ in range(600):  # until the weights' temporary is written (then it sleeps)
            if list(tmp_path.glob(".m.*.tmp/.model.safetensors.*.tmp")):
                break
            assert proc.poll() is None
            __import__("time").sleep(0.1)
        else:
            pytest.fail("the write never started")
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")]  # what kill left
    res = run("convert", CKPT, out, "--hub", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # cleaned up
    assert same(outputs(load_model(out)), outputs(load_model(CKPT)))


def test_publish_checks_the_folder_first_and_never_goes_online_offline(folder, offline,
                                                                       tmp_path):
    marker = tmp_path / "opened.marker"
    evil = _pickle_folder(tmp_path / "evil", marker, folder)
    res = run("publish", evil, "org/evil")
    assert res.exit_code == 1 and "never opens" in res.output
    res = run("publish", _edited(folder, tmp_path, width=8), "org/name")
    assert res.exit_code == 1 and "disagrees with itself" in res.output
    res = run("publish", folder, "not/a/repo")
    assert res.exit_code == 1 and "not a Hugging Face Hub repository id" in res.output
    # a good folder, with HF_HUB_OFFLINE=1: huggingface_hub refuses to go online
    res = run("publish", folder, "org/srn-color")
    assert res.exit_code == 1 and "Cannot upload" in res.output and "HF_HUB_OFFLINE" in res.output
    assert "Traceback" not in res.output and not marker.exists()


def test_a_tf_checkpoint_folder_with_a_converted_file_beside_it_is_still_the_checkpoint(
        tmp_path):
    ckpt = tmp_path / "color"
    shutil.copytree(CKPT, ckpt)
    assert run("convert", ckpt, ckpt / "color.pt", "-q").exit_code == 0
    assert same(outputs(load_model(ckpt)), outputs(load_model(CKPT)))
    # a training run's folder (model.safetensors, no config.json): pointed at the file
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert run("convert", CKPT, run_dir / "model.safetensors", "-q").exit_code == 0
    with pytest.raises(SrnPortError, match="Give the weights file itself"):
        load_model(run_dir)
    assert same(outputs(load_model(run_dir / "model.safetensors")), outputs(load_model(CKPT)))

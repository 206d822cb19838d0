"""srn-port evaluate: scores a dataset through the deblur pipeline with MATLAB's psnr/ssim;
GoPro layout and datalists, --scenes/--limit, CSV and JSON, bad datasets refused before any
work, and 2 torchrun processes give the scores of one."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from _srn_ckpt import write_srn_checkpoint
from srn_port.api.convert import convert
from srn_port.cli import cli
from srn_port.core.network import SRNConfig
from srn_port.data import synthetic
from srn_port.data.images import encode_image, read_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")
skm = pytest.importorskip("skimage.metrics", reason="the eval extra (scikit-image)")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    out = folder / "color.safetensors"
    convert(write_srn_checkpoint(folder / "c", SRNConfig("color", 2)), out)
    return out


def write_dataset(root, scenes=(("sceneA", 2), ("sceneB", 1)), size=(48, 64)):
    """A GoPro-layout dataset of synthetic blurry/sharp pairs (photos off: no extra)."""
    k = 0
    for scene, n in scenes:
        for sub in ("blur", "sharp"):
            (root / scene / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            blur, sharp = synthetic.held_out_set(1, *size, seed=100 + k, photos=False)[0]
            (root / scene / "blur" / f"{k:03d}.png").write_bytes(encode_image(blur, ".png"))
            (root / scene / "sharp" / f"{k:03d}.png").write_bytes(encode_image(sharp, ".png"))
            k += 1
    return root


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scores_equal_scikit_image_on_the_deblurred_files(tmp_path, weights):
    """The CSV's numbers are those of the files `srn-port deblur` writes, scored by
    scikit-image (PSNR; SSIM as MATLAB's volume, cross-checked in test_metrics.py)."""
    data = write_dataset(tmp_path / "data")
    res = run("evaluate", weights, data, "--csv", tmp_path / "s.csv", "--json", tmp_path / "s.json")
    assert res.exit_code == 0, res.output
    assert "3 image(s): PSNR" in res.output
    table = rows(tmp_path / "s.csv")
    assert [r["name"] for r in table] == ["000.png", "001.png", "002.png"]
    assert [r["scene"] for r in table] == ["sceneA", "sceneA", "sceneB"]
    for scene in ("sceneA", "sceneB"):
        assert run("deblur", weights, data / scene / "blur", "-o", tmp_path / "out").exit_code == 0
    for r in table:
        out = read_image(tmp_path / "out" / r["name"])
        sharp = read_image(data / r["scene"] / "sharp" / r["name"])
        blur = read_image(data / r["scene"] / "blur" / r["name"])
        assert float(r["psnr"]) == pytest.approx(
            skm.peak_signal_noise_ratio(sharp, out, data_range=255), abs=1e-6)
        assert float(r["input_psnr"]) == pytest.approx(
            skm.peak_signal_noise_ratio(sharp, blur, data_range=255), abs=1e-6)
        assert -1 <= float(r["ssim"]) <= 1 and float(r["seconds"]) > 0  # random weights
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["images"] == 3 and set(summary["scenes"]) == {"sceneA", "sceneB"}
    assert summary["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in table]), abs=1e-5)
    assert summary["scenes"]["sceneB"]["images"] == 1


def test_scenes_limit_and_datalist(tmp_path, weights):
    data = write_dataset(tmp_path / "data")
    res = run("evaluate", weights, data, "--scenes", "sceneB", "--csv", tmp_path / "b.csv")
    assert res.exit_code == 0, res.output
    assert [r["name"] for r in rows(tmp_path / "b.csv")] == ["002.png"]
    res = run("evaluate", weights, data, "--limit", "2", "--csv", tmp_path / "l.csv")
    assert [r["name"] for r in rows(tmp_path / "l.csv")] == ["000.png", "001.png"]
    # the original's datalist: sharp path first, relative to the list's folder
    (data / "list.txt").write_text("sceneA/sharp/001.png sceneA/blur/001.png\n")
    res = run("evaluate", weights, data / "list.txt", "--csv", tmp_path / "d.csv")
    assert res.exit_code == 0, res.output
    (d,) = rows(tmp_path / "d.csv")
    (a,) = [r for r in rows(tmp_path / "l.csv") if r["name"] == "001.png"]
    assert d["psnr"] == a["psnr"] and d["ssim"] == a["ssim"]
    res = run("evaluate", weights, data, "--scenes", "nope")
    assert res.exit_code == 1 and "no scene(s) nope" in res.output and "sceneA" in res.output


def test_bad_datasets_are_refused_before_any_work(tmp_path, weights):
    data = write_dataset(tmp_path / "data")
    (data / "sceneA" / "sharp" / "001.png").unlink()
    res = run("evaluate", weights, data, "--csv", tmp_path / "s.csv")
    assert res.exit_code == 1 and "no partner" in res.output and "001.png" in res.output
    assert not (tmp_path / "s.csv").exists()

    data = write_dataset(tmp_path / "data2")
    small = np.zeros((32, 64, 3), np.uint8)
    (data / "sceneB" / "sharp" / "002.png").write_bytes(encode_image(small, ".png"))
    res = run("evaluate", weights, data, "--csv", tmp_path / "s.csv")
    assert res.exit_code == 1 and "002.png is 64x48" in res.output
    assert not (tmp_path / "s.csv").exists()

    (tmp_path / "s.csv").write_text("keep me")
    res = run("evaluate", weights, write_dataset(tmp_path / "data3"), "--csv", tmp_path / "s.csv")
    assert res.exit_code == 1 and "--force" in res.output
    assert (tmp_path / "s.csv").read_text() == "keep me"
    res = run("evaluate", weights, tmp_path / "missing")
    assert res.exit_code == 1 and "does not exist" in res.output


@pytest.mark.slow
def test_two_torchrun_processes_give_the_scores_of_one(tmp_path, weights):
    import os
    import subprocess
    import sys

    data = write_dataset(tmp_path / "data", scenes=(("s1", 3), ("s2", 2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tables = {}
    for name, launcher in (("one", [sys.executable, "-m", "srn_port"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2", "-m", "srn_port"])):
        out = tmp_path / f"{name}.csv"
        res = subprocess.run(launcher + ["evaluate", str(weights), str(data), "--csv", str(out)],
                             env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count("5 image(s): PSNR") == 1, res.stdout
        tables[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows(out)]
    assert tables["one"] == tables["two"] and len(tables["one"]) == 5

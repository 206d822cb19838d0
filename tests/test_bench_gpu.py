"""tools/bench.py --device cuda (tools/bench_gpu.py) without a GPU: it checks its options,
fails with a clear message where CUDA is missing, and its measuring code runs end to end
(a hidden CPU smoke mode with tiny sizes), so that a GPU run does not die on a typo. The
figures themselves need a GPU (tools/gpu_check.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from srn_port.core.flops import frame_flops
from srn_port.core.network import SRNConfig

BENCH = [sys.executable, str(REPO / "tools" / "bench.py")]


def bench(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    return subprocess.run(BENCH + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_gpu_bench_says_so():
    res = bench("--device", "cuda", "--no-fidelity")
    assert res.returncode == 2
    assert "Error: --device cuda: CUDA is not available here" in res.stderr
    assert "Traceback" not in res.stderr


def test_options_are_checked():
    res = bench("--device", "cuda", "--plan", "--sizes", "250x256")
    assert res.returncode != 0 and "multiples of 16" in res.stderr
    res = bench("--device", "cuda", "--plan", "--gpu-precisions", "fp8")
    assert res.returncode != 0 and "unknown variant/precision ['fp8']" in res.stderr
    res = bench("--device", "cuda", "--plan")
    plan = json.loads(res.stdout)
    assert plan["sizes"] == [[256, 256], [720, 1280]] and plan["batches"] == [1, 8]
    assert plan["precisions"] == ["fp32", "tf32", "fp16", "bf16"]
    assert plan["compiled"] == ["color", "gray", "lstm"]
    assert plan["train"]["batch"] == 16 and plan["train"]["crop"] == 256


def test_the_measuring_code_runs_end_to_end(tmp_path):
    out = tmp_path / "b.json"
    res = bench("--gpu-bench-on-cpu", "--variants", "color,lstm", "--sizes", "32x32",
                "--batches", "1,2", "--gpu-precisions", "fp32,tf32", "--no-compile",
                "--train-steps", "1", "--gpu-width", "2", "--fidelity-limit", "1",
                "--gpu-reps", "1", "--gpu-warmup", "0", "--json", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["complete"] is True
    rows = data["inference"]
    assert {(r["variant"], r["precision"], r["batch"]) for r in rows} == {
        (v, q, b) for v in ("color", "lstm") for q in ("fp32", "tf32") for b in (1, 2)}
    for r in rows:
        flops = frame_flops(SRNConfig(r["variant"], 2), 32, 32)
        assert r["tflop_per_frame"] == flops / 1e12
        assert r["tflops"] == pytest.approx(flops * r["batch"] / (r["ms_per_call"] / 1e3) / 1e12)
    train = data["training"]
    assert {(r["variant"], r["precision"]) for r in train} == {
        (v, q) for v in ("color", "lstm") for q in ("fp32", "bf16")}
    for r in train:
        assert r["hours_for_paper_steps"] == pytest.approx(r["s_per_step"] * 523000 / 3600)
    photo = data["fidelity"]["photos"]["01.png"]["tf32"]
    assert photo["identical_share"] == 1.0 and photo["psnr_vs_fp32"] is None  # TF32 is CUDA's
    assert set(data["fidelity"]["held_out"]) == {"fp32", "tf32"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_runs_nothing_without_cuda(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "CUDA is not available to this torch" in res.stdout
    assert "cannot run the CUDA check" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["machine.txt"]


def test_peak_figures_are_picked_by_the_exact_part():
    sys.path.insert(0, str(REPO / "tools"))
    import bench_gpu

    h200, _ = bench_gpu._peaks("NVIDIA H200", None)
    assert h200["fp16"] == 989.4 and h200["fp32"] == 67.0
    for slower_or_other in ("NVIDIA H200 NVL", "NVIDIA H100 PCIe", "NVIDIA L40S", "Tesla T4"):
        peaks, why = bench_gpu._peaks(slower_or_other, None)
        assert peaks == {} and "--peak-tflops" in why
    assert bench_gpu._peaks("NVIDIA L40S", "fp32=91.6,fp16=362")[0] == {"fp32": 91.6,
                                                                         "fp16": 362.0}

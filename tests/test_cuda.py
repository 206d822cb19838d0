"""On a CUDA GPU (marker ``cuda``; skipped where torch.cuda.is_available() is False, see
conftest.py; tools/gpu_check.sh runs them): every golden within the tolerance table in fp32
(TF32 off), CPU and CUDA deblur within one 8-bit level, a training step equal to the CPU's
within the 'gradient' tolerance, a run resumed across devices (bit for bit on load),
autocast on every forward path, DDP with NCCL in one process, diff --device cuda.

Written without a GPU at hand (issue 19): the session that wrote these could not run them.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import PHOTOS, REPO
from srn_port.api.deblur import deblur_image, read_image
from srn_port.api.deploy import Outputs, _dynamic_shapes
from srn_port.api.train import STATE_FILE, TrainConfig, Trainer, dataset_for, slim_init
from srn_port.api.weights import load_model
from srn_port.cli import cli
from srn_port.core.network import SRNConfig
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.nn.loss import srn_loss
from srn_port.nn.model import SRN
from srn_port.nn.precision import Autocast, ieee_fp32
from srn_port.parity import GoldenReference, compare, list_goldens

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda", 0)
CKPT = REPO / "golden" / "ckpt"
TRAINED = REPO / "examples" / "trained" / "color"


def _goldens():
    found, _ = list_goldens()
    return {g.name: g for g in found}


@pytest.mark.parametrize("name", ["color", "gray", "lstm", "trained-color"])
def test_every_golden_on_cuda_within_the_tolerance_table(name):
    golden = _goldens()[name]
    model = load_model(golden.checkpoint, device=CUDA)
    with GoldenReference(golden.path) as ref:
        result = compare(model, ref)
    f = result.first_divergence
    assert result.passed, (f"{f.layer} level {f.level}: {f.max_rel_err:.2e} > {f.tolerance}",
                           result.diagnosis)


def test_diff_on_cuda_passes_in_fp32_and_names_tf32():
    res = CliRunner().invoke(cli, ["diff", str(CKPT / "color"), "--device", "cuda"])
    assert res.exit_code == 0, res.output
    if torch.cuda.get_device_capability(CUDA)[0] < 8:
        pytest.skip("TF32 needs an Ampere or later GPU")
    res = CliRunner().invoke(cli, ["diff", str(CKPT / "color"), "--device", "cuda",
                                   "--precision", "tf32"])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "diagnosis (reduced-precision)" in text


def test_cpu_and_cuda_deblur_within_one_level():
    cpu, gpu = load_model(TRAINED), load_model(TRAINED, device=CUDA)
    for path in sorted(PHOTOS.glob("*.png"))[:2]:
        image = read_image(path)
        a = deblur_image(cpu, image).astype(int)
        b = deblur_image(gpu, image).astype(int)
        assert np.abs(a - b).max() <= 1, path.name


def test_a_training_step_on_cuda_equals_the_cpus():
    torch.manual_seed(0)
    model = SRN(SRNConfig("lstm", 8)).train()
    slim_init(model, 0)
    blur, sharp = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    grads = {}
    for device in ("cpu", "cuda"):
        net = copy.deepcopy(model).to(device)
        with ieee_fp32():
            srn_loss(net(blur.to(device)), sharp.to(device)).backward()
        grads[device] = {n: p.grad.detach().cpu() for n, p in net.named_parameters()}
    for name, g in grads["cpu"].items():
        err = float((grads["cuda"][name] - g).abs().max())
        assert within(err, float(g.abs().max()), TOLERANCES["gradient"]), (name, err)


def _config(device, steps=6):
    return TrainConfig(variant="color", width=4, steps=steps, batch=2, crop=64, seed=1,
                       save_every=2, log_every=1, data="synthetic", device=device)


def _saved(out):
    return torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)


def _assert_loaded(trainer, state):
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value.cpu(), state["model"][name]), name
    opt = trainer.opt.state_dict()
    assert opt["tf_beta_powers"] == state["optimizer"]["tf_beta_powers"]
    for k, slots in opt["state"].items():
        for key, t in slots.items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t.cpu(), state["optimizer"]["state"][k][key])


def test_a_run_resumes_from_cpu_on_cuda_and_back(tmp_path):
    out = tmp_path / "run"
    cfg = _config("cpu")
    data = dataset_for(None, cfg, 3)
    assert Trainer(cfg, data, out).run(stop_after=2) == 2
    on_gpu = Trainer(_config("cuda"), data, out, resume=True)
    assert on_gpu.device.type == "cuda"
    _assert_loaded(on_gpu, _saved(out))
    assert on_gpu.run(stop_after=4) == 4
    back = Trainer(cfg, data, out, resume=True)
    _assert_loaded(back, _saved(out))
    assert back.run() == 6
    whole = Trainer(cfg, data, tmp_path / "whole")
    whole.run()
    a, b = whole.model.state_dict(), back.model.state_dict()
    # two steps on another device's kernels: Adam moves a weight by at most ~lr a step
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 2 * 6 * 1e-4


def test_a_tf_run_resumes_on_cuda(tmp_path):
    """--resume-tf onto the GPU: the TF checkpoint's weights and Adam slots land on the
    device bit for bit, and the run continues there."""
    from _srn_ckpt import srn_tensors, write_srn_checkpoint
    from srn_port.core.convert import read_adam_state

    model_cfg = SRNConfig("color", 4)
    tensors = srn_tensors(model_cfg)
    tensors["Variable"] = np.int32(4)
    prefix = write_srn_checkpoint(tmp_path / "tf", model_cfg, step=4, tensors=tensors)
    cfg = _config("cuda")
    trainer = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "run", resume_tf=prefix)
    adam = read_adam_state(prefix)
    for name, p in trainer.model.named_parameters():
        assert p.device.type == "cuda"
        slots = trainer.opt.state[p]
        assert torch.equal(slots["m"].cpu(), torch.from_numpy(adam["m"][name]))
        assert torch.equal(slots["v"].cpu(), torch.from_numpy(adam["v"][name]))
    assert trainer.step == 4 and trainer.run() == 6


def test_the_command_trains_on_cuda_and_logs_the_data_wait(tmp_path):
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "run"), "--synthetic", "--width",
                                   "4", "--steps", "3", "--batch", "4", "--crop", "64",
                                   "--device", "cuda", "--workers", "1", "--log-every", "1"])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()
               if "loss" in line]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(0 <= r["data_wait"] < 1 and r["pairs_per_s"] > 0 for r in records)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_training_on_cuda(tmp_path, precision):
    cfg = TrainConfig(variant="lstm", width=4, steps=3, batch=2, crop=64, log_every=1,
                      data="synthetic", device="cuda", precision=precision)
    trainer = Trainer(cfg, dataset_for(None, cfg, 1), tmp_path / precision)
    assert trainer.run() == 3
    assert (trainer.scaler is not None) == (precision == "fp16")


AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}
KEY = {"fp16": "reduced_fp16", "bf16": "reduced_bf16"}


def _check_reduced(outs, ref, precision):
    assert [o.dtype for o in outs] == [AMP[precision]] * 3
    for a, b in zip(outs, ref):
        err = float((a.float() - b).abs().max())
        assert 0 < err and within(err, float(b.abs().max()), TOLERANCES[KEY[precision]])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_on_every_forward_path(precision):
    model = load_model(TRAINED, device=CUDA)
    x = torch.rand(2, 3, 64, 96, device=CUDA)
    with torch.inference_mode(), ieee_fp32():
        ref = model(x)
    with torch.inference_mode(), torch.autocast("cuda", dtype=AMP[precision]):
        eager = model(x)
    _check_reduced(eager, ref, precision)
    if precision == "fp16":  # compiling takes a minute; gpu_check.sh has 6 in all
        compiled = copy.deepcopy(model)
        compiled.compile()
        with torch.inference_mode(), torch.autocast("cuda", dtype=AMP[precision]):
            _check_reduced(compiled(x), ref, precision)
    with torch.no_grad():
        program = torch.export.export(Autocast(Outputs(model), "cuda", AMP[precision]).eval(),
                                      (x,), dynamic_shapes=_dynamic_shapes())
        _check_reduced(program.module()(x), ref, precision)


def test_ddp_with_nccl_in_one_process(tmp_path, monkeypatch):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from srn_port.api import train as train_mod

    wrapped = []

    class Recording(DistributedDataParallel):
        def __init__(self, module, **kw):
            wrapped.append(kw)
            super().__init__(module, **kw)

    monkeypatch.setattr("torch.nn.parallel.DistributedDataParallel", Recording)
    cfg = _config("cuda", steps=2)
    plain = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "plain")
    plain.run()
    torch.cuda.set_device(CUDA)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        ddp = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "ddp")
        assert (ddp.rank, ddp.world) == (0, 1)
        ddp.run()
    finally:
        dist.destroy_process_group()
    assert wrapped == [{"device_ids": [0]}]
    losses = {name: [json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").open()
                     if "loss" in line] for name in ("plain", "ddp")}
    for a, b in zip(losses["plain"], losses["ddp"]):
        assert within(abs(a - b), abs(a), TOLERANCES["data_parallel"])
    assert train_mod is not None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_torchrun_processes_on_two_gpus(tmp_path):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "srn_port", "train", str(tmp_path / "run"), "--synthetic", "--width", "4",
           "--steps", "2", "--batch", "4", "--crop", "64", "--device", "cuda"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("trained steps 0..2") == 1

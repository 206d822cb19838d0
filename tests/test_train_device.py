"""srn-port train --device/--precision, tested on the CPU: which device and process-group
backend a process takes (CUDA availability faked where the logic depends on it), a state
that resumes on another device (saved as CPU tensors; loaded onto the model's device,
optimizer slots included; bit for bit on the CPU), bf16/fp16 autocast training steps, and
the log's throughput and data-wait figures. The same on a real GPU: tests/test_cuda.py."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner

from srn_port.api import distributed as dist_mod
from srn_port.api import train as train_mod
from srn_port.api.train import (STATE_FILE, TrainConfig, Trainer, TrainError, dataset_for,
                                train_device)
from srn_port.cli import cli
from srn_port.core.errors import SrnPortError
from srn_port.core.tolerances import TOLERANCES, within

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**kw):
    base = dict(variant="color", width=2, steps=4, batch=2, crop=32, seed=3, save_every=2,
                log_every=1, data="synthetic")
    base.update(kw)
    return TrainConfig(**base)


def trainer(out, **kw):
    cfg = config(**{k: v for k, v in kw.items() if k != "resume"})
    return Trainer(cfg, dataset_for(None, cfg, 3), out, resume=kw.get("resume", False))


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine that claims two CUDA devices (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_device_choice_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_device("auto") == torch.device("cpu")
    assert train_device("cpu") == torch.device("cpu")
    with pytest.raises(TrainError, match="CUDA is not available"):
        train_device("cuda")
    with pytest.raises(TrainError, match="Unknown device 'gpu'"):
        train_device("gpu")


def test_device_choice_with_gpus_takes_the_local_ranks_gpu(fake_gpus, monkeypatch):
    assert train_device("auto") == torch.device("cuda", 0)
    assert train_device("cpu") == torch.device("cpu")  # asked for: the CPU
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train_device("cuda") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(SrnPortError, match="LOCAL_RANK 2 has no GPU of its own"):
        train_device("cuda")
    # auto: more processes on this machine than GPUs -> all of them on the CPU (gloo)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert train_device("auto") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train_device("auto") == torch.device("cuda", 1)


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("cuda", "nccl")])
def test_the_process_group_backend_follows_the_device(fake_gpus, monkeypatch, device, backend):
    """On a machine with GPUs a CPU run joins gloo (NCCL cannot reduce CPU tensors); a CUDA
    run joins NCCL after selecting its LOCAL_RANK's GPU."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b, **kw: calls.append(("init", b)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("gpu", str(d))))
    assert dist_mod.distributed(device) == (1, 2)
    expected = [("init", backend)] if device == "cpu" else [("gpu", "cuda:1"), ("init", backend)]
    assert calls == expected


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


@pytest.mark.filterwarnings("ignore:for .*meta parameter in the current model")
def test_a_state_resumes_bit_for_bit_and_onto_another_device(tmp_path, monkeypatch):
    first = trainer(tmp_path / "run")
    assert first.run(stop_after=2) == 2
    state = torch.load(tmp_path / "run" / STATE_FILE, map_location="cpu", weights_only=True)
    saved = dict(_tensors({"model": state["model"], "optimizer": state["optimizer"]}))
    assert saved and all(t.device.type == "cpu" for t in saved.values())
    # on the CPU: model, Adam slots and beta powers as saved, bit for bit
    again = trainer(tmp_path / "run", resume=True)
    loaded = dict(_tensors({"model": again.model.state_dict(),
                            "optimizer": again.opt.state_dict()}))
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert again.opt.state_dict()["tf_beta_powers"] == state["optimizer"]["tf_beta_powers"]
    again._lock.release()
    # onto another device (the meta device stands in for a GPU): the weights and every
    # optimizer slot follow the model there, so the next step finds them on its device
    monkeypatch.setattr(train_mod, "process_device", lambda kind: torch.device("meta"))
    moved = trainer(tmp_path / "run", resume=True)
    assert {p.device.type for p in moved.model.parameters()} == {"meta"}
    slots = [t for s in moved.opt.state.values() for t in s.values()
             if isinstance(t, torch.Tensor)]
    assert slots and {t.device.type for t in slots} == {"meta"}
    for name, p in moved.model.named_parameters():
        assert p.shape == state["model"][name].shape and p.dtype == state["model"][name].dtype
    moved._lock.release()


def _losses(out):
    return [json.loads(line) for line in (out / "log.jsonl").open() if "loss" in line]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_steps_on_the_cpu(tmp_path, precision):
    """The first step's loss (same weights, same batch) computed under autocast is the fp32
    one up to the format's round-off, and not equal to it (autocast was applied); fp16
    keeps its gradient scaler in the state and resumes it."""
    exact = trainer(tmp_path / "fp32", steps=2)
    exact.run()
    reduced = trainer(tmp_path / precision, steps=2, precision=precision)
    reduced.run()
    a, b = _losses(tmp_path / "fp32")[0]["loss"], _losses(tmp_path / precision)[0]["loss"]
    key = "reduced_bf16" if precision == "bf16" else "reduced_fp16"
    assert a != b and within(abs(a - b), abs(a), TOLERANCES[key]), (a, b)
    state = torch.load(tmp_path / precision / STATE_FILE, map_location="cpu",
                       weights_only=True)
    assert state["config"]["precision"] == precision
    if precision == "fp16":
        scale = state["grad_scaler"]["scale"]
        assert scale > 1
        resumed = trainer(tmp_path / precision, steps=2, precision=precision, resume=True)
        assert resumed.scaler.get_scale() == scale
        resumed._lock.release()
    else:
        assert "grad_scaler" not in state


def test_the_log_reports_pairs_per_second_and_the_data_wait(tmp_path):
    run = trainer(tmp_path / "run", steps=3, workers=1)
    run.run()
    records = _losses(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert r["pairs_per_s"] > 0 and 0 < r["data_wait"] < 1


def test_the_command_refuses_cuda_without_it_and_trains_in_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = ["train", "--synthetic", "--width", "2", "--steps", "1", "--batch", "2",
            "--crop", "32", "--threads", "1"]
    res = CliRunner().invoke(cli, base[:1] + [str(tmp_path / "a")] + base[1:]
                             + ["--device", "cuda"])
    assert res.exit_code != 0 and "CUDA is not available" in res.output
    assert not (tmp_path / "a" / STATE_FILE).exists()
    res = CliRunner().invoke(cli, base[:1] + [str(tmp_path / "b")] + base[1:]
                             + ["--device", "auto", "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    state = torch.load(tmp_path / "b" / STATE_FILE, map_location="cpu", weights_only=True)
    assert state["config"]["device"] == "auto" and state["config"]["precision"] == "bf16"


def test_tf32_is_off_in_the_forward_and_the_backward(tmp_path, monkeypatch):
    """cuDNN's fp32 convolutions default to TF32 (the flag is global, also on a CPU build):
    a fp32 run switches it off for the forward and for the backward, where the gradients'
    convolutions run."""
    seen = []
    run = trainer(tmp_path / "run", steps=1)
    flag = lambda: torch.backends.cudnn.conv.fp32_precision  # noqa: E731
    run.model.register_forward_pre_hook(lambda m, a: seen.append(("forward", flag())))
    original = run._loss

    def loss_spy(net, blur, sharp):
        loss = original(net, blur, sharp)
        loss.register_hook(lambda g: seen.append(("backward", flag())))
        return loss

    monkeypatch.setattr(run, "_loss", loss_spy)
    before = flag()
    run.run()
    assert seen == [("forward", "ieee"), ("backward", "ieee")]
    assert flag() == before  # restored after the run

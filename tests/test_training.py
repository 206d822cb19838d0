"""srn-port train without TF: data from folders and datalists, checked before training;
exact resuming (also after SIGTERM); resuming a TF run's Adam state; bad input."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _srn_ckpt import srn_tensors, write_srn_checkpoint
from srn_port.api.train import PairCrops, TrainConfig, Trainer, TrainError, dataset_for
from srn_port.api.weights import load_model
from srn_port.cli import cli
from srn_port.core.network import SRNConfig
from srn_port.data.images import encode_image
from srn_port.data.pairs import (GRAY_WEIGHTS, DatasetError, Pair, find_pairs, load_pair,
                                 read_datalist)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def picture(h, w, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (h, w, 3))).astype(np.uint8)


def gopro(root, scenes=2, per_scene=3, size=(40, 48)):
    for s in range(scenes):
        for k in range(per_scene):
            for kind in ("blur", "sharp"):
                folder = root / f"GOPR{s:04d}" / kind
                folder.mkdir(parents=True, exist_ok=True)
                img = picture(*size, seed=100 * s + k + (0 if kind == "sharp" else 7))
                (folder / f"{k:06d}.png").write_bytes(encode_image(img, ".png"))
    return root


def config(**kw):
    base = dict(variant="color", width=2, steps=6, batch=2, crop=32, seed=3, save_every=2,
                log_every=1, data="test")
    base.update(kw)
    return TrainConfig(**base)


def weights_of(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_gopro_folders_and_datalists_give_the_same_pairs(tmp_path):
    root = gopro(tmp_path / "train")
    pairs = find_pairs(root)
    assert len(pairs) == 6 and all(p.blur.parent.name == "blur" for p in pairs)
    lines = [f"{p.sharp.relative_to(root)} {p.blur.relative_to(root)}" for p in pairs]
    (tmp_path / "list.txt").write_text("# sharp blur\n" + "\n".join(lines) + "\n")
    assert read_datalist(tmp_path / "list.txt", root=root) == pairs
    assert find_pairs(root / "GOPR0000") == [p for p in pairs if "GOPR0000" in str(p.blur)]


def test_gray_models_train_on_tfs_grayscale_of_the_pair(tmp_path):
    root = gopro(tmp_path / "train", scenes=1, per_scene=1)
    pair = find_pairs(root)[0]
    blur, sharp = load_pair(pair, channels=1)
    rgb, _ = load_pair(pair, channels=3)
    assert blur.shape == (40, 48, 1)
    assert np.array_equal(blur[..., 0], np.tensordot(rgb, GRAY_WEIGHTS, axes=([2], [0])))
    item = PairCrops([pair], 1, 32, seed=0)[0]
    assert item[0].shape == (1, 32, 32) and item[1].shape == (1, 32, 32)
    again = PairCrops([pair], 1, 32, seed=0)[0]
    assert torch.equal(item[0], again[0])  # a sample is a pure function of its position


@pytest.mark.parametrize("problem", ["empty", "unpaired", "sizes", "small", "unreadable",
                                     "datalist"])
def test_bad_datasets_are_refused_before_training(tmp_path, problem):
    root = tmp_path / "train"
    args = ["--data", root]
    if problem == "empty":
        root.mkdir()
        needle = "holds no image pairs"
    else:
        gopro(root, scenes=1, per_scene=2)
        scene = root / "GOPR0000"
        if problem == "unpaired":
            (scene / "sharp" / "000001.png").unlink()
            needle = "no partner"
        elif problem == "sizes":
            (scene / "sharp" / "000001.png").write_bytes(encode_image(picture(40, 64, 1), ".png"))
            needle = "is 48x40 but"
        elif problem == "small":
            needle = "smaller than the 64x64 crop"
        elif problem == "unreadable":
            (scene / "blur" / "000001.png").write_bytes(b"not an image")
            needle = "unreadable"
        else:
            (tmp_path / "list.txt").write_text("GOPR0000/sharp/000000.png\n")
            args = ["--datalist", tmp_path / "list.txt", "--data", root]
            needle = "not 'SHARP_PATH BLUR_PATH'"
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [str(a) for a in ["train", out, *args, "--steps", "2",
                                   "--width", "2", "--crop", "64" if problem == "small" else "32",
                                   "--batch", "2"]])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Error:" in text and needle in text, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    pairs = find_pairs(gopro(tmp_path / "train"))
    cfg = config()
    whole = Trainer(cfg, dataset_for(pairs, cfg, 3), tmp_path / "whole")
    assert whole.run() == 6
    # stopped by SIGTERM after step 3, then resumed by a new process-like Trainer
    part = Trainer(cfg, dataset_for(pairs, cfg, 3), tmp_path / "part")
    def kill_at_3(step, total, loss, rate):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
    part.progress = kill_at_3
    assert part.run() == 3 and part.interrupted
    resumed = Trainer(cfg, dataset_for(pairs, cfg, 3), tmp_path / "part", resume=True)
    assert resumed.step == 3 and resumed.run() == 6
    a, b = weights_of(whole), weights_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.opt.beta1_power == resumed.opt.beta1_power
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "log.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5, 6]
    model = load_model(tmp_path / "part" / "model.safetensors", channels_last=False)
    assert all(torch.equal(model.state_dict()[k], b[k]) for k in b)


def test_resuming_with_other_settings_or_nothing_to_resume_is_an_error(tmp_path):
    cfg = config(steps=2)
    ds = dataset_for(None, cfg, 3)
    with pytest.raises(TrainError, match="no training state to resume"):
        Trainer(cfg, ds, tmp_path / "none", resume=True)
    Trainer(cfg, ds, tmp_path / "run").run(stop_after=1)
    with pytest.raises(TrainError, match="other settings.*steps: 2 -> 4"):
        Trainer(config(steps=4), ds, tmp_path / "run", resume=True)
    with pytest.raises(TrainError, match="already holds the outputs of another run"):
        Trainer(cfg, ds, tmp_path / "run")


def test_resume_tf_continues_the_schedule_and_the_optimizer(tmp_path):
    model_cfg = SRNConfig("color", 2)
    tensors = srn_tensors(model_cfg)
    tensors["Variable"] = np.int32(4)  # the TF run's global step
    prefix = write_srn_checkpoint(tmp_path / "tf", model_cfg, step=4, tensors=tensors)
    cfg = config(steps=6)
    trainer = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "run", resume_tf=prefix)
    assert trainer.step == 4
    assert trainer.run() == 6
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").open()]
    assert steps == [5, 6]
    no_slots = write_srn_checkpoint(tmp_path / "w", model_cfg, step=4,
                                    tensors=srn_tensors(model_cfg, slots=()))
    res = CliRunner().invoke(cli, [str(a) for a in ["train", tmp_path / "run2", "--synthetic",
                                   "--width", "2", "--steps", "6", "--crop", "32",
                                   "--resume-tf", no_slots]])
    assert res.exit_code == 1 and "no Adam state to resume from" in " ".join(res.output.split())


def test_the_command_trains_and_its_weights_deblur(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [str(a) for a in ["train", out, "--synthetic", "--width", "2",
                                   "--steps", "3", "--batch", "2", "--crop", "32",
                                   "--log-every", "1", "--val-every", "3", "--threads", "1"]])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert any("val_psnr" in r for r in records)
    photo = tmp_path / "a.png"
    photo.write_bytes(encode_image(picture(32, 32, 0), ".png"))
    res = CliRunner().invoke(cli, [str(a) for a in ["deblur", out / "model.safetensors", photo,
                                                    "-o", tmp_path / "o"]])
    assert res.exit_code == 0, res.output


def test_a_diverged_step_keeps_the_last_good_state(tmp_path, monkeypatch):
    cfg = config(steps=4, save_every=1)
    trainer = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "run")
    trainer.run(stop_after=2)
    before = (tmp_path / "run" / "train_state.pt").read_bytes()
    import srn_port.api.train as train_module
    monkeypatch.setattr(train_module, "srn_loss", lambda outputs, sharp: outputs[0].sum() * np.nan)
    again = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "run", resume=True)
    with pytest.raises(TrainError, match="diverged"):
        again.run()
    assert (tmp_path / "run" / "train_state.pt").read_bytes() == before
    assert Pair  # the public dataclass of training pairs


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the train extra (tensorboard) is not installed")
    cfg = config(steps=2)
    Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "run", tensorboard=True).run()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_two_torchrun_processes_follow_one_process(tmp_path):
    """DDP with 2 gloo processes (torchrun) against 1 process, the same global batch."""
    import subprocess
    import sys

    from srn_port.core.tolerances import TOLERANCES, within

    args = ["train", None, "--synthetic", "--width", "2", "--steps", "3", "--batch", "4",
            "--crop", "32", "--threads", "1", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in (("one", [sys.executable, "-m", "srn_port"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2", "-m", "srn_port"])):
        out = tmp_path / name
        cmd = launcher + [str(out) if a is None else a for a in args]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count("trained steps 0..3") == 1  # rank 0 reports, once
        runs[name] = [json.loads(line)["loss"] for line in (out / "log.jsonl").open()]
    assert len(runs["one"]) == len(runs["two"]) == 3
    for a, b in zip(runs["one"], runs["two"]):
        assert within(abs(a - b), abs(a), TOLERANCES["data_parallel"]), runs
    one = load_model(tmp_path / "one" / "model.safetensors", channels_last=False).state_dict()
    two = load_model(tmp_path / "two" / "model.safetensors", channels_last=False).state_dict()
    # Adam moves a weight by at most ~lr a step: a sign flip of a near-zero gradient's
    # round-off bounds the weights' difference by 2 * sum(lr)
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= 2 * 3 * 1e-4


def test_a_training_state_exports_to_tf_with_its_adam_state(tmp_path):
    from srn_port.core.checkpoint import read_checkpoint
    from srn_port.core.convert import read_adam_state

    cfg = config(steps=3)
    trainer = Trainer(cfg, dataset_for(None, cfg, 3), tmp_path / "run")
    trainer.run()
    res = CliRunner().invoke(cli, ["export-tf", str(tmp_path / "run" / "train_state.pt"),
                                   str(tmp_path / "tf")])
    assert res.exit_code == 0, res.output
    back = read_adam_state(tmp_path / "tf")
    assert back["step"] == 3
    for name, p in trainer.model.named_parameters():
        assert np.array_equal(back["m"][name], trainer.opt.state[p]["m"].numpy()), name
        assert np.array_equal(back["v"][name], trainer.opt.state[p]["v"].numpy()), name
    assert np.float32(back["beta1_power"]) == trainer.opt.beta1_power
    tensors = read_checkpoint(tmp_path / "tf")
    assert int(tensors["Variable"]) == 3
    # and it resumes in srn-port as a TF run would
    again = Trainer(config(steps=5), dataset_for(None, cfg, 3), tmp_path / "run2",
                    resume_tf=tmp_path / "tf")
    assert again.step == 3

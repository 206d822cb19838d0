#!/usr/bin/env python
"""Liveness of every checkpoint of a training run (tools/train_tf.py --keep 0): dead variables,
how open dec1_4's ReLU is, the coarse stages' activations, and what zeroing dec2_4 does.

A layer whose ReLU closes for good gets no gradient again (issue 14: the first trained
example's dec1_4); run this on the checkpoints a run keeps to see when and whether that
happens. Per checkpoint, on the run's own validation pairs (held_out_set(8, 128, seed 1)):

* ``dead``: variables whose gradient of the original loss is exactly 0
  (:func:`srn_port.nn.liveness.dead_variables`), and the first few names;
* ``dec1_4_open``: the fraction of dec1_4's outputs (after its ReLU) above 0, level 2;
* ``coarse_max_abs``: the largest |activation| of enc2/enc3/dec3/dec2, per level;
* ``psnr`` / ``dec2_4_zeroed``: mean 8-bit PSNR of the output, and with dec2_4 set to 0.

One JSON line per checkpoint, appended to RUN/liveness.jsonl (checkpoints already there are
skipped) and printed.

    python tools/check_liveness.py /tmp/train_runs/color
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch

from srn_port.api.weights import load_model
from srn_port.core.fileio import append_line
from srn_port.data import synthetic
from srn_port.nn.liveness import dead_variables
from srn_port.nn.model import capture_activations

COARSE = ("enc2", "enc3", "dec3", "dec2")
RESULTS = "liveness.jsonl"


def _batch(images):
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255)


def _psnr(model, blur, sharp) -> float:
    with torch.no_grad():
        out = model(blur)[-1]
    to8 = [synthetic.to_uint8(o.permute(1, 2, 0).numpy()) for o in out]
    ref = [synthetic.to_uint8(s.permute(1, 2, 0).numpy()) for s in sharp]
    return round(float(np.mean([synthetic.psnr(a, b) for a, b in zip(to8, ref)])), 4)


def check(prefix: Path, blur, sharp) -> dict:
    model = load_model(prefix)
    dead = dead_variables(model, blur, sharp)
    with torch.no_grad():
        acts = capture_activations(model, blur[:2])
    coarse = {}
    for (level, name), a in acts.items():
        if name.startswith(COARSE):
            coarse[level] = round(max(coarse.get(level, 0.0), float(a.abs().max())), 4)
    psnr = _psnr(model, blur, sharp)
    model.load_state_dict({k: (torch.zeros_like(v) if k.startswith("dec2_4.") else v)
                           for k, v in model.state_dict().items()})
    return {"dead": len(dead), "dead_names": dead[:6],
            "dec1_4_open": round(float((acts[(2, "dec1_4")] > 0).float().mean()), 4),
            "coarse_max_abs": coarse, "psnr": psnr,
            "dec2_4_zeroed": _psnr(model, blur, sharp)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
def main(runs):
    """Check every deblur.model-STEP checkpoint in each RUN folder."""
    torch.set_num_threads(1)
    pairs = synthetic.held_out_set(8, 128, seed=1)
    blur, sharp = _batch([b for b, _ in pairs]), _batch([s for _, s in pairs])
    for run in runs:
        results = run / RESULTS
        done = set()
        if results.exists():
            done = {json.loads(line)["step"] for line in results.read_text().splitlines()}
        steps = sorted(int(p.name.split("-")[-1].split(".")[0])
                       for p in run.glob("deblur.model-*.index"))
        for step in steps:
            if step in done:
                continue
            row = {"step": step, **check(run / f"deblur.model-{step}", blur, sharp)}
            click.echo(f"{run}: {json.dumps(row)}")
            append_line(results, json.dumps(row))


if __name__ == "__main__":
    main()

"""``srn-port train``: train (or fine-tune, or resume) an SRN model as the original trains."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .weights_arg import WeightsPath


@click.command(short_help="Train or fine-tune SRN as the original trains (or resume a TF run).")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="Training pairs: a folder in the GoPro layout (<scene>/blur/NAME beside "
                   "<scene>/sharp/NAME); with --datalist, the folder its paths are relative to.")
@click.option("--datalist", type=click.Path(path_type=Path),
              help="The original's datalist file (one 'SHARP BLUR' pair a line, relative to "
                   "--data, else to the list's own folder).")
@click.option("--synthetic", is_flag=True, help="Train on synthetic camera-shake pairs (demo).")
@click.option("--variant", type=click.Choice(["color", "gray", "lstm"]), default="color")
@click.option("--width", type=int, default=32, help="Channels of the first stage (released: 32).")
@click.option("--steps", type=int, required=True,
              help="Steps of the whole run: the learning rate decays to 0 over them.")
@click.option("--batch", type=int, default=16)
@click.option("--crop", type=int, default=256, help="Random crop size (a multiple of 16).")
@click.option("--lr", type=float, default=1e-4, help="Initial learning rate (the original's).")
@click.option("--seed", type=int, default=0, help="Seeds the initialisation and the data order.")
@click.option("--clip-lstm", is_flag=True,
              help="Clip the ConvLSTM's gradients to global norm 3 (defined, but not used, "
                   "by the original).")
@click.option("--init", "init", type=WeightsPath(),
              help="Start from these weights (converted file, TF checkpoint, Hub folder or "
                   "hf://ORG/NAME) instead of slim's initializers.")
@click.option("--resume", is_flag=True, help="Continue the run saved in OUT.")
@click.option("--resume-tf", type=click.Path(path_type=Path),
              help="Continue a TF training run from its checkpoint (weights, Adam slots, beta "
                   "powers, global step).")
@click.option("--save-every", type=int, default=500)
@click.option("--log-every", type=int, default=10)
@click.option("--val-every", type=int, default=0, help="Validation PSNR every N steps (0: off).")
@click.option("--workers", type=int, default=0, help="DataLoader worker processes for decoding.")
@click.option("--threads", type=int, default=None, help="torch threads (default: torch's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: cuda when available, else cpu. Under torchrun each process takes "
                   "the GPU of its LOCAL_RANK (NCCL); on the CPU the processes use gloo.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
              help="fp32: IEEE float32, TF32 off (gradient-equal to TF). bf16/fp16: autocast "
                   "(fp16 with a gradient scaler), an opt-in whose effect on the loss curve "
                   "is not measured yet.")
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard event files.")
def train(out, data, datalist, synthetic, variant, width, steps, batch, crop, lr, seed,
          clip_lstm, init, resume, resume_tf, save_every, log_every, val_every, workers,
          threads, device, precision, tensorboard):
    """Train an SRN model into OUT (train_state.pt, model.safetensors, log.jsonl).

    The pairs come from --data (GoPro layout), --datalist, or --synthetic. Every pair is
    checked before training starts.
    model.safetensors is an srn-port weights file (srn-port deblur, diff, export-tf).
    """
    import torch
    from tqdm import tqdm

    from ..api.distributed import finish_distributed
    from ..api.train import TrainConfig, Trainer, dataset_for, held_out
    from ..data.pairs import find_pairs, left_out_notes, left_out_summary, read_datalist

    if synthetic and data is not None:
        raise click.UsageError("--synthetic makes its own data; give no --data with it.")
    if not synthetic and data is None and datalist is None:
        raise click.UsageError("Give --data FOLDER (GoPro layout), --datalist FILE or "
                               "--synthetic.")
    if threads:
        torch.set_num_threads(threads)
    left_out: dict = {}
    if synthetic:
        pairs, what = None, "synthetic"
    elif datalist is not None:
        pairs, what = read_datalist(datalist, root=data), f"datalist {datalist}"
    else:
        pairs, what = find_pairs(data, left_out), f"folder {data}"
    config = TrainConfig(variant=variant, width=width, steps=steps, batch=batch, crop=crop,
                         lr=lr, seed=seed, clip_lstm=clip_lstm, save_every=save_every,
                         log_every=log_every, val_every=val_every, workers=workers, data=what,
                         device=device, precision=precision)
    channels = 3 if variant == "color" else 1
    dataset = dataset_for(pairs, config, channels)
    val = held_out(pairs, channels) if val_every else ()
    import os

    quiet = int(os.environ.get("RANK", "0")) != 0  # under torchrun, rank 0 reports
    if not quiet:
        for note in left_out_notes(data, left_out):
            click.echo(note, err=True)
    bar = tqdm(total=steps, desc="train", unit="step", disable=True if quiet else None,
               file=sys.stderr)

    def progress(step, total, loss, rate):
        bar.n = step
        bar.set_postfix_str(f"loss {loss:.5f}, {rate:.1f} pairs/s")
        bar.refresh()

    try:
        trainer = Trainer(config, dataset, out, init=init, resume=resume, resume_tf=resume_tf,
                          val=val, tensorboard=tensorboard, progress=progress,
                          inputs=[data, datalist])
        bar.n = trainer.step
        start = trainer.step
        reached = trainer.run()
    finally:
        bar.close()
        finish_distributed()
    if trainer.rank != 0:
        return
    if trainer.interrupted:
        click.echo(f"interrupted at step {reached}; state saved in {out}. Continue with the "
                   f"same command and --resume.")
        sys.exit(130)
    dropped = left_out_summary(left_out)
    click.echo(f"trained steps {start}..{reached} of {steps} ({what}"
               f"{'; ' + dropped + ', see the notes above' if dropped else ''}) -> "
               f"{out}/model.safetensors")


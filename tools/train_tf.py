#!/usr/bin/env python
"""Train the original SRN-Deblur TF graph on synthetic motion blur; export a checkpoint.

The graph is :func:`srn_port.reference.graph.build_generator` (the original g_net, exact
variable names) at a reduced width; the recipe is the original's (models/model.py):

* loss: sum over the 3 levels of the MSE against the sharp image resized to that level
  with the same legacy bilinear resize (``tf.compat.v1.image.resize_images(method=0)``);
* ``tf.compat.v1.train.AdamOptimizer(lr)`` (beta1 0.9, beta2 0.999), global step an
  unnamed int32 ``tf.Variable`` (saved as ``Variable``), polynomial decay of the learning
  rate (power 0.3) to 0 at the last step;
* no gradient clipping: the original defines clipping of the LSTM variables' gradients to
  global norm 3 but its train() never enables it (``--clip-lstm`` opts in, for experiments);
* ``gray``/``lstm`` train on ``tf.image.rgb_to_grayscale`` of the RGB pairs;
* checkpoints written by ``tf.compat.v1.train.Saver`` over all variables as
  ``deblur.model-<step>`` (weights, /Adam, /Adam_1, beta1_power, beta2_power, Variable).

Two departures for a short CPU run, both about the start of training only (the graph,
the loss, the optimizer and the saved variables are the original's):

* a linear learning-rate warm-up over the first ``--warmup`` steps, multiplied into the
  polynomial decay, so a peak rate 10x the original's 1e-4 trains stably (6e-3 diverged);
* ``--init identity`` (default): training starts from a network that (nearly) copies its blurry
  input, instead of from the original's Xavier weights. The original g_net has no global
  skip, so from Xavier it spends its first thousands of steps learning to copy the input
  (measured here: 1250 steps of 96x96x8 to get back to the blurry input's PSNR). Starting
  values (:func:`start_value`): the second conv of every ResnetBlock is zero (each block is
  the identity, as zero-initialised residual branches in Goyal et al. 2017 / Fixup), the
  centre taps of ``enc1_1`` and ``dec1_0`` pass the blurry channels through the first
  feature maps, and ``dec1_4`` starts at a tenth of its Xavier value, so the coarser stages
  start turned down, but not off. (Not zero: ``dec1_4`` is followed by a ReLU, whose gradient
  at 0 is 0, so a zero ``dec1_4`` with a zero bias never receives a gradient and stays zero,
  and with it every variable behind it: enc2_*, enc3_*, dec3_*, dec2_*. The first trained
  example was made that way; issue 14.) Everything else keeps TF's Xavier/zero init, and
  every weight is then trained.
  ``--init zero-res`` does only the first part; ``--init xavier`` is the original.

Data (:mod:`srn_port.data.synthetic`): batch ``k`` is a pure function of (seed, k), so a
restarted run resumes from the newest checkpoint in ``--out`` and sees the same data.

    python tools/train_tf.py train --out /tmp/train_runs/color
    python tools/train_tf.py export /tmp/train_runs/color examples/trained/color
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import click
import numpy as np

from srn_port.data import synthetic
from srn_port.core.network import SIZE_MULTIPLE, VARIANTS, SRNConfig
from srn_port.reference.graph import MODEL_NAME, build_generator, import_tf

#: Original recipe constants (models/model.py of SRN-Deblur).
ADAM_BETA1, ADAM_BETA2 = 0.9, 0.999
LR_DECAY_POWER = 0.3
LSTM_CLIP_NORM = 3.0
#: Run settings that must not change when a run is resumed (they define the model or data).
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
_RESUME_KEYS = ("variant", "width", "crop", "batch", "steps", "lr", "warmup", "seed", "init",
                "min_length", "max_length", "max_noise", "photos", "val_seed", "val_n",
                "val_size", "clip_lstm", "coarse_scale")


INITS = ("xavier", "zero-res", "identity")
#: Centre tap of a 5x5 kernel.
_CENTRE = 2
#: ``--init identity``: ``dec1_4`` (the coarse stages' way into the finest one, a transposed
#: conv followed by a ReLU, added to ``enc1_4``) starts at this multiple of its Xavier value in
#: the feature channels the output does not read yet (c and up), and at 0 in the c channels
#: that carry the copied input (0..c-1), so that at step 0 the coarse stages add nothing to
#: the copy: measured, when they did (first at 0.1 x Xavier in every channel), the loss
#: pushed ``dec1_4`` off (fewer and fewer positive pre-activations, then a dead ReLU).
#: Never all 0: TF's ReluGrad passes ``grad * (y > 0)``, so a zero dec1_4 (weights and bias)
#: gets exactly zero gradient at every step, and so does everything coarser behind it.
COARSE_PATH_SCALE = 1.0
#: ...and the copy channels of ``dec1_4`` start with this bias, so their ReLU is open (a
#: gradient reaches their zero weights) while adding only 1e-3 (a quarter of an 8-bit level).
COPY_CHANNEL_BIAS = 1e-3


def start_value(name: str, value: np.ndarray, init: str, config: SRNConfig,
                coarse_scale: float = COARSE_PATH_SCALE) -> Optional[np.ndarray]:
    """The starting value of variable ``name`` for ``init``, given its Xavier/zero value from
    TF's initializer; None to keep that. The graph and the variables are the original's
    either way; only where Adam starts differs."""
    if init == "xavier":
        return None
    if name.endswith("/conv2/weights"):  # residual branch off: each ResnetBlock is the identity
        return np.zeros_like(value)
    if init != "identity":
        return None
    c = config.channels
    if name == "g_net/enc1_1/weights":  # features 0..c-1 copy the blurry input (>= 0, ReLU-safe)
        value = value.copy()
        value[..., :c] = 0
        value[_CENTRE, _CENTRE, np.arange(c), np.arange(c)] = 1
        return value
    if name == "g_net/dec1_0/weights":  # ...and the output reads them back
        value = np.zeros_like(value)
        value[_CENTRE, _CENTRE, np.arange(c), np.arange(c)] = 1
        return value
    if name == "g_net/dec1_4/weights":  # kernel [k, k, out, in]: off the copy, on elsewhere
        value = value * np.float32(coarse_scale)
        value[:, :, :c, :] = 0
        return value
    if name == "g_net/dec1_4/biases":
        value = value.copy()
        value[:c] = COPY_CHANNEL_BIAS
        return value
    return None


@dataclass
class RunConfig:
    variant: str
    width: int
    crop: int
    batch: int
    steps: int
    lr: float
    warmup: int
    seed: int
    min_length: float
    max_length: float
    max_noise: float
    photos: bool
    val_seed: int
    val_n: int
    val_size: int
    init: str = "xavier"
    clip_lstm: bool = False
    coarse_scale: float = COARSE_PATH_SCALE

    @property
    def spec(self) -> synthetic.BlurSpec:
        return synthetic.BlurSpec(self.min_length, self.max_length, self.max_noise,
                                  photo_fraction=0.5 if self.photos else 0.0)


def _to_model_input(tf, rgb, config: SRNConfig):
    """uint8-valued RGB float batch -> the network's [0, 1] input (gray: rgb_to_grayscale)."""
    x = rgb / 255.0
    return tf.image.rgb_to_grayscale(x) if config.channels == 1 else x


def build_graph(tf, run: RunConfig):
    """Placeholders, tower, loss, train op and a validation tower sharing the weights."""
    config = SRNConfig(run.variant, run.width)
    shape = [run.batch, run.crop, run.crop, 3]
    g = {}
    g["global_step"] = tf.Variable(initial_value=0, dtype=tf.int32, trainable=False)  # 'Variable'
    g["blurry"] = tf.compat.v1.placeholder(tf.float32, shape, name="blurry")
    g["sharp"] = tf.compat.v1.placeholder(tf.float32, shape, name="sharp")
    x = _to_model_input(tf, g["blurry"], config)
    gt = _to_model_input(tf, g["sharp"], config)
    outputs = build_generator(x, config)
    level_losses = []
    for out in outputs:
        hi, wi = out.get_shape().as_list()[1:3]
        gt_i = tf.compat.v1.image.resize_images(gt, [hi, wi], method=0)
        level_losses.append(tf.reduce_mean((gt_i - out) ** 2))
    g["loss"] = tf.add_n(level_losses)
    g["level_losses"] = level_losses
    g["output"] = outputs[-1]
    g["target"] = gt
    g["input"] = x

    step_f = tf.cast(g["global_step"], tf.float32)
    decayed = tf.compat.v1.train.polynomial_decay(run.lr, g["global_step"], run.steps,
                                                  end_learning_rate=0.0, power=LR_DECAY_POWER)
    warm = tf.minimum(1.0, (step_f + 1.0) / float(max(run.warmup, 1)))
    g["lr"] = decayed * warm
    opt = tf.compat.v1.train.AdamOptimizer(g["lr"], beta1=ADAM_BETA1, beta2=ADAM_BETA2)
    grads = opt.compute_gradients(g["loss"], var_list=tf.compat.v1.trainable_variables())
    if run.clip_lstm and config.use_lstm:
        lstm = [(gr, v) for gr, v in grads if "LSTM" in v.name]
        rest = [(gr, v) for gr, v in grads if "LSTM" not in v.name]
        clipped, _ = tf.clip_by_global_norm([gr for gr, _ in lstm], LSTM_CLIP_NORM)
        grads = list(zip(clipped, [v for _, v in lstm])) + rest
    g["train_op"] = opt.apply_gradients(grads, global_step=g["global_step"])

    if run.val_n:
        vshape = [run.val_n, run.val_size, run.val_size, 3]
        g["val_blurry"] = tf.compat.v1.placeholder(tf.float32, vshape, name="val_blurry")
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True):
            g["val_output"] = build_generator(_to_model_input(tf, g["val_blurry"], config),
                                              config)[-1]
    return g


def _gray(rgb_uint8: np.ndarray) -> np.ndarray:
    # Only for logging PSNRs of gray models: ITU-R 601 weights as tf.image.rgb_to_grayscale.
    return rgb_uint8.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32) / 255.0


def _psnr_float(out: np.ndarray, ref01: np.ndarray) -> float:
    """PSNR of 8-bit rounded ``out`` (clipped to [0, 1]) against ``ref01`` in [0, 1]."""
    return synthetic.psnr(synthetic.to_uint8(out), synthetic.to_uint8(ref01))


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _check_resume(out: Path, run: RunConfig) -> None:
    run_file = out / RUN_FILE
    if run_file.exists():
        old = json.loads(run_file.read_text())
        diff = [f"{k}: was {old.get(k)}, now {getattr(run, k)}" for k in _RESUME_KEYS
                if old.get(k) != getattr(run, k)]
        if diff:
            raise click.UsageError(
                f"{out} holds a run with other settings ({'; '.join(diff)}). Resume it with the "
                f"same options, or choose another --out.")
    else:
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(asdict(run), indent=2) + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Train the original SRN TF graph on synthetic blur, and export its checkpoint."""


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory: checkpoints, run.json, log.jsonl. Resumes if it has a "
                   "checkpoint.")
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="color", show_default=True)
@click.option("--width", type=int, default=8, show_default=True,
              help="First-stage channels (released: 32). 8 keeps a color checkpoint ~5 MB.")
@click.option("--crop", type=int, default=96, show_default=True,
              help="Training crop size (multiple of 16).")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--steps", type=int, default=5000, show_default=True,
              help="Total steps; the learning rate decays to 0 at the last one.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--warmup", type=int, default=100, show_default=True, help="Linear warm-up steps.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the weights' initialisation and the data stream.")
@click.option("--min-length", type=float, default=synthetic.BlurSpec.min_length, show_default=True,
              help="Shortest camera-shake trajectory, px.")
@click.option("--max-length", type=float, default=synthetic.BlurSpec.max_length, show_default=True,
              help="Longest camera-shake trajectory, px.")
@click.option("--max-noise", type=float, default=synthetic.BlurSpec.max_noise, show_default=True,
              help="Largest Gaussian noise sigma (images in [0, 1]).")
@click.option("--photos/--no-photos", default=True, show_default=True,
              help="Also train on scikit-image's bundled sample photographs (needs scikit-image).")
@click.option("--init", type=click.Choice(INITS), default="identity", show_default=True,
              help="Starting weights: xavier (the original's), zero-res (every ResnetBlock "
                   "starts as the identity) or identity (the whole network starts close to "
                   "copying its blurry input; see the module docstring).")
@click.option("--coarse-scale", type=click.FloatRange(min=0, min_open=True),
              default=COARSE_PATH_SCALE, show_default=True,
              help="--init identity: dec1_4 (the coarse stages' way into the finest) starts at "
                   "this multiple of its Xavier value outside the copy channels (see "
                   "COARSE_PATH_SCALE).")
@click.option("--clip-lstm/--no-clip-lstm", default=False, show_default=True,
              help="Clip the ConvLSTM variables' gradients to global norm 3. The original code "
                   "defines this but its train() never enables it, so off by default.")
@click.option("--val-n", type=int, default=8, show_default=True,
              help="Validation images (0: none).")
@click.option("--val-size", type=int, default=128, show_default=True)
@click.option("--val-seed", type=int, default=1, show_default=True,
              help="Held-out validation set seed (eval_trained.py uses another).")
@click.option("--val-every", type=int, default=500, show_default=True)
@click.option("--save-every", type=int, default=500, show_default=True)
@click.option("--log-every", type=int, default=50, show_default=True)
@click.option("--keep", type=int, default=3, show_default=True,
              help="Checkpoints the Saver keeps (0: every one, so a layer's death can be traced "
                   "back to the step it happened).")
@click.option("--threads", type=int, default=0, show_default=True,
              help="TF threads (0: TF's default).")
@click.option("--stop-after", type=int, default=0,
              help="Stop (with a checkpoint) after this many steps of this invocation; for tests.")
def train(out: Path, variant, width, crop, batch, steps, lr, warmup, seed, min_length,
          max_length, max_noise, photos, val_n, val_size, val_seed, val_every, save_every,
          log_every, keep, threads, stop_after, init, clip_lstm, coarse_scale):
    """Train (or resume) a run in --out."""
    for flag, value in (("--crop", crop), ("--val-size", val_size)):
        if value % SIZE_MULTIPLE:
            raise click.BadParameter(f"must be a multiple of {SIZE_MULTIPLE}, got {value}",
                                     param_hint=flag)
    run = RunConfig(variant, width, crop, batch, steps, lr, warmup, seed, min_length, max_length,
                    max_noise, photos, val_seed, val_n, val_size, init, clip_lstm, coarse_scale)
    _check_resume(out, run)
    photo_list = synthetic.load_photos(synthetic.TRAIN_PHOTOS) if photos else ()

    tf, _ = import_tf()
    from tqdm import tqdm

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        g = build_graph(tf, run)
        saver = tf.compat.v1.train.Saver(max_to_keep=keep or None, save_relative_paths=True)
        cfg = tf.compat.v1.ConfigProto()
        if threads:
            cfg.intra_op_parallelism_threads = threads
            cfg.inter_op_parallelism_threads = threads
        sess = tf.compat.v1.Session(config=cfg)
        latest = tf.train.latest_checkpoint(str(out))
        if latest:
            saver.restore(sess, latest)
        else:
            sess.run(tf.compat.v1.global_variables_initializer())
            for var in tf.compat.v1.trainable_variables():
                value = start_value(var.op.name, sess.run(var), init, SRNConfig(variant, width),
                                    coarse_scale)
                if value is not None:
                    var.load(value, sess)
        start = int(sess.run(g["global_step"]))
        graph.finalize()
    # Saver.save / restore must run with the graph as default (TF2 is eager outside it).
    graph_ctx = graph.as_default()
    graph_ctx.__enter__()

    val = synthetic.held_out_set(val_n, val_size, seed=val_seed, spec=run.spec,
                                 photos=photos) if val_n else []
    val_x = np.stack([b for b, _ in val]).astype(np.float32) if val else None
    if val and SRNConfig(variant, width).channels == 1:
        val_ref = [_gray(s) for _, s in val]
        val_in = [_gray(b) for b, _ in val]
    else:
        val_ref = [s.astype(np.float32) / 255 for _, s in val]
        val_in = [b.astype(np.float32) / 255 for b, _ in val]
    val_blurry_psnr = (float(np.mean([_psnr_float(i, r) for i, r in zip(val_in, val_ref)]))
                       if val else None)

    def validate(step):
        outs = sess.run(g["val_output"], {g["val_blurry"]: val_x})
        outs = outs[..., 0] if outs.shape[-1] == 1 and val_ref[0].ndim == 2 else outs
        p = float(np.mean([_psnr_float(o, r) for o, r in zip(outs, val_ref)]))
        rec = {"step": step, "val_psnr": round(p, 4), "val_blurry_psnr": round(val_blurry_psnr, 4),
               "val_gain": round(p - val_blurry_psnr, 4),
               "wall_s": round(time.time() - t0 + prior, 1)}
        _log(out / LOG_FILE, rec)
        return rec

    def save(step):
        saver.save(sess, str(out / MODEL_NAME), global_step=step)

    prior = 0.0  # wall time of earlier invocations, from the log
    if (out / LOG_FILE).exists():
        for line in (out / LOG_FILE).read_text().splitlines():
            prior = max(prior, json.loads(line).get("wall_s", 0.0))
    t0 = time.time()
    end = steps if not stop_after else min(steps, start + stop_after)
    batch_of = lambda k: synthetic.training_batch(seed, k, batch, crop, run.spec, photo_list)
    acc = {"loss": [], "psnr": [], "blurry_psnr": [], "levels": []}
    bar = tqdm(total=steps, initial=start, desc=f"{variant} w{width}", unit="step",
               dynamic_ncols=True, file=sys.stderr)
    step = start
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(batch_of, start) if start < end else None
        try:
            while step < end:
                blurry, sharp = nxt.result()
                if step + 1 < end:
                    nxt = pool.submit(batch_of, step + 1)
                feed = {g["blurry"]: blurry.astype(np.float32),
                        g["sharp"]: sharp.astype(np.float32)}
                _, loss, levels, lr_now, o, tgt, inp = sess.run(
                    [g["train_op"], g["loss"], g["level_losses"], g["lr"], g["output"],
                     g["target"], g["input"]], feed)
                step += 1
                if not np.isfinite(loss):
                    raise click.ClickException(f"loss became {loss} at step {step}; lower --lr "
                                               f"or lengthen --warmup.")
                acc["loss"].append(loss)
                acc["levels"].append(levels)
                # PSNR of the whole batch (one MSE): finite even when a crop is flat.
                acc["psnr"].append(_psnr_float(o, tgt))
                acc["blurry_psnr"].append(_psnr_float(inp, tgt))
                bar.update(1)
                if step % log_every == 0 or step == end:
                    rec = {"step": step, "lr": float(lr_now),
                           "loss": round(float(np.mean(acc["loss"])), 6),
                           "level_losses": [round(float(v), 6) for v in np.mean(acc["levels"], 0)],
                           "psnr": round(float(np.mean(acc["psnr"])), 4),
                           "blurry_psnr": round(float(np.mean(acc["blurry_psnr"])), 4),
                           "wall_s": round(time.time() - t0 + prior, 1)}
                    _log(out / LOG_FILE, rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}",
                                    gain=f"{rec['psnr'] - rec['blurry_psnr']:+.2f}dB")
                    acc = {k: [] for k in acc}
                if val and (step % val_every == 0 or step == steps):
                    rec = validate(step)
                    bar.write(f"step {step}: val PSNR {rec['val_psnr']:.2f} dB "
                              f"(blurry {rec['val_blurry_psnr']:.2f}, {rec['val_gain']:+.2f} dB)")
                if step % save_every == 0 or step == end:
                    save(step)
        except KeyboardInterrupt:
            if step > start:
                save(step)
            bar.close()
            click.echo(f"Interrupted; saved step {step} in {out}. Run the same command to resume.",
                       err=True)
            sys.exit(130)
    bar.close()
    sess.close()
    click.echo(f"{'Finished' if step >= steps else 'Stopped'} at step {step}; checkpoint "
               f"{out / f'{MODEL_NAME}-{step}'} ({time.time() - t0 + prior:.0f} s of training).")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--step", type=int, default=None, help="Step to export (default: the newest).")
def export(run_dir: Path, dest: Path, step: Optional[int]):
    """Copy a run's checkpoint (index + data, not the .meta graph) into DEST, with a
    `checkpoint` file that names it by a relative path."""
    tf, _ = import_tf()
    if step is None:
        latest = tf.train.latest_checkpoint(str(run_dir))
        if latest is None:
            raise click.UsageError(f"{run_dir} holds no checkpoint; train first.")
        prefix = Path(latest)
    else:
        prefix = run_dir / f"{MODEL_NAME}-{step}"
    files = [Path(str(prefix) + ".index")] + sorted(prefix.parent.glob(prefix.name + ".data-*"))
    if not files[0].exists() or len(files) < 2:
        raise click.UsageError(f"{prefix} is not a complete checkpoint (no .index or data file).")
    dest.mkdir(parents=True, exist_ok=True)
    for old in list(dest.glob(f"{MODEL_NAME}-*")):
        old.unlink()
    for f in files:
        shutil.copyfile(f, dest / f.name)
    # TF writes the paths relative to save_dir only when save_dir itself is relative, so hand
    # it both relative to the working directory: the file then says "deblur.model-<step>".
    rel_dir = os.path.relpath(dest)
    rel_prefix = os.path.join(rel_dir, prefix.name)
    tf.compat.v1.train.update_checkpoint_state(rel_dir, rel_prefix,
                                               all_model_checkpoint_paths=[rel_prefix])
    for name in ("run.json", LOG_FILE):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    total = sum(p.stat().st_size for p in dest.iterdir())
    click.echo(f"Exported {prefix.name} to {dest} ({total / 1e6:.2f} MB).")


if __name__ == "__main__":
    cli()

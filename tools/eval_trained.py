#!/usr/bin/env python
"""Measure a trained SRN checkpoint on a held-out synthetic set: blurry vs TF vs srn-port.

For each image of the held-out set (:func:`srn_port.data.synthetic.held_out_set`, a seed the
training never used, held-out photographs and procedural scenes) this reports the PSNR
(8-bit, peak 255) of the blurry input, of the original TF graph's output (run from the
checkpoint by :mod:`srn_port.reference.graph`) and of srn-port's output (the checkpoint
converted without TF by :func:`srn_port.core.convert.convert_checkpoint`). Network outputs are
clipped to [0, 1], scaled by 255 and rounded. gray/lstm models run the R, G, B planes as a
batch of single-channel images, as the original's test().

It writes a JSON of the numbers, a side-by-side picture (blurry | TF | srn-port | sharp)
and, with --example-dir, one blurred example and its sharp original for the README demo.

    python tools/eval_trained.py examples/trained/color --json examples/trained/eval_color.json \\
        --picture examples/trained/comparison_color.png --example-dir examples
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

import click
import cv2
import numpy as np
import torch

from srn_port.data import synthetic
from srn_port.core.network import N_LEVELS, OUTPUT_NODE, SIZE_MULTIPLE, SRNConfig
from srn_port.api.weights import as_state_dict
from srn_port.core.convert import convert_checkpoint
from srn_port.core.fileio import atomic_write
from srn_port.nn.model import SRN

#: Held-out seeds: the training data uses another stream, its validation set seed 1.
EVAL_SEED = 2018
EXAMPLE_SEED = 7
#: The original repository's real blurry photos (no ground truth).
PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


def to_planes(batch_nhwc: np.ndarray, config: SRNConfig) -> np.ndarray:
    """Images (N, H, W, 3) -> the network's input batch: as is for color; for gray/lstm
    each colour plane becomes an image of its own (N*3, H, W, 1), as the original test()."""
    if config.channels == 3:
        return batch_nhwc
    n, h, w, _ = batch_nhwc.shape
    return batch_nhwc.transpose(0, 3, 1, 2).reshape(n * 3, h, w, 1)


def from_planes(out_nhwc: np.ndarray, config: SRNConfig) -> np.ndarray:
    if config.channels == 3:
        return out_nhwc
    n3, h, w, _ = out_nhwc.shape
    return out_nhwc.reshape(n3 // 3, 3, h, w).transpose(0, 2, 3, 1)


def run_tf(prefix, config: SRNConfig, x_nhwc: np.ndarray, threads: Optional[int]) -> np.ndarray:
    """The original graph's finest output for every image (N, H, W, 3), float32."""
    from srn_port.reference.graph import ReferenceModel

    planes = to_planes(x_nhwc, config)
    with ReferenceModel(prefix, config, planes.shape, threads=threads, record=False) as ref:
        out = ref.run(planes, activations=False).outputs[-1]
    return from_planes(out, config)


def run_port(state_dict, config: SRNConfig, x_nhwc: np.ndarray, chunk: int = 4) -> np.ndarray:
    """srn-port's finest output for every image (N, H, W, 3), float32."""
    model = SRN(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    planes = to_planes(x_nhwc, config)
    outs = []
    with torch.no_grad():
        for i in range(0, len(planes), chunk):
            x = torch.from_numpy(np.ascontiguousarray(planes[i:i + chunk].transpose(0, 3, 1, 2)))
            outs.append(model(x)[-1].numpy().transpose(0, 2, 3, 1))
    return from_planes(np.concatenate(outs), config)


#: Ablations of the coarse stages: variables set to 0 (weights and biases).
ABLATIONS = {"dec2_4 zeroed (quarter-resolution stage off)": ("dec2_4",),
             "dec1_4 zeroed (half- and quarter-resolution stages off)": ("dec1_4",)}


def level_contributions(state_dict, config: SRNConfig, x_nhwc: np.ndarray,
                        sharp: np.ndarray) -> dict:
    """Mean PSNR (8-bit) of srn-port's output with the coarse stages ablated, of the finest
    pyramid level alone (fed [blur, blur], no coarser level), and of each level's own output
    against the sharp image resized to it; plus how many 8-bit values each ablation moves."""
    from srn_port.nn.ops import tf_resize_bilinear

    full = synthetic.to_uint8(run_port(state_dict, config, x_nhwc))

    def mean_psnr(out_u8):
        return round(float(np.mean([synthetic.psnr(o, s) for o, s in zip(out_u8, sharp)])), 4)

    result = {"full model": {"psnr": mean_psnr(full)}}
    for label, prefixes in ABLATIONS.items():
        sd = {k: (torch.zeros_like(v) if k.split(".")[0] in prefixes else v)
              for k, v in state_dict.items()}
        out = synthetic.to_uint8(run_port(sd, config, x_nhwc))
        result[label] = {"psnr": mean_psnr(out),
                         "values_changed": round(float((out != full).mean()), 6),
                         "max_change": int(np.abs(out.astype(int) - full.astype(int)).max())}
    model = SRN(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    planes = to_planes(x_nhwc, config)
    sharp_planes = to_planes(sharp.astype(np.float32) / 255.0, config)
    levels = [[] for _ in range(3)]
    blurry_levels = [[] for _ in range(3)]
    finest = []
    with torch.no_grad():
        for i in range(0, len(planes), 4):
            x = torch.from_numpy(np.ascontiguousarray(planes[i:i + 4].transpose(0, 3, 1, 2)))
            y = torch.from_numpy(np.ascontiguousarray(
                sharp_planes[i:i + 4].transpose(0, 3, 1, 2)))
            for lvl, out in enumerate(model(x)):
                ref = tf_resize_bilinear(y, out.shape[-2:]) if out.shape != y.shape else y
                levels[lvl] += [float(((out.clamp(0, 1) - ref) ** 2).mean(dim=(1, 2, 3))[j])
                                for j in range(len(x))]
                xb = tf_resize_bilinear(x, out.shape[-2:]) if out.shape != x.shape else x
                blurry_levels[lvl] += [float(((xb - ref) ** 2).mean(dim=(1, 2, 3))[j])
                                       for j in range(len(x))]
            if not config.use_lstm:  # the ConvLSTM would need a state from a coarser level
                alone = model.run_level(N_LEVELS - 1, {"input": x, "prev_output": x})
                finest.append(alone[OUTPUT_NODE].numpy().transpose(0, 2, 3, 1))
    for lvl in range(3):
        result[f"level {lvl} output vs sharp at its size"] = {
            "psnr": round(float(np.mean([10 * np.log10(1 / m) for m in levels[lvl]])), 4),
            "blurry_psnr": round(float(np.mean([10 * np.log10(1 / m)
                                                for m in blurry_levels[lvl]])), 4)}
    if finest:
        out = synthetic.to_uint8(from_planes(np.concatenate(finest), config))
        result["finest level alone (fed [blur, blur])"] = {"psnr": mean_psnr(out)}
    return result


def photo_sharpness(state_dict, config: SRNConfig, photos_dir: Path) -> dict:
    """Real photos (no ground truth): mean Sobel gradient magnitude of srn-port's output over
    the input's, per photo (> 1: sharper edges)."""
    from srn_port.data.images import read_image

    out = {}
    for path in sorted(photos_dir.glob("*.png")):
        img = read_image(path)[:, :, :3]
        res = synthetic.to_uint8(run_port(state_dict, config,
                                          img[None].astype(np.float32) / 255.0, chunk=1))[0]

        def grad(a):
            g = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
            return float(np.mean(np.hypot(cv2.Sobel(g, cv2.CV_64F, 1, 0),
                                          cv2.Sobel(g, cv2.CV_64F, 0, 1))))
        out[path.name] = round(grad(res) / grad(img), 4)
    return out


def _shown_path(path) -> str:
    """``path`` relative to the working directory when it lies below it (for the JSON)."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], 0)


def side_by_side(rows: List[List[np.ndarray]], titles: List[str], gap: int = 4) -> np.ndarray:
    """A grid of uint8 RGB tiles with a title over every column of the first row."""
    out_rows = []
    for r, tiles in enumerate(rows):
        cells = []
        for c, tile in enumerate(tiles):
            cell = _label(tile, titles[c]) if r == 0 else tile
            cells.append(cell)
            if c < len(tiles) - 1:
                cells.append(np.full((cell.shape[0], gap, 3), 255, np.uint8))
        out_rows.append(np.concatenate(cells, 1))
        if r < len(rows) - 1:
            out_rows.append(np.full((gap, out_rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(out_rows, 0)


def write_png(path: Path, rgb: np.ndarray) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise click.ClickException(f"could not encode {path}")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    return path.stat().st_size


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--n", "n_images", type=int, default=24, show_default=True, help="Held-out images.")
@click.option("--size", type=int, default=256, show_default=True,
              help="Image size (multiple of 16).")
@click.option("--seed", type=int, default=EVAL_SEED, show_default=True, help="Held-out set seed.")
@click.option("--photos/--no-photos", default=True, show_default=True,
              help="Include held-out scikit-image photographs (needs scikit-image).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the numbers here.")
@click.option("--picture", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a blurry | TF | srn-port | sharp picture here (PNG).")
@click.option("--picture-rows", type=str, default="auto", show_default=True,
              help="Held-out images shown in the picture: indices, or 'auto' for the most "
                   "blurred photograph and the most blurred procedural scene (lowest input "
                   "PSNR: chosen from the inputs, never from the outputs).")
@click.option("--crop", type=int, default=192, show_default=True,
              help="Centre crop of each image in the picture.")
@click.option("--example-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write blurred_example.png and sharp_example.png here.")
@click.option("--example-size", type=str, default="256x384", show_default=True,
              help="HxW of the example (multiples of 16).")
@click.option("--threads", type=int, default=0, show_default=True, help="TF threads (0: default).")
def main(checkpoint: Path, n_images, size, seed, photos, json_out, picture, picture_rows, crop,
         example_dir, example_size, threads):
    """Evaluate CHECKPOINT (a directory with a `checkpoint` file, or a prefix)."""
    if size % SIZE_MULTIPLE:
        raise click.BadParameter(f"must be a multiple of {SIZE_MULTIPLE}", param_hint="--size")
    t0 = time.time()
    conv = convert_checkpoint(checkpoint)
    config = conv.config
    pairs = synthetic.held_out_set(n_images, size, seed=seed, photos=photos)
    blurry = np.stack([b for b, _ in pairs])
    sharp = np.stack([s for _, s in pairs])
    x = blurry.astype(np.float32) / 255.0

    t = time.time()
    tf_out = run_tf(conv.source, config, x, threads or None)
    tf_s = time.time() - t
    t = time.time()
    port_out = run_port(as_state_dict(conv.arrays), config, x)
    port_s = time.time() - t

    tf_u8, port_u8 = synthetic.to_uint8(tf_out), synthetic.to_uint8(port_out)
    per_image = []
    for i in range(n_images):
        per_image.append({
            "source": "photo" if photos and i % 2 == 0 else "procedural",
            "blurry": synthetic.psnr(blurry[i], sharp[i]),
            "tf": synthetic.psnr(tf_u8[i], sharp[i]),
            "srn_port": synthetic.psnr(port_u8[i], sharp[i]),
        })
    mean = {k: float(np.mean([p[k] for p in per_image])) for k in ("blurry", "tf", "srn_port")}
    err = np.abs(tf_out - port_out)
    result = {
        "checkpoint": _shown_path(conv.source), "variant": config.variant,
        "width": config.width,
        "step": conv.step,
        "held_out_set": {"n": n_images, "size": size, "seed": seed, "photos": photos,
                         "blur": {k: getattr(synthetic.BlurSpec(), k) for k in
                                  ("min_length", "max_length", "max_noise")}},
        "psnr_db": {k: round(v, 4) for k, v in mean.items()},
        "gain_db": {"tf_vs_blurry": round(mean["tf"] - mean["blurry"], 4),
                    "srn_port_vs_blurry": round(mean["srn_port"] - mean["blurry"], 4),
                    "srn_port_vs_tf": round(mean["srn_port"] - mean["tf"], 6)},
        "tf_vs_srn_port": {"max_abs_err": float(err.max()),
                           "max_abs_tf": float(np.abs(tf_out).max()),
                           "pixels_8bit_differing": int((tf_u8 != port_u8).sum()),
                           "pixels_8bit_total": int(tf_u8.size)},
        "per_image": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()}
                      for p in per_image],
        "seconds": {"tf": round(tf_s, 2), "srn_port": round(port_s, 2)},
    }

    state_dict = as_state_dict(conv.arrays)
    result["level_contributions"] = level_contributions(state_dict, config, x, sharp)
    result["photos_sharpness_ratio"] = photo_sharpness(state_dict, config, PHOTOS)

    if picture:
        lo = (size - crop) // 2
        win = (slice(lo, lo + crop), slice(lo, lo + crop))
        if picture_rows == "auto":
            shown = []
            for kind in ("photo", "procedural"):
                idx = [i for i, p in enumerate(per_image) if p["source"] == kind]
                if idx:
                    shown.append(min(idx, key=lambda i: per_image[i]["blurry"]))
        else:
            shown = [int(v) for v in picture_rows.split(",")]
        rows = [[im[win] for im in (blurry[i], tf_u8[i], port_u8[i], sharp[i])] for i in shown]
        grid = side_by_side(rows, ["blurry input", "TF original", "srn-port",
                                   "sharp"])
        result["picture"] = {"path": str(picture), "rows": shown, "crop": crop,
                             "bytes": write_png(picture, grid)}

    if example_dir:
        h, w = (int(v) for v in example_size.lower().split("x"))
        b, s = synthetic.held_out_set(1, h, w, seed=EXAMPLE_SEED, photos=photos)[0]
        xe = b[None].astype(np.float32) / 255.0
        te = synthetic.to_uint8(run_tf(conv.source, config, xe, threads or None))[0]
        pe = synthetic.to_uint8(run_port(as_state_dict(conv.arrays), config, xe))[0]
        result["example"] = {
            "seed": EXAMPLE_SEED, "size": [h, w],
            "blurred": str(example_dir / "blurred_example.png"),
            "sharp": str(example_dir / "sharp_example.png"),
            "bytes": [write_png(example_dir / "blurred_example.png", b),
                      write_png(example_dir / "sharp_example.png", s)],
            "psnr_db": {"blurry": round(synthetic.psnr(b, s), 4),
                        "tf": round(synthetic.psnr(te, s), 4),
                        "srn_port": round(synthetic.psnr(pe, s), 4)}}
    result["seconds"]["total"] = round(time.time() - t0, 1)

    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(json_out, lambda tmp: Path(tmp).write_text(text))
    p, g = result["psnr_db"], result["gain_db"]
    click.echo(f"{config.variant} width {config.width} step {conv.step}: {n_images} held-out "
               f"{size}x{size} images (seed {seed})")
    click.echo(f"  PSNR blurry {p['blurry']:.2f} dB | TF {p['tf']:.2f} dB "
               f"({g['tf_vs_blurry']:+.2f}) | srn-port {p['srn_port']:.2f} dB "
               f"({g['srn_port_vs_blurry']:+.2f}); srn-port - TF = {g['srn_port_vs_tf']:+.4f} dB")
    e = result["tf_vs_srn_port"]
    click.echo(f"  TF vs srn-port: max |err| {e['max_abs_err']:.2e} "
               f"(max |TF| {e['max_abs_tf']:.3f}),"
               f" {e['pixels_8bit_differing']} of {e['pixels_8bit_total']} 8-bit values differ")
    for label, v in result["level_contributions"].items():
        extra = (f" ({100 * v['values_changed']:.2f}% of 8-bit values move, by up to "
                 f"{v['max_change']})" if "values_changed" in v else
                 f" (blurry input at that size {v['blurry_psnr']:.2f} dB)"
                 if "blurry_psnr" in v else "")
        click.echo(f"  {label}: {v['psnr']:.2f} dB{extra}")
    click.echo(f"  real photos, output/input edge strength: {result['photos_sharpness_ratio']}")
    if "example" in result:
        click.echo(f"  example {example_size}: {result['example']['psnr_db']}")


if __name__ == "__main__":
    main()

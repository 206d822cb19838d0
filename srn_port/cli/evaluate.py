"""``srn-port evaluate``: PSNR / SSIM on (blurry, sharp) pairs, the paper's protocol."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .weights_arg import WeightsPath

from .deblur import _quiet_opencv, check_compile, check_pipeline, pipeline_options


def _scenes(ctx, param, value):
    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise click.BadParameter("give scene folder names separated by commas.")
    return names


@click.command(short_help="PSNR/SSIM over a GoPro-layout dataset or datalist (the paper's "
                          "protocol).")
@click.argument("weights", type=WeightsPath(exists=True))
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For a datalist DATASET: the folder its paths are relative to.  "
                   "[default: the datalist's folder]")
@click.option("--scenes", callback=_scenes, default=None,
              help="Only these scenes (comma-separated folder names, e.g. GOPR0384_11_00).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N pairs (after --scenes), in sorted order.")
@pipeline_options
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the per-image scores (PSNR, SSIM, the blurry input's "
                                 "PSNR and SSIM, seconds) to this CSV file.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the summary (means, per scene) to this JSON file.")
@click.option("--force", is_flag=True, help="Overwrite existing --csv/--json files.")
@click.pass_context
def evaluate(ctx, weights, dataset, root, scenes, limit, mode, height, width, tile, overlap,
             device, precision, max_pixels, compile_, compile_mode, backend, csv_path,
             json_path, force):
    """Deblur every blurry image of DATASET with WEIGHTS and score it against its sharp
    image: MATLAB's psnr and ssim on the whole 8-bit RGB image (no border crop, no Y
    channel), as the SRN-Deblur paper's GoPro table; the blurry input is scored too.

    DATASET is a folder in the GoPro layout (<scene>/blur/NAME next to <scene>/sharp/NAME,
    or blur/ and sharp/ directly inside) or a datalist file ('SHARP BLUR' per line, as the
    original's datalist_gopro.txt). Every pair is checked (from the headers: present, same
    size) before any deblurring. WEIGHTS and the pipeline options are those of deblur. Under
    torchrun the pairs are split across the processes and the scores merged.

    \b
    Examples:
      srn-port evaluate srn_lstm.pt GOPRO_Large/test --mode original --csv lstm.csv
      srn-port evaluate color.onnx heldout --json summary.json
    """
    from ..core.errors import SrnPortError
    from ..core.fileio import atomic_write, check_new_file

    from ..data.pairs import left_out_notes, left_out_summary

    dev, overlap = check_pipeline(ctx, mode, height, width, tile, overlap, device, precision)
    check_compile(ctx, compile_, compile_mode, dev)

    from tqdm import tqdm

    from ..api.deploy import load_inference_model
    from ..api.distributed import distributed, finish_distributed, gather
    from ..api.evaluate import csv_text, dataset_pairs, evaluate as run_evaluation, summarize

    left_out: dict = {}
    pairs = dataset_pairs(dataset, root, scenes, limit, left_out)
    # no output may land on anything evaluate reads: WEIGHTS (its folder or prefix), the
    # dataset (folder, datalist, root) and every listed image, wherever it lies
    inputs = [weights, dataset, root] + [p for pair in pairs for p in (pair.blur, pair.sharp)]
    for path, what in ((csv_path, "--csv file"), (json_path, "--json file")):
        if path is not None:
            check_new_file(path, what, inputs, force)
    if csv_path is not None and json_path is not None and csv_path.resolve() == \
            json_path.resolve():
        raise SrnPortError(f"--csv and --json are both '{csv_path}'; give two file names.")
    rank, world = distributed(dev.type)
    if rank == 0:
        for note in left_out_notes(dataset, left_out):
            click.echo(note, err=True)
    if world > 1 and dev.type == "cuda":
        import torch

        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    model = load_inference_model(weights, backend, device=dev)
    if compile_:
        from ..api.deblur import compile_model

        model = compile_model(model, compile_mode, precision)
    _quiet_opencv()
    bar = tqdm(total=len(pairs[rank::world]), unit="img", desc="evaluate", disable=None,
               file=sys.stderr)

    def progress(score):
        bar.set_postfix_str(f"{score.name} {score.psnr:.2f} dB")
        bar.update(1)

    try:
        mine = run_evaluation(model, pairs[rank::world], range(rank, len(pairs), world),
                              progress=progress, max_pixels=max_pixels, mode=mode,
                              height=height, width=width, tile=tile, overlap=overlap,
                              precision=precision)
        bar.close()
        scores = [s for part in gather(mine, world) for s in part]
    finally:
        finish_distributed()
    if rank != 0:
        return
    scores.sort(key=lambda s: s.index)
    summary = summarize(scores)
    cfg = model.config
    summary.update(weights=str(weights), dataset=str(dataset), variant=cfg.variant,
                   width=cfg.width, mode=mode, precision=precision, processes=world,
                   backend="onnxruntime" if Path(weights).suffix.lower() == ".onnx"
                   else "torch",
                   metrics="MATLAB psnr / ssim (default arguments) on whole 8-bit RGB images",
                   left_out={k: len(v) for k, v in left_out.items()})
    if csv_path is not None:
        text = csv_text(scores)
        atomic_write(csv_path, lambda tmp: Path(tmp).write_text(text))
    if json_path is not None:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    procs = f", {world} processes" if world > 1 else ""
    click.echo(f"{summary['images']} image(s): PSNR {summary['psnr']:.2f} dB, SSIM "
               f"{summary['ssim']:.4f} (blurry input {summary['input_psnr']:.2f} dB, "
               f"{summary['input_ssim']:.4f}); {summary['seconds_per_image']:.2f} s/image "
               f"({cfg.variant} width {cfg.width}, {summary['backend']}, --mode {mode}{procs})"
               + (f"; {left_out_summary(left_out)} (see the notes above)"
                  if left_out_summary(left_out) else ""))

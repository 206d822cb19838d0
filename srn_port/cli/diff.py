"""``srn-port diff``: where does the port diverge from TF, and why.

Exit codes: 0 every layer within the tolerance table, 1 a divergence, 2 a usage error
(bad file, wrong golden, unknown layer...), so CI can tell a regression from misuse.
An exported ``.onnx``/``.pt2`` file exposes only its level outputs, so for one of those
the table has a row per output it has, judged under 'output'.
"""

from __future__ import annotations

from pathlib import Path

import click

from .weights_arg import WeightsPath

from ..core.errors import CheckpointError, SrnPortError
from ..core.fileio import check_new_file
from ..core.network import EMULATIONS, N_LEVELS, OUTPUT_NODE
from .report import _para, format_detail, format_outcome, format_table, write_json


#: --precision choices (srn_port.nn.precision.PRECISIONS, without importing torch at start-up).
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


#: Exit status of a usage error (click's own usage errors use 2 as well).
EXIT_USAGE = 2
EXIT_DIVERGED = 1


def _level(ctx, param, value):
    if value is not None and not 0 <= value < N_LEVELS:
        raise click.BadParameter(f"SRN has {N_LEVELS} pyramid levels: 0 (1/4 size), 1 (1/2 size) "
                                 f"and 2 (full size); got {value}.")
    return value


#: SRN's rows: named by level and layer
TABLE = ("{level:>5}  {layer:<15} {shape:<14}", {"level": "level", "layer": "layer"}, 19)


def format_report(result, weights_path, show_layer: bool) -> str:
    mode = {"chained": "chained: each layer computes from the model's own previous layers",
            "isolated": "isolated: each layer is fed the reference's own inputs",
            "outputs": "outputs: an exported file, compared on the level outputs it "
                       "exposes"}[result.mode]
    out = [f"reference: {result.reference}", f"model:     {result.model}", f"mode:      {mode}"]
    if result.emulate:
        out.append(f"emulating: {', '.join(result.emulate)} (naive PyTorch choices, on purpose)")
    out += [f"note:      {n}" for n in result.notes]
    out += ["", format_table(result.rows, *TABLE), ""]
    wd = result.weight_differences
    if wd is not None:
        if wd:
            out.append(f"weights: {len(wd)} tensor(s) differ from the reference checkpoint:")
            out += [_para(w.describe(), "  ") for w in wd[:10]]
            if len(wd) > 10:
                out.append(f"  ... and {len(wd) - 10} more")
        else:
            out.append("weights: every tensor equals the reference checkpoint's")
    if show_layer:
        for d in result.details:
            out += [format_detail(d), ""]
    n = len(result.rows)
    what = (f"{'the' if n == 1 else f'all {n}'} level output{'s' * (n != 1)}"
            if result.mode == "outputs" else f"all {n} layer/level rows")
    out += format_outcome(result, what, lambda f: f"{f.layer} at level {f.level}")
    f = result.first_divergence
    if f is not None:
        if not show_layer and result.first_divergence_detail is not None:
            out.append(f"(details: srn-port diff {weights_path} ... --layer {f.layer} "
                       f"--level {f.level})")
    return "\n".join(out)


def _input_files(weights: Path, golden, tf_ckpt, image):
    """Every file the command reads (a checkpoint prefix stands for its .index and data)."""
    files = [golden, image]
    for ckpt in (weights, tf_ckpt):
        if ckpt is None:
            continue
        ckpt = Path(ckpt)
        files.append(ckpt)
        files += [p for p in ckpt.parent.glob(ckpt.name + ".*") if p.is_file()]
        if ckpt.is_dir():
            files += [p for p in ckpt.iterdir() if p.is_file()]
    return [f for f in files if f is not None]


def _run(weights, golden, tf_ckpt, image, size, seed, layer, level, isolate, emulate,
         heatmap, json_out, force=False, device="cpu", precision="fp32"):
    from ..parity import (GoldenReference, TFReference, compare, compare_outputs, find_golden,
                          image_input, parse_size, random_input, write_heatmap)
    from ..parity.reference import checkpoint_config
    from ..api.deploy import FORMATS, load_exported
    from ..api.weights import load_model

    if golden is not None and tf_ckpt is not None:
        raise SrnPortError("--golden and --tf are two different references; give one of them.")
    if tf_ckpt is None and (image is not None or size is not None):
        raise SrnPortError("--input and --size choose the input of a live TF comparison (--tf "
                           "CHECKPOINT); a golden file has its own fixed input.")
    if image is not None and size is not None:
        raise SrnPortError("--input and --size both choose the input; give one of them.")
    exported = weights.suffix.lower() in FORMATS
    if exported and (isolate or emulate):
        raise SrnPortError(f"--isolate and --emulate act on the layers of a PyTorch model, and "
                           f"'{weights}' is an exported file, which exposes only its level "
                           f"outputs. Use them with the weights it was exported from.")
    if exported and (device != "cpu" or precision != "fp32"):
        raise SrnPortError(f"--device and --precision run srn-port's own model; '{weights}' is "
                           f"an exported file, which runs as it was exported (CPU, fp32). Give "
                           f"the weights it was exported from.")
    from ..api.deblur import resolve_device

    dev = resolve_device(device)
    # tf32 on the CPU is emulated (srn_port.nn.precision.emulate_rounding), and said so;
    # fp16/bf16 autocast runs on any CPU (slowly without the instructions; goldens are tiny).
    if precision == "bf16" and dev.type == "cuda" and not _cuda_bf16():
        raise SrnPortError("--precision bf16: this GPU has no bfloat16 support; use fp16.")
    inputs = _input_files(weights, golden, tf_ckpt, image)
    if json_out is not None and json_out != "-":
        check_new_file(json_out, "--json file", inputs, force)
    if heatmap is not None:
        check_new_file(heatmap, "--heatmap file", inputs + ([Path(json_out)] if json_out not in
                                                           (None, "-") else []), force)
    if not weights.exists() and not weights.with_name(weights.name + ".index").exists():
        raise SrnPortError(f"WEIGHTS '{weights}' does not exist. Give a converted weights file "
                           f"(.pt/.safetensors), a TF checkpoint (its folder or its prefix) or "
                           f"an exported .onnx/.pt2 file.")
    if exported:
        model = load_exported(weights)
    else:
        try:
            model = load_model(weights)
        except CheckpointError as exc:
            hint = (" (an .h5 file is a golden: pass it with --golden)"
                    if weights.suffix.lower() == ".h5" else "")
            raise SrnPortError(f"WEIGHTS '{weights}' is neither an srn-port weights file (.pt, "
                               f".pth, .safetensors, written by srn-port convert) nor a "
                               f"TensorFlow checkpoint{hint}. {exc}") from None
        names = model.node_names()
        if layer is not None and layer not in names:
            raise SrnPortError(f"There is no layer '{layer}' in an SRN {model.config.variant} "
                               f"model. Valid names, in graph order: {', '.join(names)}.")
        model.set_emulation(emulate)
        model.to(dev)
    if tf_ckpt is not None:
        prefix, config = checkpoint_config(tf_ckpt)
        if config != model.config:
            raise SrnPortError(
                f"--tf {tf_ckpt} is an SRN {config.variant} checkpoint of width {config.width}, "
                f"but WEIGHTS is {model.config.variant} of width {model.config.width}. Give the "
                f"checkpoint WEIGHTS was converted from.")
        note = ""
        if image is not None:
            x, note = image_input(image, config)
        else:
            x = random_input(config, parse_size(size or "64x96"), seed)
        reference = TFReference(prefix, config, x)
    else:
        reference = GoldenReference(golden if golden is not None else find_golden(model.config))
        note = ""
    meta = getattr(model, "metadata", {})
    if exported:
        what = (f", exported{' (finest level only)' if model.finest_only else ''}, run by "
                f"{meta['backend']}")
    else:
        what = f", step {meta['step']}" if meta.get("step") is not None else ""
    model_name = f"{weights} (SRN {model.config.variant}, width {model.config.width}{what})"
    detail_layer = layer or (OUTPUT_NODE if heatmap is not None else None)
    levels = None if level is None else [level]
    with reference:
        if exported:
            result = compare_outputs(model, reference, levels=levels, layer=detail_layer,
                                     model_name=model_name)
        else:
            result = compare(model, reference, isolate=isolate, levels=levels,
                             layer=detail_layer, model_name=model_name, precision=precision)
    if note:
        result.notes.append(note)
    if heatmap is not None:
        pick = None
        if layer is None and result.first_divergence_detail is not None:
            pick = result.first_divergence_detail
        elif result.details:
            failing = [d for d in result.details if not d.passed]
            pick = failing[0] if failing else result.details[-1]
        if pick is not None:
            write_heatmap(pick, heatmap)
            result.notes.append(f"heatmap of {pick.layer} at level {pick.level} written to "
                                f"{heatmap}")
    if not write_json(result.to_dict(), json_out, result.notes):
        click.echo(format_report(result, weights, show_layer=layer is not None))
    return result


@click.command()
@click.argument("weights", type=WeightsPath())  # a checkpoint prefix is no file
@click.option("--golden", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Golden file to compare with. Default: the golden in the repository's golden/ "
                   "(or $SRN_PORT_GOLDEN_DIR) whose variant and width are WEIGHTS'.")
@click.option("--tf", "tf_ckpt", type=click.Path(path_type=Path),
              help="Compare with the live TF graph restored from this checkpoint (needs "
                   "TensorFlow); the input is --input or --size.")
@click.option("--input", "image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --tf: an image file as input (edge-padded to multiples of 16).")
@click.option("--size", help="With --tf: a seeded random input of this HxW (default 64x96).")
@click.option("--seed", type=int, default=0, help="Seed of the --size input.")
@click.option("--layer", help="Show this layer in detail (e.g. enc2_1): where the error peaks, "
                              "border versus interior, histogram.")
@click.option("--level", type=int, callback=_level,
              help="Compare only this pyramid level (0 = 1/4 size, 1 = 1/2, 2 = full).")
@click.option("--isolate", is_flag=True,
              help="Feed every layer the reference's own inputs: each row is then that layer's "
                   "own error, without accumulation.")
@click.option("--emulate", multiple=True, type=click.Choice(EMULATIONS),
              help="Run the model with a naive PyTorch choice to see its failure mode "
                   "(repeatable).")
@click.option("--heatmap", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of the error map of --layer (else of the first divergent layer, "
                   "else of the output).")
@click.option("--json", "json_out", help="Write the comparison as JSON to this file ('-': to "
                                         "stdout, instead of the table).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu",  # no mps
              help="Run the model on this device (auto: cuda when available); the reference "
                   "stays what it is.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              help="The model's arithmetic: fp32 (IEEE, TF32 off: the TF-equal one), tf32 "
                   "(TF32 convolutions on CUDA, emulated on the CPU), fp16 or bf16 "
                   "(autocast). A divergence caused by reduced precision is named as such.")
@click.option("--force", is_flag=True, help="Overwrite existing --json/--heatmap files.")
def diff(weights, golden, tf_ckpt, image, size, seed, layer, level, isolate, emulate, heatmap,
         json_out, device, precision, force):
    """Compare WEIGHTS (a converted .pt/.safetensors file, a TF checkpoint, a Hub folder or
    hf://ORG/NAME) with the TF original, layer by layer and level by level, and explain the
    first divergence. An exported .onnx/.pt2 file is compared on its level outputs, all it
    exposes.

    Exit status: 0 all within the tolerance table, 1 divergence, 2 usage error.
    """
    result = _run(weights, golden, tf_ckpt, image, size, seed, layer, level, isolate, emulate,
                  heatmap, json_out, force, device, precision)
    if not result.passed:
        click.get_current_context().exit(EXIT_DIVERGED)

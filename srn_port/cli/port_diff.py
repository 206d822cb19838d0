"""``srn-port port-diff``: a porter's own TF1 / tf-slim network against its PyTorch port,
end_point by end_point, with the first divergence named (srn_port.port).

The user names their own code on the command line: the TF graph builder
(``module:function``), the PyTorch module (``module:Class``) and optionally its mapping
rules; those modules are imported and run, as ``python -m`` would (the current folder is on
the import path). Only the checkpoint is data, read without running anything from it.

Exit codes as ``diff``: 0 every tap within the tolerance table, 1 a divergence, 2 a usage
error.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from ..core.errors import SrnPortError
from ..core.fileio import check_new_file
from .diff import EXIT_DIVERGED
from .report import _para, format_detail, format_outcome, format_table, write_json


def load_object(spec: str, option: str):
    """``module:attribute`` -> the attribute, importing the module (the current folder first
    on the import path)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SrnPortError(f"{option} '{spec}' is not MODULE:NAME (e.g. "
                           f"examples.ports.resnet_v1_50:build_tf).")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SrnPortError(f"{option} '{spec}': cannot import module '{module_name}' ({exc}). "
                           f"Run from the folder that holds it, or put it on PYTHONPATH.") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SrnPortError(f"{option} '{spec}': module '{module_name}' has no '{attr}'.")
        obj = getattr(obj, part)
    return obj


def _size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SrnPortError(f"--size '{text}' is not HxW (e.g. 64x64).") from None
    if h <= 0 or w <= 0 or h * w > 4096 * 4096:
        raise SrnPortError(f"--size {text}: each side must be positive and the image at most "
                           f"4096x4096.")
    return h, w


def format_report(result, header, details) -> str:
    width = max([len(r.name) for r in result.rows] + [4])
    table = format_table(result.rows, f"{{name:<{width}}}  {{shape:<16}}", {"name": "tap"}, 17)
    out = header + [f"note:      {n}" for n in result.notes] + ["", table, ""]
    if result.untapped:
        out.append(_para(f"not compared (no module for these end_points; map them with --tap "
                         f"NAME=MODULE): {', '.join(result.untapped)}"))
    for d in details:  # (one comparison: no levels)
        out += [format_detail(d).replace(f", level {d.level} (", " (", 1), ""]
    out += format_outcome(result, f"all {len(result.rows)} taps",
                          lambda f: f"{f.name} (module {f.module or 'the model'})")
    return "\n".join(out)


def _run(tf_builder, checkpoint, torch_spec, rules_spec, tap_specs, size, batch, channels,
         seed, layer, heatmap, json_out, force, isolate=False):
    import numpy as np
    import torch

    from .. import port
    from ..core.checkpoint import resolve_checkpoint
    from ..parity.detail import layer_detail, write_heatmap
    from ..reference.porting import run_tf

    h, w = _size(size)
    prefix = resolve_checkpoint(checkpoint)
    inputs = [Path(checkpoint)] + [p for p in prefix.parent.glob(prefix.name + ".*")]
    if json_out not in (None, "-"):
        check_new_file(json_out, "--json file", inputs, force)
    if heatmap is not None:
        check_new_file(heatmap, "--heatmap file", inputs, force)
    builder = load_object(tf_builder, "--tf-builder")
    factory = load_object(torch_spec, "--torch")
    try:
        model = factory()
    except Exception as exc:  # the user's own constructor
        raise SrnPortError(f"--torch '{torch_spec}': constructing it with no arguments failed: "
                           f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise SrnPortError(f"--torch '{torch_spec}' made a {type(model).__name__}, not a "
                           f"torch.nn.Module.")
    rules = (load_object(rules_spec, "--rules") if rules_spec is not None
             else getattr(model, "TF_RULES", None))
    if rules is None:
        raise SrnPortError(f"No mapping rules: give --rules MODULE:NAME, or give "
                           f"{type(model).__name__} a TF_RULES attribute (srn_port.port.Map "
                           f"and Drop rules; docs/porting.md).")
    extra = dict(getattr(model, "TF_TAPS", {}) or {})
    for spec in tap_specs:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise SrnPortError(f"--tap '{spec}' is not TF_NAME=MODULE_PATH.")
        extra[name] = path
    modules = dict(model.named_modules())
    bad = [f"{n}={p}" for n, p in extra.items() if port.taps.parse_module(p)[0] not in modules]
    if bad:
        raise SrnPortError(f"--tap/TF_TAPS name module paths that {type(model).__name__} does "
                           f"not have: {', '.join(bad)}.")
    conversion = port.load(prefix, model, rules)
    x = np.random.default_rng(seed).uniform(0, 1, (batch, h, w, channels)).astype(np.float32)
    run = run_tf(builder, x, checkpoint=str(prefix),
                 fetch=[n for n in extra if n not in ("output",)])
    names = list(run.end_points) + [n for n in extra if n not in run.end_points]
    taps, untapped = port.taps_for(names, model, rules, extra)
    if layer is not None and layer not in [t.name for t in taps]:
        raise SrnPortError(f"--layer '{layer}' is not a tap; taps, in order: "
                           f"{', '.join(t.name for t in taps)}.")
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    result = port.compare(model, xt, run.activations, taps, conversion=conversion,
                          untapped=untapped, keep=[layer] if layer else [], isolate=isolate)
    details = []
    for name in ([layer] if layer else []):
        if name in result.tensors:
            row = next(r for r in result.rows if r.name == name)
            ours, ref = result.tensors[name]
            if ours.dim() == 4:
                details.append(layer_detail(0, name, ours, ref, row.tolerance, row.passed))
    if heatmap is not None:
        pick = layer or (result.first_divergence.name if result.first_divergence else None)
        if pick is not None and pick in result.tensors and result.tensors[pick][0].dim() == 4:
            row = next(r for r in result.rows if r.name == pick)
            detail = layer_detail(0, pick, *result.tensors[pick], row.tolerance, row.passed)
            write_heatmap(detail, heatmap)
            result.notes.append(f"heatmap of {pick} written to {heatmap}")
        else:
            result.notes.append("no heatmap: no 4-D tap to show (give --layer, or nothing "
                                "diverged)")
    data = {"checkpoint": str(prefix), "tf_builder": tf_builder, "torch": torch_spec,
            "input": {"shape": [batch, h, w, channels], "seed": seed, "range": [0, 1]},
            "variables_mapped": len(conversion.mapped),
            "variables_dropped": conversion.dropped, **result.to_dict()}
    if write_json(data, json_out, result.notes):
        return result
    header = [f"reference: TF graph of {tf_builder} restored from {prefix}",
              f"model:     {torch_spec} ({len(conversion.mapped)} variables mapped, "
              f"{len(conversion.dropped)} dropped by rule)",
              f"input:     {batch}x{h}x{w}x{channels} (NHWC), uniform [0, 1], seed {seed}",
              "mode:      " + ("isolated: each tapped module passes TF's activation on, so each "
                             "row is the error of the modules since the previous taps alone"
                             if isolate else "chained: the model runs on its own values")]
    click.echo(format_report(result, header, details))
    return result


@click.command("port-diff")
@click.option("--tf-builder", required=True, metavar="MODULE:FUNCTION",
              help="Your TF graph builder: FUNCTION(images) builds the network on an NHWC "
                   "float32 tensor and returns net, (net, end_points) or end_points.")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="The TF checkpoint (prefix, one of its files, or its folder).")
@click.option("--torch", "torch_spec", required=True, metavar="MODULE:CLASS",
              help="Your PyTorch port, constructed with no arguments.")
@click.option("--rules", "rules_spec", metavar="MODULE:NAME",
              help="The mapping rules (srn_port.port Map/Drop). Default: CLASS.TF_RULES.")
@click.option("--tap", "tap_specs", multiple=True, metavar="TF_NAME=MODULE",
              help="Also compare this TF end_point or graph tensor ('scope/op:0') with this "
                   "module's output, MODULE@N: at its N-th call from 0 (repeatable; adds to "
                   "CLASS.TF_TAPS).")
@click.option("--size", default="64x64", help="Input height x width.")
@click.option("--batch", type=click.IntRange(1, 64), default=1, help="Input batch size.")
@click.option("--channels", type=click.IntRange(1, 64), default=3, help="Input channels.")
@click.option("--seed", type=int, default=0, help="Seed of the random input.")
@click.option("--isolate", is_flag=True,
              help="Every tapped module passes TF's activation on instead of its own: each row "
                   "is then the error of the modules since the previous taps, without "
                   "accumulation.")
@click.option("--layer", help="Show this tap in detail: where the error peaks, border versus "
                              "interior, histogram.")
@click.option("--heatmap", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of the error map of --layer (else of the first divergence).")
@click.option("--json", "json_out", help="Write the comparison as JSON to this file ('-': to "
                                         "stdout, instead of the table).")
@click.option("--force", is_flag=True, help="Overwrite existing --json/--heatmap files.")
def port_diff(tf_builder, checkpoint, torch_spec, rules_spec, tap_specs, size, batch, channels,
              seed, isolate, layer, heatmap, json_out, force):
    """Compare your own PyTorch port (--torch) with your TF graph (--tf-builder) restored
    from --checkpoint, end_point by end_point, after converting the checkpoint onto the port
    with its mapping rules; explain the first divergence. This imports and runs the modules
    you name (your code), as python would. Needs TensorFlow.

    Exit status: 0 all within the tolerance table, 1 divergence, 2 usage error.
    """
    result = _run(tf_builder, checkpoint, torch_spec, rules_spec, tap_specs, size, batch,
                  channels, seed, layer, heatmap, json_out, force, isolate)
    if not result.passed:
        click.get_current_context().exit(EXIT_DIVERGED)

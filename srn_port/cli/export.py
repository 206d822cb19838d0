"""``srn-port export``: the model as ONNX or a torch.export program, for deployment."""

from __future__ import annotations

from pathlib import Path

import click

from .weights_arg import WeightsPath


@click.command("export")
@click.argument("weights", type=WeightsPath())
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--finest-only", is_flag=True,
              help="Output only the full-size level (default: the three level outputs).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def export(weights, out, finest_only, force):
    """Export WEIGHTS (converted file, TF checkpoint, Hub folder or hf://ORG/NAME) to OUT:
    .onnx (ONNX Runtime, TensorRT...) or .pt2 (torch.export). Dynamic batch, height and
    width (multiples of 16) with TF's padding and resize kept exact."""
    from ..api.deploy import export_model

    path = export_model(weights, out, finest_only=finest_only, force=force)
    click.echo(f"wrote {path} (dynamic batch, height and width: multiples of 16; "
               f"{'finest output' if finest_only else 'three level outputs'})")

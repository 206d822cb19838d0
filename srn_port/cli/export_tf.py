"""``srn-port export-tf``: converted weights back to a TF checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from .weights_arg import WeightsPath


@click.command("export-tf")
@click.argument("weights", type=WeightsPath())
@click.argument("outdir", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None,
              help="Global step of the checkpoint (its name deblur.model-STEP and its "
                   "'Variable'). Default: the step recorded in WEIGHTS, else 0.")
@click.option("--force", is_flag=True,
              help="Overwrite a checkpoint of the same step in OUTDIR.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def export_tf(weights, outdir, step, force, quiet):
    """Write srn-port WEIGHTS (.pt, .safetensors, a Hub folder or hf://ORG/NAME) as a TF V2
    checkpoint in OUTDIR.

    WEIGHTS may also be the train_state.pt of `srn-port train`: then the Adam slots
    (/Adam, /Adam_1), beta1_power/beta2_power and the step go along, so that the original
    TF code can continue the run.

    Writes OUTDIR/deblur.model-STEP.index and .data-00000-of-00001 with SRN-Deblur's
    variable names (g_net/...) and TF layouts, the int32 global step 'Variable', and the
    'checkpoint' file naming it, so the original code and tf.compat.v1.train.Saver restore
    it. TensorFlow is not needed; OUTDIR is created if missing.
    """
    from ..api.export_tf import export_tf as run
    from ..core.checkpoint import CheckpointReader

    prefix = run(weights, outdir, step=step, force=force)
    if not quiet:
        with CheckpointReader(prefix) as reader:  # read back: every checksum verified
            names = reader.keys()
            n_weights = sum(1 for n in names if n.startswith("g_net/"))
            step_value = int(reader.get_tensor("Variable"))
        click.echo(f"{weights}: {len(names)} variables ({n_weights} weights under g_net/, "
                   f"global step 'Variable' = {step_value})")
        click.echo(f"wrote {prefix}.index, {prefix.name}.data-00000-of-00001 and "
                   f"{prefix.parent / 'checkpoint'}")

"""``srn-port convert`` and ``srn-port inspect``."""

from __future__ import annotations

from pathlib import Path

import click



def _step_option(f):
    return click.option("--step", type=int, default=None,
                        help="With a checkpoint folder: use the checkpoint of this global step "
                             "(deblur.model-STEP) instead of the one named in its 'checkpoint' "
                             "file.")(f)


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@_step_option
@click.option("--variant", type=click.Choice(["color", "gray", "lstm"]), default=None,
              help="Insist on this variant; an error if the checkpoint is another. "
                   "Default: detected from the variables.")
@click.option("--ema", is_flag=True,
              help="Use the ExponentialMovingAverage shadow of each weight instead of the raw "
                   "weight (for checkpoints trained with EMA).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def convert(checkpoint, out, step, variant, ema, force, quiet):
    """Convert a TF SRN-Deblur CHECKPOINT to PyTorch weights OUT (.pt or .safetensors).

    CHECKPOINT is a checkpoint folder (its 'checkpoint' file names the checkpoint; or use
    --step) or a prefix such as checkpoints/color/deblur.model-523000. TensorFlow is not
    needed. Every variable must be an SRN weight or an optimizer/step variable that a
    named rule drops; anything else is an error and nothing is written.
    """
    from ..api.convert import convert as run

    conv = run(checkpoint, out, step=step, variant=variant, ema=ema, force=force)
    if not quiet:
        n_params = sum(a.size for a in conv.arrays.values())
        rules = {}
        for rule in conv.dropped.values():
            rules[rule] = rules.get(rule, 0) + 1
        dropped = ", ".join(f"{n} {r}" for r, n in sorted(rules.items())) or "none"
        click.echo(f"{conv.source}: SRN {conv.config.variant}, width {conv.config.width}, "
                   f"step {conv.step if conv.step is not None else 'unknown'}")
        click.echo(f"mapped {len(conv.mapped)} variables ({n_params:,} parameters); "
                   f"dropped: {dropped}")
        for note in conv.notes:
            click.echo(f"note: {note}")
        click.echo(f"wrote {out}")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@_step_option
@click.option("--ema", is_flag=True, help="Show the mapping that --ema would use.")
def inspect(checkpoint, step, ema):
    """List a TF CHECKPOINT's variables: shape, dtype, and the rule that takes each."""
    from ..core.checkpoint import CheckpointReader
    from ..core.naming import DROP_RULES, classify

    with CheckpointReader(checkpoint, step=step) as reader:
        names = reader.keys()
        classes = classify(names, ema=ema)
        infos = {n: reader.info(n) for n in names}
        click.echo(f"checkpoint {reader.prefix} ({len(names)} variables)")
        width = max((len(n) for n in names), default=10)
        for name in names:
            info = infos[name]
            dtype = info.tf_dtype.replace("DT_", "").lower()
            shape = "[" + ", ".join(str(d) for d in info.shape) + "]"
            if name in classes.mapped:
                what = f"-> {classes.mapped[name]}"
            elif name in classes.dropped:
                what = f"dropped ({classes.dropped[name]})"
            else:
                what = "UNKNOWN: not an SRN weight, no rule drops it"
            click.echo(f"  {name:<{width}}  {shape:<18} {dtype:<8} {what}")
        click.echo(f"{len(classes.mapped)} mapped, {len(classes.dropped)} dropped, "
                   f"{len(classes.unknown)} unknown")
        if classes.unknown:
            click.echo("rules: " + "; ".join(f"{r}: {why}" for r, _, why in DROP_RULES))
        _warn_dead_layers(reader, classes.mapped)


def _warn_dead_layers(reader, mapped) -> None:
    """One 'warning:' line per ReLU layer that can never train (srn_port.core.liveness)."""
    from ..core.liveness import zero_relu_layers
    from ..core.naming import tf_to_torch_tensor

    arrays = {torch_name: tf_to_torch_tensor(reader.get_tensor(tf_name))
              for tf_name, torch_name in mapped.items()}
    for z in zero_relu_layers(arrays):
        which = "all" if z.all_dead else f"{z.dead_channels} of"
        click.echo(f"warning: {z.layer}: {which} {z.channels} output channels have weights "
                   f"all 0 and a bias <= 0 before a ReLU: they output 0 and pass no gradient, "
                   f"so training cannot change them, nor what reaches the output only through "
                   f"them")

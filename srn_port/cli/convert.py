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
@click.argument("out", type=click.Path(path_type=Path))
@_step_option
@click.option("--variant", type=click.Choice(["color", "gray", "lstm"]), default=None,
              help="Insist on this variant; an error if the checkpoint is another. "
                   "Default: detected from the variables.")
@click.option("--ema", is_flag=True,
              help="Use the ExponentialMovingAverage shadow of each weight instead of the raw "
                   "weight (for checkpoints trained with EMA).")
@click.option("--hub", is_flag=True,
              help="Write OUT as a Hugging Face Hub folder: config.json, model.safetensors and "
                   "a model card (README.md) with the parity result of `srn-port diff` against "
                   "the checkpoint's golden file, when there is one.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def convert(checkpoint, out, step, variant, ema, hub, force, quiet):
    """Convert a TF SRN-Deblur CHECKPOINT to PyTorch weights OUT (.pt or .safetensors).

    CHECKPOINT is a checkpoint folder (its 'checkpoint' file names the checkpoint; or use
    --step) or a prefix such as checkpoints/color/deblur.model-523000. TensorFlow is not
    needed. Every variable must be an SRN weight or an optimizer/step variable that a
    named rule drops; anything else is an error and nothing is written.

    With --hub, OUT is a folder in the Hugging Face Hub layout, which every command's
    WEIGHTS, SRN.from_pretrained and `huggingface_hub` upload accept.
    """
    if hub:
        from ..api.convert import convert_to_hub

        conv = convert_to_hub(checkpoint, out, step=step, variant=variant, ema=ema,
                              force=force, parity=card_parity)
    else:
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


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def card_parity(conv, prefix: Path) -> str:
    """The model card's parity section: `srn-port diff`'s comparison of the converted
    weights with the golden file computed from this very checkpoint (same SHA-256 of its
    index and data files), run now; or why there is none."""
    from ..api.weights import as_state_dict
    from ..core.hubfolder import source_hashes
    from ..nn.model import SRN
    from ..parity import GoldenError, GoldenReference, compare, find_golden
    from ..parity.golden import read_golden_info

    config = conv.config
    how = (f"Check it against live TensorFlow with `srn-port diff FOLDER --tf CHECKPOINT` "
           f"(needs TensorFlow).")
    try:
        golden = find_golden(config)
    except GoldenError:
        return (f"No parity result is recorded here: srn-port has no golden file for an SRN "
                f"{config.variant} model of width {config.width}. {how}")
    info = read_golden_info(golden)
    ours = source_hashes(prefix)
    theirs = {k: v for k, v in info.checkpoint_sha256.items() if k != "checkpoint"}
    if not theirs or theirs != ours:
        return (f"No parity result is recorded here: the golden file of srn-port for SRN "
                f"{config.variant} width {config.width} (`{golden.name}`) was computed from "
                f"another checkpoint (other SHA-256), so it says nothing about these weights. "
                f"{how}")
    model = SRN(config)
    model.load_state_dict(as_state_dict(conv.arrays), strict=True)
    model.to_channels_last()
    model.eval()
    with GoldenReference(golden) as reference:
        result = compare(model, reference, model_name="the converted weights")
    g = reference.golden.info
    outputs = [r for r in result.rows if r.layer == "dec1_0"]
    lines = [f"`srn-port diff` of these weights against the golden file `{golden.name}` "
             f"(tensors of the TensorFlow original, TF {g.tf_version}, on the same checkpoint, "
             f"input {'x'.join(str(d) for d in g.input_shape)}), run at conversion by "
             f"srn-port {conv.metadata()['srn_port_version']}, fp32 on the CPU:", ""]
    if result.passed:
        lines.append(f"**PASS**: all {len(result.rows)} layer/level rows within srn-port's "
                     f"tolerance table.")
    else:
        f = result.first_divergence
        lines.append(f"**DIVERGED**: first at {f.layer}, level {f.level}: max relative error "
                     f"{_num(f.max_rel_err)} above the '{f.tolerance}' tolerance "
                     f"({f.tolerance_rel:g}).")
    wd = result.weight_differences
    if wd is not None:
        lines.append("Every weight tensor equals the checkpoint's." if not wd else
                     f"{len(wd)} weight tensor(s) differ from the checkpoint's.")
    lines += ["", "| level | output | max abs error | max rel error | tolerance (rel) | result |",
              "|---|---|---|---|---|---|"]
    for r in outputs:
        lines.append(f"| {r.level} | {'x'.join(str(d) for d in r.shape)} | "
                     f"{_num(r.max_abs_err)} | {_num(r.max_rel_err)} | {r.tolerance} "
                     f"{r.tolerance_rel:g} | {'pass' if r.passed else 'FAIL'} |")
    lines += ["", "Run it again with: `srn-port diff FOLDER`"]
    return "\n".join(lines)


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
            click.echo("rules: " + "; ".join(f"{r.reason}: {r.detail}" for r in DROP_RULES))
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


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, default=None,
              help="Create the repository private (if it does not exist yet).")
@click.option("--revision", default=None, help="Branch to commit to (default: main).")
@click.option("-m", "--message", default=None, help="Commit message.")
def publish(folder, repo_id, private, revision, message):
    """Upload the Hub FOLDER (written by `srn-port convert CKPT FOLDER --hub`) to the
    Hugging Face Hub repository REPO_ID (ORG/NAME), with huggingface_hub's upload_folder:
    its config.json, model.safetensors and README.md, checked first as loading checks them.
    Needs the 'hub' extra and a token (`hf auth login`)."""
    from ..core.hubfolder import publish as upload

    url = upload(folder, repo_id, private=private, revision=revision, message=message)
    click.echo(f"uploaded {folder} to hf://{repo_id}: {url}")

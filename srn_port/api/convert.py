"""Convert a TF checkpoint to a weights file: :func:`srn_port.core.convert.convert_checkpoint`
then a writer chosen by extension. A ``.safetensors`` conversion imports no torch.
:func:`convert_to_hub` writes a Hugging Face Hub folder instead."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from ..core.convert import Conversion, convert_checkpoint
from ..core.errors import SrnPortError
from ..core.fileio import input_clash
from ..core.hubfolder import (check_hub_output, hub_config, model_card, source_hashes,
                              write_hub_folder)
from ..core.weightfile import check_output_path, save_safetensors


def convert(path, out, step: Optional[int] = None, variant: Optional[str] = None,
            ema: bool = False, force: bool = False) -> Conversion:
    """Convert the checkpoint at ``path`` and write it to ``out`` (.pt or .safetensors)."""
    out = Path(out)
    kind = check_output_path(out, force)  # before the (slow) conversion, and when writing
    conv = convert_checkpoint(path, step=step, variant=variant, ema=ema)
    if kind == "safetensors":
        save_safetensors(conv.arrays, conv.metadata(), out, force=force)
    else:
        from .weights import save_weights  # torch, only where a .pt file is asked for

        save_weights(conv.arrays, conv.metadata(), out, force=force)
    return conv


def convert_to_hub(path, out, step: Optional[int] = None, variant: Optional[str] = None,
                   ema: bool = False, force: bool = False,
                   parity: Optional[Callable[[Conversion, Path], str]] = None) -> Conversion:
    """Convert the checkpoint at ``path`` into a Hub folder ``out`` (config.json,
    model.safetensors, README.md; :mod:`srn_port.core.hubfolder`), written atomically.
    ``parity(conversion, prefix)`` returns the model card's parity section (markdown); the
    command line passes one that runs ``srn-port diff``'s comparison (a layer above)."""
    out = Path(out)
    check_hub_output(out, force)  # before the conversion
    clash = input_clash(out, [path])
    if clash is not None:
        raise SrnPortError(f"Writing the folder '{out}' would write over or inside the "
                           f"checkpoint '{clash}', which srn-port never modifies (even with "
                           f"--force). Choose a folder outside it.")
    conv = convert_checkpoint(path, step=step, variant=variant, ema=ema)
    prefix = Path(conv.source)
    # a published folder names the checkpoint, not where it lay on this machine; its
    # SHA-256 identify it
    meta = dict(conv.metadata(), source=f"{prefix.parent.name}/{prefix.name}")
    config = hub_config(meta, source_hashes(prefix))
    text = parity(conv, prefix) if parity is not None else (
        "Not computed for this folder; check it with `srn-port diff FOLDER`.")
    card = model_card(config, text, converted_by=(
        f"`srn-port convert {prefix.parent.name}/{prefix.name} OUT --hub"
        f"{' --ema' if ema else ''}` (srn-port {config['srn_port_version']}), without "
        f"TensorFlow: srn-port reads the TF V2 checkpoint itself (index, data shards, every "
        f"checksum verified), maps all {len(conv.mapped)} SRN variables by name and drops the "
        f"{len(conv.dropped)} optimizer and step variables by named rules."))
    write_hub_folder(out, conv.arrays, meta, config, card, force=force)
    return conv

"""Convert a TF checkpoint to a weights file: :func:`srn_port.core.convert.convert_checkpoint`
then a writer chosen by extension. A ``.safetensors`` conversion imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..core.convert import Conversion, convert_checkpoint
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

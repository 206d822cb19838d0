"""Converted weights (.pt or .safetensors) -> a TF V2 checkpoint with the released names.

``.safetensors`` files are read without torch by :func:`srn_port.core.export.export_tf`;
``.pt`` files are read here with :func:`srn_port.api.weights.load_weights`, checked like
every other load, and handed to :func:`srn_port.core.export.export_arrays`. A
``train_state.pt`` of ``srn-port train`` also brings its Adam slots, beta powers and step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..core import export as core_export
from ..core.hubfolder import resolve_weights
from ..core.weightfile import check_shapes, config_from_metadata
from .train import STATE_FILE, read_training_state


def export_tf(weights, outdir, step: Optional[int] = None, force: bool = False) -> Path:
    """Write ``outdir/deblur.model-<step>`` (.index, .data-00000-of-00001) and the
    ``checkpoint`` file from an srn-port weights file; returns the checkpoint prefix.
    The step is ``step``, else the file's metadata 'step', else 0. A Hub folder or
    ``hf://org/name`` is its checked model.safetensors."""
    weights = resolve_weights(weights)
    if core_export.check_weights_path(weights) == "safetensors":
        return core_export.export_tf(weights, outdir, step=step, force=force)
    if weights.name == STATE_FILE:  # a training state: its Adam state goes along
        arrays, adam, meta = read_training_state(weights)
        check_shapes({k: v.shape for k, v in arrays.items()}, config_from_metadata(meta, weights),
                     weights)
        return core_export.export_arrays(arrays, outdir, step=step, metadata=meta, force=force,
                                         adam=adam)
    from .weights import load_weights

    sd, meta = load_weights(weights)
    config = config_from_metadata(meta, weights)
    check_shapes({k: tuple(v.shape) for k, v in sd.items()}, config, weights)
    arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in sd.items()}
    return core_export.export_arrays(arrays, outdir, step=step, metadata=meta, force=force)

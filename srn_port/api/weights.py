"""Weights files with torch: reading ``.pt`` and ``.safetensors`` into tensors, writing
``.pt``, and :func:`load_model`, the one loading policy every command uses.

The file format and everything that needs no torch is :mod:`srn_port.core.weightfile`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch

from ..core.convert import convert_checkpoint
from ..core.errors import ModelFileError
from ..core.fileio import atomic_write
from ..core.hubfolder import resolve_weights
from ..core.weightfile import (FORMAT, FORMAT_VERSION, NOT_SRN_PORT, SUFFIXES, check_output_path,
                               check_shapes, config_from_metadata, file_kind, load_safetensors,
                               save_safetensors)
from ..nn.model import SRN


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    return value.detach().cpu().contiguous().numpy()


def save_weights(state_dict: Mapping[str, Any], metadata: Mapping[str, Any], path,
                 force: bool = False) -> Path:
    """Write a model's weights (tensors or numpy arrays) as ``.pt`` or ``.safetensors``, by
    extension, atomically; refuses to overwrite unless ``force``."""
    path = Path(path)
    if check_output_path(path, force) == "safetensors":
        return save_safetensors({k: _as_numpy(v) for k, v in state_dict.items()}, metadata,
                                path, force)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": dict(metadata),
               "state_dict": {k: torch.as_tensor(_as_numpy(v)) for k, v in state_dict.items()}}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def _load_pt(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # torch's own message suggests weights_only=False, i.e. running the file's pickle
        # code: never advice to give about a file of unknown origin.
        raise ModelFileError(
            f"Cannot read '{path}' as srn-port weights: it is not a PyTorch file that loads "
            f"safely (weights_only: tensors and plain containers only), or it is damaged. "
            f"{NOT_SRN_PORT}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' is a PyTorch file but not srn-port weights "
                             f"(no 'format': '{FORMAT}' entry). {NOT_SRN_PORT}")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"'{path}' has srn-port weights format version {version!r}; "
                             f"this srn-port reads version {FORMAT_VERSION}. Convert the "
                             f"checkpoint again with this version.")
    sd, meta = payload.get("state_dict"), payload.get("metadata")
    if not isinstance(meta, dict):
        raise ModelFileError(f"'{path}': its 'metadata' entry is a {type(meta).__name__}, not "
                             f"a dict. The file is damaged or was edited; convert the "
                             f"checkpoint again.")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in sd.items()):
        raise ModelFileError(f"'{path}': its 'state_dict' entry is not a dict of named "
                             f"tensors (found {type(sd).__name__}). The file is damaged or was "
                             f"edited; convert the checkpoint again.")
    return dict(sd), dict(meta)


def load_weights(path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Read a converted file: (state_dict of tensors, metadata). Raises ModelFileError.
    A Hub folder or ``hf://org/name`` is read through its checked model.safetensors."""
    path = resolve_weights(path)
    if not path.is_file():
        raise ModelFileError(f"Weights file '{path}' does not exist (or is not a file). "
                             f"Create one with: srn-port convert CHECKPOINT {path.name}")
    if file_kind(path) == "torch":
        return _load_pt(path)
    arrays, meta = load_safetensors(path)  # checked against the width it claims
    return as_state_dict(arrays), meta


def load_model(path, device="cpu", step=None, channels_last: bool = True) -> SRN:
    """The SRN model of a converted file (.pt/.safetensors), in eval mode on ``device``.

    Anything else is taken for a TF checkpoint (folder or prefix) and converted in memory,
    so every command accepts either. ``model.metadata`` says where the weights came from.
    The file's tensors are checked against the variant and width it claims before the model
    is built. A Hub folder (config.json + model.safetensors, see
    :mod:`srn_port.core.hubfolder`) or ``hf://org/name`` is its model.safetensors, checked
    against the variant and width its config.json declares. ``channels_last`` (default)
    keeps activations in NHWC, the layout oneDNN/cuDNN convolutions run natively (measured
    1.2-1.5x faster on CPU); results agree with NCHW within the 'layer' tolerance (tests/test_parity_tf.py checks both against TF).
    """
    path = resolve_weights(path)
    if path.suffix.lower() in SUFFIXES:
        sd, meta = load_weights(path)
        config = config_from_metadata(meta, path)
        check_shapes({k: tuple(v.shape) for k, v in sd.items()}, config, path)
        bad = [k for k, v in sd.items() if not torch.isfinite(v).all()]
        if bad:
            raise ModelFileError(
                f"'{path}': weights hold NaN or infinite values ({', '.join(bad[:5])}"
                f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}), so the model would "
                f"output garbage (typically an all-black image). Convert a checkpoint of the "
                f"run from before it diverged.")
    else:
        conv = convert_checkpoint(path, step=step)
        sd = as_state_dict(conv.arrays)
        meta, config = conv.metadata(), conv.config
    model = SRN(config)
    model.load_state_dict(sd, strict=True)
    model.metadata = dict(meta)
    if channels_last:
        model.to_channels_last()
    return model.to(device).eval()


def as_state_dict(arrays: Mapping[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """numpy arrays (e.g. ``Conversion.arrays``) as torch tensors sharing their memory."""
    return {k: torch.from_numpy(v) for k, v in arrays.items()}

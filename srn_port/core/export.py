"""SRN weights -> a TF V2 checkpoint with the released variable names ("back to TF").

The inverse of :mod:`srn_port.core.convert`: PyTorch parameter names and layouts become
SRN-Deblur's variables (``enc1_2.conv1.weight`` [out, in, kh, kw] ->
``g_net/enc1_2/conv1/weights`` [kh, kw, in, out], by :mod:`srn_port.core.naming`), optionally
with Adam's slots (``<var>/Adam``, ``<var>/Adam_1``) and ``beta1_power``/``beta2_power``,
and the int32 global step ``Variable`` that SRN-Deblur's ``tf.Variable(0)`` saves as. The
checkpoint is written by the TF-free :mod:`srn_port.core.checkpoint.writer`, with the
``checkpoint`` state file, so SRN-Deblur's ``load()`` and a plain
``tf.compat.v1.train.Saver`` restore it. A ``.pt`` input needs torch:
:mod:`srn_port.api.export_tf` reads it, then calls :func:`export_arrays`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from .checkpoint.writer import (checkpoint_prefix, existing_files, read_checkpoint_state,
                                write_checkpoint, write_checkpoint_state)
from .errors import ModelFileError, SrnPortError
from .folderlock import FolderLock
from .naming import torch_to_tf_name, torch_to_tf_tensor
from .weightfile import SUFFIXES, file_kind, load_safetensors

#: The released checkpoints' prefix: ``deblur.model-<step>`` (SRN-Deblur's ``save()``).
MODEL_NAME = "deblur.model"
#: SRN-Deblur's global step, an unnamed ``tf.Variable(0, dtype=tf.int32)``.
STEP_VARIABLE = "Variable"
ADAM_SLOTS = (("m", "Adam"), ("v", "Adam_1"))
_INT32_MAX = 2**31 - 1


def _float32(name: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise SrnPortError(f"'{name}' is a {array.dtype} array; SRN weights and Adam moments "
                           f"are floating point.")
    array = np.asarray(array, dtype=np.float32, order="C")
    if not np.isfinite(array).all():
        raise SrnPortError(f"'{name}' holds NaN or infinite values; a checkpoint made from it "
                           f"would deblur to garbage. Export weights from before the run "
                           f"diverged.")
    return array


def check_step(step) -> int:
    """The global step as TF's int32 ``Variable`` can hold it, or a clear error."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise SrnPortError(f"The global step must be an integer, not {step!r}.")
    if not 0 <= int(step) <= _INT32_MAX:
        raise SrnPortError(f"The global step {step} does not fit SRN-Deblur's int32 step "
                           f"variable (0 to {_INT32_MAX}); pass another --step.")
    return int(step)


def tf_variables(arrays: Mapping[str, np.ndarray], adam: Optional[Mapping[str, Any]] = None,
                 step: Optional[int] = None) -> Dict[str, np.ndarray]:
    """TF variable name -> array (TF layout) for SRN weights ``arrays`` (PyTorch names and
    layout), sorted by name as the Saver stores them.

    ``adam``, if given, is ``{"m": {param: array}, "v": {param: array}, "beta1_power": float,
    "beta2_power": float}`` with the moments in PyTorch layout; it adds ``<var>/Adam`` (m),
    ``<var>/Adam_1`` (v) and the float32 scalars ``beta1_power``/``beta2_power``. ``step``
    adds the int32 scalar ``Variable``.
    """
    out: Dict[str, np.ndarray] = {}
    for param, value in arrays.items():
        out[torch_to_tf_name(param)] = torch_to_tf_tensor(_float32(param, value))
    if adam is not None:
        missing = [k for k in ("m", "v", "beta1_power", "beta2_power") if k not in adam]
        if missing:
            raise SrnPortError(f"The Adam state lacks {', '.join(missing)}; it needs 'm', 'v' "
                               f"(a moment per parameter), 'beta1_power' and 'beta2_power'.")
        for key, slot in ADAM_SLOTS:
            moments = adam[key]
            extra = sorted(set(moments) - set(arrays))
            lacking = sorted(set(arrays) - set(moments))
            if extra or lacking:
                raise SrnPortError(
                    f"The Adam '{key}' moments do not match the weights: "
                    f"{'missing ' + ', '.join(lacking[:5]) if lacking else ''}"
                    f"{'; ' if lacking and extra else ''}"
                    f"{'unknown ' + ', '.join(extra[:5]) if extra else ''}.")
            for param, value in arrays.items():
                moment = _float32(f"{key}[{param}]", moments[param])
                if moment.shape != np.shape(value):
                    raise SrnPortError(f"The Adam '{key}' moment of '{param}' has shape "
                                       f"{list(moment.shape)}; the weight's is "
                                       f"{list(np.shape(value))}.")
                out[f"{torch_to_tf_name(param)}/{slot}"] = torch_to_tf_tensor(moment)
        for key in ("beta1_power", "beta2_power"):
            out[key] = np.asarray(adam[key], dtype=np.float32).reshape(())
    if step is not None:
        out[STEP_VARIABLE] = np.asarray(check_step(step), dtype=np.int32)
    return dict(sorted(out.items()))


def _resolve_step(step, metadata: Optional[Mapping[str, Any]]) -> int:
    if step is None and metadata:
        step = metadata.get("step")
    return check_step(0 if step is None else step)


def _check_outdir(outdir: Path, prefix: Path, force: bool) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise SrnPortError(f"The output folder '{outdir}' is a file, not a folder. Give a "
                           f"folder (it is created if missing); the checkpoint is written "
                           f"into it as {MODEL_NAME}-STEP.")
    present = existing_files(prefix)
    if present and not force:
        raise SrnPortError(
            f"'{outdir}' already holds a checkpoint of step {prefix.name.rsplit('-', 1)[-1]} "
            f"({', '.join(p.name for p in present)}). Nothing was written; pass --force to "
            f"overwrite it, choose another --step, or another folder.")
    if not force:
        read_checkpoint_state(outdir)  # a damaged 'checkpoint' file: an error before writing


def export_arrays(arrays: Mapping[str, np.ndarray], outdir, step: Optional[int] = None,
                  metadata: Optional[Mapping[str, Any]] = None, force: bool = False,
                  adam: Optional[Mapping[str, Any]] = None) -> Path:
    """Write SRN weights ``arrays`` (PyTorch names/layout) as ``outdir/deblur.model-<step>``
    with its ``checkpoint`` state file; returns the prefix. The step is ``step``, else
    ``metadata['step']``, else 0, and is also stored as the ``Variable`` tensor. ``outdir``
    is created if missing. Everything is checked before anything is written."""
    outdir = Path(outdir)
    step = _resolve_step(step, metadata)
    prefix = checkpoint_prefix(outdir / MODEL_NAME, step)
    _check_outdir(outdir, prefix, force)
    tensors = tf_variables(arrays, adam=adam, step=step)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SrnPortError(f"Cannot create the output folder '{outdir}': "
                           f"{exc.strerror or exc}.") from None
    with FolderLock(outdir):  # one writer of the folder at a time
        _check_outdir(outdir, prefix, force)  # again: another run may have just written it
        written = write_checkpoint(outdir / MODEL_NAME, tensors, step=step, force=force)
        write_checkpoint_state(outdir, written.name, force=force)
    return written


def check_weights_path(path) -> str:
    """The kind ("torch" or "safetensors") of an existing weights file, or a clear error."""
    path = Path(path)
    if path.is_dir() or (path.suffix.lower() not in SUFFIXES and path.exists()):
        raise ModelFileError(
            f"'{path}' is not an srn-port weights file (.pt or .safetensors); export-tf turns "
            f"a file written by `srn-port convert` back into a TF checkpoint. A TF checkpoint "
            f"needs no export: it already is one.")
    kind = file_kind(path)
    if not path.is_file():
        raise ModelFileError(f"Weights file '{path}' does not exist (or is not a file). "
                             f"Create one with: srn-port convert CHECKPOINT {path.name}")
    return kind


def export_tf(weights_path, outdir, step: Optional[int] = None, force: bool = False) -> Path:
    """A ``.safetensors`` weights file -> ``outdir/deblur.model-<step>`` (see
    :func:`export_arrays`); returns the prefix. ``.pt`` files need torch: use
    :func:`srn_port.api.export_tf.export_tf`, which reads both."""
    if check_weights_path(weights_path) != "safetensors":
        raise SrnPortError(f"'{weights_path}' is a PyTorch file, which needs torch to read; "
                           f"use srn_port.api.export_tf.export_tf (or `srn-port export-tf`).")
    arrays, meta = load_safetensors(weights_path)
    return export_arrays(arrays, outdir, step=step, metadata=meta, force=force)

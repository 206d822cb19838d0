"""srn-port's converted weights files, the parts that need no torch.

Two kinds, by extension: ``.pt``/``.pth`` (a ``torch.save`` dict, read and written by
:mod:`srn_port.api.weights`) and ``.safetensors`` (written and read here with
``safetensors.numpy``, so that converting to it never imports torch). A ``.pt`` file is a
plain dict that ``torch.load(path, weights_only=True)`` accepts::

    {"format": "srn-port/weights", "format_version": 1,
     "metadata": {"variant": "color", "width": 32, "source": "...", "step": 523000, ...},
     "state_dict": {"enc1_1.weight": tensor, ...}}

A ``.safetensors`` file holds the same state_dict with the metadata as strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from .errors import ModelFileError, SrnPortError
from .fileio import atomic_write
from .network import SRNConfig, param_shapes

FORMAT = "srn-port/weights"
FORMAT_VERSION = 1
SUFFIXES = (".pt", ".pth", ".safetensors")
# safetensors metadata is str -> str; these keys are converted back on reading.
_INT_KEYS = ("width", "step", "format_version", "variables_mapped", "variables_dropped")
_BOOL_KEYS = ("ema",)
NOT_SRN_PORT = ("It is not a file written by `srn-port convert`; if it is a TensorFlow "
                "checkpoint, convert it first: srn-port convert CHECKPOINT_DIR out.pt")


def file_kind(path: Path) -> str:
    """``"torch"`` or ``"safetensors"`` by extension, or an error naming the choices."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise SrnPortError(
            f"'{path}' has extension '{suffix or '(none)'}'; srn-port weights files are .pt "
            f"(PyTorch) or .safetensors. Choose a name ending in one of {', '.join(SUFFIXES)}.")
    return "safetensors" if suffix == ".safetensors" else "torch"


def check_output_path(path: Path, force: bool) -> str:
    """Refuse a bad output name, a missing folder, or overwriting without ``force``;
    returns the file kind ("torch" or "safetensors")."""
    path = Path(path)
    kind = file_kind(path)
    if path.is_dir():
        raise SrnPortError(f"Output '{path}' is a folder; give a file name such as "
                           f"{path / 'model.pt'}.")
    if path.exists() and not force:
        raise SrnPortError(f"Output '{path}' already exists; pass force=True (--force) to "
                           f"overwrite it.")
    if not path.parent.is_dir():
        raise SrnPortError(f"Output folder '{path.parent}' does not exist; create it first.")
    return kind


def save_safetensors(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any],
                     path, force: bool = False) -> Path:
    """Write numpy arrays and metadata as an srn-port ``.safetensors`` file, atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    check_output_path(path, force)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    str_meta = {k: ("" if v is None else str(v)) for k, v in meta.items()}
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=str_meta))
    return path


def parse_safetensors_metadata(raw: Mapping[str, str], path) -> Dict[str, Any]:
    """The string metadata of a ``.safetensors`` file back to values; checks the format."""
    meta: Dict[str, Any] = dict(raw or {})
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' is a safetensors file but not srn-port weights "
                             f"(metadata lacks format={FORMAT}). {NOT_SRN_PORT}")
    for key in _INT_KEYS:
        value = meta.get(key)
        if value:
            try:
                meta[key] = int(value)
            except ValueError:
                raise ModelFileError(
                    f"'{path}': its metadata says {key}={value!r}, which is not an integer. "
                    f"The file is damaged or was not written by srn-port; convert the "
                    f"checkpoint again.") from None
        elif key in meta:
            meta[key] = None
    for key in _BOOL_KEYS:
        if key in meta:
            meta[key] = meta[key] == "True"
    meta.pop("format", None)
    version = meta.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ModelFileError(f"'{path}' has srn-port weights format version {version}; this "
                             f"srn-port reads version {FORMAT_VERSION}. Convert the checkpoint "
                             f"again with this version.")
    return meta


def config_from_metadata(meta: Mapping[str, Any], path) -> SRNConfig:
    """The model config a weights file's metadata claims, or a clear error."""
    if not isinstance(meta, Mapping):
        raise ModelFileError(f"'{path}': its metadata is a {type(meta).__name__}, not a "
                             f"mapping; convert the checkpoint again.")
    try:
        width = meta["width"]
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
            raise TypeError(f"width {width!r} is not an integer")
        return SRNConfig(variant=meta["variant"], width=int(width))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"'{path}' lacks a valid variant/width in its metadata ({exc}); "
                             f"convert the checkpoint again.") from None


def check_shapes(shapes: Mapping[str, Tuple[int, ...]], config: SRNConfig, path) -> None:
    """Every parameter of ``config`` present with its shape, nothing else: checked on the
    file's tensor shapes before a model is built (a file's metadata could claim any width)."""
    expected = param_shapes(config)
    missing = [k for k in expected if k not in shapes]
    extra = [k for k in shapes if k not in expected]
    wrong = [f"{k} {list(shapes[k])} (expected {list(s)})" for k, s in expected.items()
             if k in shapes and tuple(shapes[k]) != tuple(s)]
    if missing or extra or wrong:
        parts = []
        for what, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more"
                                                if len(items) > 5 else "")
                parts.append(f"{what}: {shown}")
        raise ModelFileError(
            f"'{path}' does not fit an SRN {config.variant} model of width {config.width}, "
            f"which its metadata claims ({'; '.join(parts)}). The file is damaged or was edited; "
            f"convert the checkpoint again.")


def open_safetensors(path, advice: str):
    """``safe_open`` on ``path`` (numpy), or a ModelFileError that ends with ``advice``."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="numpy")
    except Exception as exc:
        raise ModelFileError(f"Cannot read '{path}' as a safetensors file ({exc}). "
                             f"{advice}") from None


def read_header(f, path) -> Tuple[dict, Dict[str, Tuple[int, ...]]]:
    """(srn-port metadata, tensor name -> shape) of an open safetensors file, from its
    header alone (no tensor data is read)."""
    meta = parse_safetensors_metadata(f.metadata(), path)
    return meta, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def load_safetensors(path) -> tuple:
    """(arrays, metadata) of an srn-port ``.safetensors`` file, checked against the variant
    and width its metadata claims; no torch."""
    path = Path(path)
    with open_safetensors(path, NOT_SRN_PORT) as f:
        meta, shapes = read_header(f, path)
        config = config_from_metadata(meta, path)
        check_shapes(shapes, config, path)  # from the header: before any tensor is read
        try:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise ModelFileError(f"Cannot read the tensors of '{path}' ({exc}). The file is "
                                 f"damaged; convert the checkpoint again.") from None
    return arrays, meta

"""Golden files: the original TF graph's tensors, kept so parity is checked without TF.

``golden/<name>.h5`` (HDF5, written only by ``tools/make_golden.py``)::

    /input               the network input (float32, layout in the 'layout' attribute)
    /level0/<node>       every node of pyramid level 0 under its TF scope/tensor name
    /level1/..., /level2/...
    /outputs/level<i>    the three level outputs: HDF5 hard links to /level<i>/dec1_0,
                         so they are stored once

Root attributes hold the provenance (:data:`REQUIRED_ATTRS`): versions, seeds, width,
input shape, the command that made the file and the SHA-256 of every file of the TF
checkpoint it was computed from. That checkpoint lies at the path in the attribute
``checkpoint``, relative to the golden's folder (``ckpt/<name>`` for the generated ones).
A golden whose checkpoint files no longer have those hashes is stale: its tensors describe
other weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..core.network import N_LEVELS, SRNConfig
from ..core.errors import SrnPortError
from ..core.network import level_graph

FORMAT = "srn-port/golden"
#: Bump when the layout or the meaning of an attribute changes; older files are then stale.
FORMAT_VERSION = 1
#: Activations are stored as PyTorch lays them out (TF's NHWC transposed), so comparisons
#: need no transpose; the attribute makes the choice explicit for other readers.
LAYOUT = "NCHW"
GOLDEN_DIR_ENV = "SRN_PORT_GOLDEN_DIR"
MAKE_GOLDEN = "python tools/make_golden.py"
#: The generated goldens every checkout must have (one per released variant).
GENERATED = ("color", "gray", "lstm")
#: Goldens of committed checkpoints that were not generated (name -> checkpoint folder,
#: relative to the repository root): the trained example of examples/trained/.
FROM_CHECKPOINT = {"trained-color": "examples/trained/color"}
REQUIRED_ATTRS = ("format", "format_version", "layout", "name", "variant", "width",
                  "input_shape", "checkpoint", "checkpoint_sha256", "tf_version",
                  "tf_slim_version", "command", "regenerate")


class GoldenError(SrnPortError):
    """A golden file is missing, unreadable, stale or does not fit the model."""


def default_golden_dir() -> Path:
    """``$SRN_PORT_GOLDEN_DIR``, else the repository's ``golden/`` beside the package."""
    env = os.environ.get(GOLDEN_DIR_ENV)
    if env:
        return Path(env)
    import srn_port

    return Path(srn_port.__file__).resolve().parent.parent / "golden"


def regenerate_command(name: str, checkpoint: Optional[str] = None) -> str:
    """The command that (re)writes ``golden/<name>.h5``; run from the repository root.
    Without ``checkpoint``: the generated goldens by variant, any other by placeholder."""
    if checkpoint is None:
        if name in GENERATED:
            return f"{MAKE_GOLDEN} --variant {name}"
        checkpoint = FROM_CHECKPOINT.get(name, "CHECKPOINT_DIR")
    return f"{MAKE_GOLDEN} --checkpoint {checkpoint} --name {name}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_files(prefix: Path) -> List[Path]:
    """The files a checkpoint consists of: ``.index``, data shards, the ``checkpoint``
    state file of its folder (the ``.meta`` graph is not needed and not kept)."""
    prefix = Path(prefix)
    files = [prefix.with_name(prefix.name + ".index")]
    files += sorted(prefix.parent.glob(prefix.name + ".data-*-of-*"))
    state = prefix.parent / "checkpoint"
    if state.is_file():
        files.append(state)
    return files


def checkpoint_hashes(prefix: Path) -> Dict[str, str]:
    return {p.name: sha256_file(p) for p in checkpoint_files(prefix)}


@dataclass(frozen=True)
class GoldenInfo:
    """What a golden file says about itself (its root attributes)."""

    path: Path
    name: str
    config: SRNConfig
    input_shape: Tuple[int, ...]
    layout: str
    checkpoint: Optional[Path]  # resolved; None if the file names none
    checkpoint_sha256: Dict[str, str]
    tf_version: str
    tf_slim_version: str
    command: str
    regenerate: str
    attrs: Dict[str, object]

    def describe(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        return (f"{self.path} ({self.config.variant}, width {self.config.width}, input {shape}, "
                f"TF {self.tf_version})")


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _h5py():
    import h5py

    return h5py


#: HDF5 filters a golden may use: the ones built into HDF5 and h5py. Another filter id
#: makes HDF5 search its plugin folders for a shared library to load.
_BUILTIN_FILTERS = {"gzip", "shuffle", "fletcher32", "lzf", "scaleoffset", "szip"}


def _refuse_outside_references(f, path: Path) -> None:
    """A golden is one self-contained file: refuse external and soft links, datasets stored
    in other files (external storage) or assembled from them (virtual datasets), and
    filters outside :data:`_BUILTIN_FILTERS`, before any of them is followed or read."""
    h5py = _h5py()

    def refuse(name: str, what: str):
        raise GoldenError(
            f"'{path}' is refused: its entry '{name}' {what}. A golden file written by "
            f"{MAKE_GOLDEN} holds all its data itself; reading this one would open other "
            f"files on this machine. Regenerate the golden, or use the committed one.")

    def walk(group, prefix: str):
        for key in group.keys():
            name = f"{prefix}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                refuse(name, f"is a link into another file ('{link.filename}')")
            if isinstance(link, h5py.SoftLink):
                refuse(name, f"is a soft link (to '{link.path}')")
            obj = group[key]
            if isinstance(obj, h5py.Group):
                walk(obj, name)
            elif isinstance(obj, h5py.Dataset):
                if obj.external:
                    refuse(name, f"is stored in another file ({obj.external[0][0]!r})")
                if obj.is_virtual:
                    refuse(name, "is a virtual dataset assembled from other files")
                unknown = [str(k) for k in obj._filters if k not in _BUILTIN_FILTERS]
                if unknown:
                    refuse(name, f"needs the HDF5 filter {unknown[0]}, which HDF5 would load "
                                 f"as a plugin library")

    try:
        walk(f, "")
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise GoldenError(f"'{path}': its structure cannot be read ({type(exc).__name__}: "
                          f"{exc}). Regenerate it with {MAKE_GOLDEN}.") from None


class GoldenFile:
    """An open golden file, validated; tensors are read on access (bounded memory).

    ``verify_checkpoint``: check the SHA-256 of the checkpoint files the golden names
    (a mismatch means the golden is stale). A checkpoint that is absent is only an error
    with ``require_checkpoint`` (the golden's tensors can be used without it).
    """

    def __init__(self, path, verify_checkpoint: bool = True, require_checkpoint: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise GoldenError(f"Golden file '{self.path}' does not exist. Make it with: "
                              f"{regenerate_command(self.path.stem)}")
        h5py = _h5py()
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise GoldenError(
                f"'{self.path}' is not a readable HDF5 file ({exc}); it may be truncated or "
                f"corrupted. Restore it (git checkout -- {self.path}) or regenerate it: "
                f"{regenerate_command(self.path.stem)}") from None
        try:
            _refuse_outside_references(self._f, self.path)
            try:
                self.info = self._validate()
            except (TypeError, KeyError, ValueError, AttributeError, OSError) as exc:
                # a hand-edited structure (a group where a dataset belongs, a wrong type)
                raise self._stale(f"its structure cannot be read ({type(exc).__name__}: {exc})")
            if verify_checkpoint:
                self._verify_checkpoint(require_checkpoint)
        except BaseException:
            self._f.close()
            raise
        self.node_names = tuple(n.name for n in level_graph(self.info.config))

    # -- validation ------------------------------------------------------------------
    def _stale(self, why: str, regen: Optional[str] = None) -> GoldenError:
        return GoldenError(f"Golden file '{self.path}' is stale or damaged: {why}. Regenerate it "
                           f"with: {regen or regenerate_command(self.path.stem)}")

    def _validate(self) -> GoldenInfo:
        a = {k: _attr(v) for k, v in self._f.attrs.items()}
        if a.get("format") != FORMAT:
            raise GoldenError(f"'{self.path}' is an HDF5 file but not an srn-port golden (its "
                              f"'format' attribute is {a.get('format')!r}, expected {FORMAT!r}). "
                              f"Pass a file made by {MAKE_GOLDEN}.")
        regen = a.get("regenerate") or regenerate_command(self.path.stem)
        if a.get("format_version") != FORMAT_VERSION:
            raise self._stale(f"golden format version {a.get('format_version')}, this srn-port "
                              f"reads version {FORMAT_VERSION}", regen)
        missing = [k for k in REQUIRED_ATTRS if k not in a]
        if missing:
            raise self._stale(f"attributes {missing} are missing", regen)
        if a["layout"] != LAYOUT:
            raise self._stale(f"layout {a['layout']!r}, expected {LAYOUT!r}", regen)
        try:
            config = SRNConfig(a["variant"], int(a["width"]))
        except (ValueError, TypeError) as exc:
            raise self._stale(f"invalid variant/width ({exc})", regen) from None
        ckpt = a["checkpoint"]
        try:
            hashes = json.loads(a["checkpoint_sha256"]) if a["checkpoint_sha256"] else {}
        except ValueError:
            raise self._stale("attribute checkpoint_sha256 is not JSON", regen) from None
        info = GoldenInfo(
            path=self.path, name=str(a["name"]), config=config,
            input_shape=tuple(int(s) for s in a["input_shape"]), layout=a["layout"],
            checkpoint=(self.path.parent / ckpt) if ckpt else None, checkpoint_sha256=hashes,
            tf_version=str(a["tf_version"]), tf_slim_version=str(a["tf_slim_version"]),
            command=str(a["command"]), regenerate=regen, attrs=a)
        names = [n.name for n in level_graph(config)]
        if "input" not in self._f or tuple(self._f["input"].shape) != info.input_shape:
            raise self._stale("its /input dataset is missing or has the wrong shape", regen)
        for level in range(N_LEVELS):
            group = self._f.get(f"level{level}")
            absent = [n for n in names if group is None or n not in group]
            if absent:
                raise self._stale(f"level {level} lacks the tensors {absent}", regen)
        return info

    def checkpoint_prefix(self) -> Optional[Path]:
        """The checkpoint prefix inside the golden's checkpoint folder, if present."""
        ckpt = self.info.checkpoint
        if ckpt is None or not ckpt.exists():
            return None
        from ..core.checkpoint import resolve_checkpoint

        return resolve_checkpoint(ckpt)

    def _verify_checkpoint(self, require: bool) -> None:
        info = self.info
        if info.checkpoint is None or not info.checkpoint.exists():
            if require:
                raise self._stale(f"its checkpoint '{info.checkpoint}' does not exist",
                                  info.regenerate)
            return
        try:
            prefix = self.checkpoint_prefix()
        except SrnPortError as exc:
            raise self._stale(f"its checkpoint cannot be located ({exc})",
                              info.regenerate) from None
        found = checkpoint_hashes(prefix)
        if found != info.checkpoint_sha256:
            changed = sorted(k for k in set(found) | set(info.checkpoint_sha256)
                             if found.get(k) != info.checkpoint_sha256.get(k))
            raise self._stale(f"the checkpoint files {changed} in '{info.checkpoint}' do not have "
                              f"the SHA-256 recorded when the golden was made", info.regenerate)

    # -- tensors -----------------------------------------------------------------------
    def _read(self, key: str) -> torch.Tensor:
        """A dataset as a float32 tensor, its shape checked first (a compressed dataset could
        claim any size), and read errors (flipped bytes) reported as a damaged golden."""
        try:
            data = self._f[key]
            shape = tuple(data.shape)
            n, c, h, w = self.info.input_shape
            most_channels = 2 * 4 * 4 * self.info.config.width + 2 * c  # the ConvLSTM gates
            if (not isinstance(data, _h5py().Dataset) or len(shape) != 4 or shape[0] != n
                    or shape[1] > most_channels or shape[2] > h or shape[3] > w):
                raise ValueError(f"/{key} has shape {list(shape)}, not that of an activation of "
                                 f"a {list(self.info.input_shape)} input")
            return torch.from_numpy(np.asarray(data[...], dtype=np.float32))
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._stale(f"reading /{key} failed ({type(exc).__name__}: {exc})") from None

    def input(self) -> torch.Tensor:
        return self._read("input")

    def tensor(self, level: int, name: str) -> torch.Tensor:
        """One node's activation at one level (NCHW float32), read from disk now."""
        return self._read(f"level{level}/{name}")

    def output(self, level: int) -> torch.Tensor:
        return self._read(f"outputs/level{level}")

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_golden_info(path) -> GoldenInfo:
    """The validated attributes of a golden file (its checkpoint is not verified)."""
    with GoldenFile(path, verify_checkpoint=False) as g:
        return g.info


def list_goldens(directory: Optional[Path] = None) -> Tuple[List[GoldenInfo], List[str]]:
    """(valid goldens, one line per unreadable file) in ``directory``."""
    directory = Path(directory) if directory is not None else default_golden_dir()
    good, bad = [], []
    for path in sorted(directory.glob("*.h5")) if directory.is_dir() else []:
        try:
            good.append(read_golden_info(path))
        except SrnPortError as exc:
            bad.append(f"{path.name}: {str(exc).split('. ')[0]}")
    return good, bad


def find_golden(config: SRNConfig, directory: Optional[Path] = None) -> Path:
    """The one golden in ``directory`` whose variant and width are ``config``'s."""
    directory = Path(directory) if directory is not None else default_golden_dir()
    good, bad = list_goldens(directory)
    match = [g for g in good if g.config == config]
    if len(match) == 1:
        return match[0].path
    have = "\n".join(f"  {g.path.name}: {g.config.variant}, width {g.config.width}" for g in good)
    have += "".join(f"\n  {line} (unreadable)" for line in bad)
    have = have or "  (no golden files)"
    where = f"'{directory}'" + (f" (from ${GOLDEN_DIR_ENV})" if os.environ.get(GOLDEN_DIR_ENV)
                                else "")
    if not match:
        raise GoldenError(
            f"No golden file in {where} is for an SRN {config.variant} model of width "
            f"{config.width}, which is what WEIGHTS is. Found:\n{have}\nPass --golden FILE, "
            f"compare against live TensorFlow with --tf CHECKPOINT, or make a golden for your "
            f"checkpoint: "
            f"{MAKE_GOLDEN} --checkpoint CHECKPOINT_DIR --name NAME")
    names = ", ".join(g.path.name for g in match)
    raise GoldenError(f"Several golden files in {where} are for SRN {config.variant} width "
                      f"{config.width}: {names}. Choose one with --golden FILE.")

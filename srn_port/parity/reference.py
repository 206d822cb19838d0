"""What srn-port is compared against: a golden file, or the live TF graph.

Both give, one pyramid level at a time, every node's activation (NCHW float32 torch
tensors) and the level's feeds, so a comparison holds at most one level of reference
tensors: a golden reads each tensor from disk when asked; the TF reference runs one level
per ``session.run``, feeding the previous level's output and ConvLSTM state it kept, so no
level is computed twice and only the current level's activations are in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..core.network import SIZE_MULTIPLE, SRNConfig
from ..core.errors import SrnPortError
from ..core.network import OUTPUT_NODE, STATE_NODE, level_graph
from .golden import GoldenFile


class Reference:
    """Interface: ``config``, ``description``, ``checkpoint`` (the TF checkpoint prefix the
    reference was computed from, when available: the diagnosis compares weights with it),
    ``input()``, ``level(L)`` and ``feeds(L)``."""

    config: SRNConfig
    description: str
    checkpoint: Optional[Path] = None

    def input(self) -> torch.Tensor:
        raise NotImplementedError

    def level(self, level: int) -> Mapping[str, torch.Tensor]:
        """The level's activations by node name; loaded lazily or held for this level only."""
        raise NotImplementedError

    def feeds(self, level: int) -> Dict[str, torch.Tensor]:
        """The reference's own ``input``/``prev_output``/``prev_state`` for ``level``."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _initial_state(config: SRNConfig, x: torch.Tensor) -> Optional[torch.Tensor]:
    # The original starts the ConvLSTM from zeros; resized to level 0 they stay zeros.
    if not config.use_lstm:
        return None
    from ..core.network import level_size

    h, w = level_size(x.shape[-2], x.shape[-1], 0)
    return x.new_zeros(x.shape[0], 2 * config.lstm_features, h // 4, w // 4)


class _LazyLevel(Mapping):
    def __init__(self, names, load):
        self._names, self._load = tuple(names), load

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._load(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


class GoldenReference(Reference):
    """A golden file (see :mod:`srn_port.parity.golden`)."""

    def __init__(self, path, verify_checkpoint: bool = True):
        self.golden = GoldenFile(path, verify_checkpoint=verify_checkpoint)
        info = self.golden.info
        self.config = info.config
        self.description = f"golden {info.describe()}"
        self.checkpoint = self.golden.checkpoint_prefix()
        self._input = self.golden.input()

    def input(self) -> torch.Tensor:
        return self._input

    def level(self, level: int) -> Mapping[str, torch.Tensor]:
        return _LazyLevel(self.golden.node_names, lambda n: self.golden.tensor(level, n))

    def feeds(self, level: int) -> Dict[str, torch.Tensor]:
        x = self._input
        if level == 0:
            f = {"input": x, "prev_output": x, "prev_state": _initial_state(self.config, x)}
        else:
            f = {"input": x, "prev_output": self.golden.tensor(level - 1, OUTPUT_NODE),
                 "prev_state": (self.golden.tensor(level - 1, STATE_NODE)
                                if self.config.use_lstm else None)}
        return {k: v for k, v in f.items() if v is not None}

    def close(self) -> None:
        self.golden.close()


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


class TFReference(Reference):
    """The original graph under TF, restored from ``checkpoint``, on the NCHW input ``x``."""

    def __init__(self, checkpoint, config: SRNConfig, x: torch.Tensor,
                 threads: Optional[int] = None):
        from ..core.checkpoint import resolve_checkpoint
        from ..reference.graph import ReferenceModel

        self.config = config
        self.checkpoint = resolve_checkpoint(checkpoint)
        self._input = x.float().contiguous()
        self._x_nhwc = np.ascontiguousarray(self._input.numpy().transpose(0, 2, 3, 1))
        self.model = ReferenceModel(self.checkpoint, config, self._x_nhwc.shape, threads=threads)
        import tensorflow as tf

        self.description = (f"live TensorFlow {tf.__version__} on {self.checkpoint} "
                            f"(input {'x'.join(str(s) for s in x.shape)})")
        self._names = tuple(n.name for n in level_graph(config))
        # Level L is computed from the input and what level L-1 handed on (its output and
        # ConvLSTM state), fed in place of the tensors TF would otherwise recompute.
        self._handed_on: Dict[int, Dict[str, np.ndarray]] = {}
        self._current: Tuple[int, Dict[str, np.ndarray]] = (-1, {})

    def input(self) -> torch.Tensor:
        return self._input

    def _run_level(self, level: int) -> Dict[str, np.ndarray]:
        if self._current[0] == level:
            return self._current[1]
        if level > 0 and level - 1 not in self._handed_on:
            self._run_level(level - 1)
        rec = self.model.record
        feed = {self.model.inputs: self._x_nhwc}
        for name, value in self._handed_on.get(level - 1, {}).items():
            feed[rec[(level - 1, name)]] = value
        self._current = (-1, {})  # free the previous level before computing this one
        acts = self.model.sess.run({n: rec[(level, n)] for n in self._names}, feed_dict=feed)
        self._handed_on[level] = {n: acts[n] for n in (OUTPUT_NODE, STATE_NODE) if n in acts}
        self._handed_on.pop(level - 2, None)
        self._current = (level, acts)
        return acts

    def level(self, level: int) -> Mapping[str, torch.Tensor]:
        acts = self._run_level(level)
        return _LazyLevel(self._names, lambda n: _nchw(acts[n]))

    def feeds(self, level: int) -> Dict[str, torch.Tensor]:
        x = self._input
        if level == 0:
            f = {"input": x, "prev_output": x, "prev_state": _initial_state(self.config, x)}
            return {k: v for k, v in f.items() if v is not None}
        if level - 1 not in self._handed_on:
            self._run_level(level - 1)
        prev = self._handed_on[level - 1]
        f = {"input": x, "prev_output": _nchw(prev[OUTPUT_NODE])}
        if STATE_NODE in prev:
            f["prev_state"] = _nchw(prev[STATE_NODE])
        return f

    def close(self) -> None:
        self._current = (-1, {})
        self._handed_on.clear()
        self.model.close()


def checkpoint_config(path) -> Tuple[Path, SRNConfig]:
    """(prefix, variant/width) of a TF checkpoint, read without TF."""
    from ..core.checkpoint import CheckpointReader
    from ..core.naming import detect_config

    with CheckpointReader(path) as reader:
        shapes = {k: tuple(reader.info(k).shape) for k in reader.keys()}
        return reader.prefix, detect_config(shapes)


# -- inputs for live comparisons ----------------------------------------------------------
def parse_size(text: str) -> Tuple[int, int]:
    """``"HxW"`` -> (H, W), positive multiples of 16, or a clear SrnPortError."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise SrnPortError(f"--size must look like HxW, e.g. 64x96; got '{text}'.") from None
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise SrnPortError(f"--size {text}: height and width must be positive multiples of "
                           f"{SIZE_MULTIPLE} (level 0 is 1/4 size and is halved twice more); "
                           f"e.g. {max(16, -(-h // 16) * 16)}x{max(16, -(-w // 16) * 16)}.")
    return h, w


def batch_size(config: SRNConfig) -> int:
    """How the original runs a picture: colour as one RGB image, gray/lstm as the R, G, B
    planes in a batch of three."""
    return 1 if config.channels == 3 else 3


def random_input(config: SRNConfig, size: Tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Seeded uniform NCHW input in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size(config), config.channels, *size, generator=g)


def image_input(path, config: SRNConfig) -> Tuple[torch.Tensor, str]:
    """An image file as the network sees it: RGB / 255, colour as a batch of one, gray/lstm
    as the three planes in a batch of three; edge-padded at the bottom/right to multiples
    of 16 (as the original pads to its canvas). Returns (NCHW tensor, note)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SrnPortError(f"--input '{path}' could not be read as an image (cv2.imread "
                           f"failed). Pass a PNG/JPEG/BMP/TIFF file, or use --size HxW.")
    rgb = img[:, :, ::-1].astype(np.float32) / 255.0
    h, w = rgb.shape[:2]
    ph, pw = -(-h // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-w // SIZE_MULTIPLE) * SIZE_MULTIPLE
    note = ""
    if (ph, pw) != (h, w):
        rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        note = f"{path}: {h}x{w}, edge-padded to {ph}x{pw}"
    chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    x = chw[None] if config.channels == 3 else chw[:, None]
    return x.contiguous(), note

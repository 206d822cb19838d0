"""Training pairs (blurry, sharp) from image folders or the original's datalist, and the
original's per-pair preparation (docs/original-srn.md §4.1); no torch.

Two sources:

* a folder in the GoPro layout, ``<scene>/blur/NAME`` next to ``<scene>/sharp/NAME`` (the
  folder may also be one scene itself: ``blur/`` and ``sharp/`` directly inside);
* the original's datalist text file: one pair a line, **sharp path first**, then the blur
  path, relative to a root folder (the original's ``./training_set/``; here the list's own
  folder unless another root is given).

Every pair is checked before training starts, from the image headers only (bounded time
and memory): both files exist and are images, blur and sharp have the same size, and both
are at least the crop size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import SrnPortError
from ..core.options import IMAGE_EXTENSIONS
from .images import declared_size, read_image

#: ``tf.image.rgb_to_grayscale``'s weights (ITU-R BT.601), applied in float32.
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)
_LISTING = 5


def rgb_to_gray(x: np.ndarray) -> np.ndarray:
    """``tf.image.rgb_to_grayscale`` of an HxWx3 float32 image: HxWx1 float32."""
    return np.tensordot(x, GRAY_WEIGHTS, axes=([2], [0]))[:, :, None].astype(np.float32)


class DatasetError(SrnPortError):
    """A training or evaluation dataset that cannot be used as it is."""


@dataclass(frozen=True)
class Pair:
    blur: Path
    sharp: Path


def _few(items) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:_LISTING]) + (f" and {len(items) - _LISTING} more"
                                          if len(items) > _LISTING else "")


def _images(folder: Path) -> dict:
    return {p.name: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def find_pairs(root) -> List[Pair]:
    """Every (blur, sharp) pair of a GoPro-layout folder, sorted; a clear error for a folder
    without pairs or with files that have no partner."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset '{root}' is not a folder. Give a folder in the GoPro "
                           f"layout (<scene>/blur/*.png next to <scene>/sharp/*.png) or a "
                           f"datalist file with --datalist.")
    scenes = [root] if (root / "blur").is_dir() else sorted(
        d for d in root.iterdir() if d.is_dir() and (d / "blur").is_dir())
    pairs: List[Pair] = []
    unpaired: List[str] = []
    for scene in scenes:
        if not (scene / "sharp").is_dir():
            unpaired.append(f"{scene / 'blur'} (no sharp/ folder beside it)")
            continue
        blur, sharp = _images(scene / "blur"), _images(scene / "sharp")
        unpaired += [str(blur[n]) for n in sorted(set(blur) - set(sharp))]
        unpaired += [str(sharp[n]) for n in sorted(set(sharp) - set(blur))]
        pairs += [Pair(blur[n], sharp[n]) for n in sorted(set(blur) & set(sharp))]
    if unpaired:
        raise DatasetError(f"Dataset '{root}': {len(unpaired)} image(s) have no partner of the "
                           f"same name in the other folder: {_few(unpaired)}. Every "
                           f"<scene>/blur/NAME needs a <scene>/sharp/NAME; remove or complete "
                           f"them.")
    if not pairs:
        raise DatasetError(f"Dataset '{root}' holds no image pairs: expected <scene>/blur/NAME "
                           f"next to <scene>/sharp/NAME ({', '.join(IMAGE_EXTENSIONS)}).")
    return pairs


def read_datalist(path, root=None) -> List[Pair]:
    """The pairs of the original's datalist: ``sharp blur`` per line (blank lines and ``#``
    comments skipped), relative to ``root`` (default: the list's folder)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read the datalist '{path}' ({exc}).") from None
    pairs, bad = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            bad.append(f"line {number}: {line[:60]!r}")
            continue
        sharp, blur = fields
        pairs.append(Pair(root / blur, root / sharp))
    if bad:
        raise DatasetError(f"Datalist '{path}': {len(bad)} line(s) are not 'SHARP_PATH "
                           f"BLUR_PATH' (two paths, ground truth first, as the original's "
                           f"datalist): {_few(bad)}.")
    if not pairs:
        raise DatasetError(f"Datalist '{path}' lists no pairs.")
    return pairs


def check_pairs(pairs: Sequence[Pair], crop: Optional[int] = None) -> None:
    """Each pair readable, blur and sharp the same size, both at least ``crop`` on each side;
    from the headers only. Raises one DatasetError listing the problems."""
    problems = []
    for pair in pairs:
        sizes = []
        for path in (pair.blur, pair.sharp):
            if not path.is_file():
                problems.append(f"{path}: missing (or not a regular file)")
                break
            with open(path, "rb") as f:
                head = f.read(1 << 16)
            size = declared_size(head)
            if size is None:
                try:
                    size = read_image(path).shape[1::-1]
                except SrnPortError as exc:
                    problems.append(f"{path}: unreadable ({exc})")
                    break
            sizes.append(tuple(size))
        if len(sizes) < 2:
            continue
        if sizes[0] != sizes[1]:
            problems.append(f"{pair.blur} is {sizes[0][0]}x{sizes[0][1]} but {pair.sharp} is "
                            f"{sizes[1][0]}x{sizes[1][1]} (width x height)")
        elif crop is not None and min(sizes[0]) < crop:
            problems.append(f"{pair.blur}: {sizes[0][0]}x{sizes[0][1]} is smaller than the "
                            f"{crop}x{crop} crop")
    if problems:
        raise DatasetError(f"{len(problems)} of {len(pairs)} pair(s) cannot be used: "
                           f"{_few(problems)}. Fix or remove them (or choose a smaller --crop) "
                           f"before training; nothing was trained.")


def load_pair(pair: Pair, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """(blur, sharp) as float32 HxWxC in [0, 1], as the original decodes them (3 channels,
    /255; gray/lstm models: TF's rgb_to_grayscale, before cropping)."""
    out = []
    for path in (pair.blur, pair.sharp):
        image = read_image(path)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = image[:, :, :3]
        scale = np.float32(255.0 if image.dtype == np.uint8 else 65535.0)
        x = image.astype(np.float32) / scale
        if channels == 1:
            x = rgb_to_gray(x)
        out.append(np.ascontiguousarray(x))
    return out[0], out[1]


def random_crop(blur: np.ndarray, sharp: np.ndarray, crop: int,
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The same random ``crop`` x ``crop`` window of blur and sharp (the original's one
    ``tf.random_crop`` of the stacked pair)."""
    h, w = blur.shape[:2]
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    return (np.ascontiguousarray(blur[y:y + crop, x:x + crop]),
            np.ascontiguousarray(sharp[y:y + crop, x:x + crop]))

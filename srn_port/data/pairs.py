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

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core import limits
from ..core.errors import SrnPortError
from ..core.fileio import regular_file_size
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


def _unreadable(path: Path) -> Optional[str]:
    """Why ``path`` (an entry of a folder) cannot be read, or None: a dangling link, a link
    loop, no permission."""
    try:
        os.stat(path)
    except OSError as exc:
        kind = ("a symbolic link loop" if exc.errno == errno.ELOOP else
                "a dangling symbolic link" if path.is_symlink() else exc.strerror or str(exc))
        return f"{path} ({kind})"
    return None


def _images(folder: Path, problems: List[str], left_out: dict) -> dict:
    """Image name -> path in ``folder``; entries that cannot be read go to ``problems``,
    files without an image extension (and sub-folders) to ``left_out["files"]``."""
    out = {}
    for p in sorted(folder.iterdir()):
        why = _unreadable(p)
        if why is not None:
            problems.append(why)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            out[p.name] = p
        else:
            left_out.setdefault("files", []).append(str(p))
    return out


def _subfolder(folder: Path, name: str, problems: List[str]) -> Optional[Path]:
    """``folder/name`` if it is a folder; a folder of that name in another case (``Blur/``)
    is a problem, since the layout's names are case-sensitive."""
    if (folder / name).is_dir():
        return folder / name
    try:
        near = [d.name for d in folder.iterdir() if d.name.lower() == name and d.is_dir()]
    except OSError:
        near = []
    if near:
        problems.append(f"{folder / near[0]} (the folder must be named '{name}', in lower case)")
    return None


def find_pairs(root, left_out: Optional[dict] = None) -> List[Pair]:
    """Every (blur, sharp) pair of a GoPro-layout folder, sorted; a clear error for a folder
    without pairs, with files that have no partner or cannot be read (dangling links, link
    loops), with a scene that has only one of blur/ and sharp/ (or ``Blur/``: the names are
    case-sensitive), or with a root that is a scene itself *and* holds scene folders.

    What is left out without being an error is recorded in ``left_out`` (when given):
    ``"folders"``, the folders that are not scenes (nor blur/ or sharp/ of one), and
    ``"files"``, the files that are not images; :func:`left_out_notes` words them."""
    root = Path(root)
    left_out = {} if left_out is None else left_out
    left_out.setdefault("folders", [])
    left_out.setdefault("files", [])
    if not root.is_dir():
        raise DatasetError(f"Dataset '{root}' is not a folder. Give a folder in the GoPro "
                           f"layout (<scene>/blur/*.png next to <scene>/sharp/*.png) or a "
                           f"datalist file with --datalist.")
    problems: List[str] = []
    entries = sorted(root.iterdir())
    sub = {}  # folder -> (blur, sharp) folders found in it
    for d in [root] + entries:
        why = None if d is root else _unreadable(d)
        if why is not None:
            problems.append(why)
            continue
        if d.is_dir():
            sub[d] = (_subfolder(d, "blur", problems), _subfolder(d, "sharp", problems))
    root_is_scene = any(sub[root])
    inner = [d for d in entries if d in sub and any(sub[d])]
    if root_is_scene and inner:
        problems.append(f"{root} holds blur/ or sharp/ itself and also scene folders "
                        f"({_few(d.name for d in inner)}); give one layout: either the scene "
                        f"itself or a folder of scenes")
    scenes = [root] if root_is_scene else inner
    for d in entries:
        if d not in sub:
            if _unreadable(d) is None:
                left_out["files"].append(str(d))
        elif root_is_scene:
            if d.name not in ("blur", "sharp"):
                left_out["folders"].append(str(d))
        elif d not in inner:
            left_out["folders"].append(str(d))
    pairs: List[Pair] = []
    unpaired: List[str] = []
    for scene in scenes:
        blur_dir, sharp_dir = sub[scene]
        if scene is not root:
            for d in sorted(scene.iterdir()):
                if d.name.lower() in ("blur", "sharp"):
                    continue  # the scene's own (or a misnamed one, already a problem)
                why = _unreadable(d)
                if why is not None:
                    problems.append(why)
                else:
                    left_out["folders" if d.is_dir() else "files"].append(str(d))
        if blur_dir is None or sharp_dir is None:
            have, lack = ("blur", "sharp") if blur_dir is not None else ("sharp", "blur")
            if blur_dir is not None or sharp_dir is not None:
                problems.append(f"{scene / have} (no {lack}/ folder beside it)")
            continue
        blur = _images(blur_dir, problems, left_out)
        sharp = _images(sharp_dir, problems, left_out)
        unpaired += [str(blur[n]) for n in sorted(set(blur) - set(sharp))]
        unpaired += [str(sharp[n]) for n in sorted(set(sharp) - set(blur))]
        pairs += [Pair(blur[n], sharp[n]) for n in sorted(set(blur) & set(sharp))]
    if problems or unpaired:
        parts = []
        if problems:
            parts.append(f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} cannot "
                         f"be used: {_few(problems)}")
        if unpaired:
            parts.append(f"{len(unpaired)} image(s) have no partner of the same name in the "
                         f"other folder: {_few(unpaired)}")
        raise DatasetError(f"Dataset '{root}': {'; '.join(parts)}. Every <scene>/blur/NAME "
                           f"needs a readable <scene>/sharp/NAME; fix, complete or remove "
                           f"them. Nothing ran: a dataset is used whole or not at all.")
    if not pairs:
        raise DatasetError(f"Dataset '{root}' holds no image pairs: expected <scene>/blur/NAME "
                           f"next to <scene>/sharp/NAME ({', '.join(IMAGE_EXTENSIONS)}).")
    return pairs


def left_out_notes(root, left_out: dict) -> List[str]:
    """One note per kind of entry :func:`find_pairs` left out (none when nothing was)."""
    notes = []
    folders, files = left_out.get("folders", []), left_out.get("files", [])
    if folders:
        notes.append(f"note: dataset '{root}': left out {len(folders)} folder(s) that are not "
                     f"scenes nor a scene's blur/ or sharp/: {_few(folders)}")
    if files:
        notes.append(f"note: dataset '{root}': left out {len(files)} file(s) that are not "
                     f"images in a blur/ or sharp/ folder ({', '.join(IMAGE_EXTENSIONS)}): "
                     f"{_few(files)}")
    return notes


def left_out_summary(left_out: dict) -> str:
    """``"left out 2 folder(s), 3 file(s)"`` for a summary line ("" when nothing was)."""
    counts = [f"{len(left_out[k])} {k[:-1]}(s)" for k in ("folders", "files")
              if left_out.get(k)]
    return f"left out {', '.join(counts)}" if counts else ""


def read_datalist(path, root=None) -> List[Pair]:
    """The pairs of the original's datalist: ``sharp blur`` per line (blank lines and ``#``
    comments skipped), relative to ``root`` (default: the list's folder). Read line by line;
    a list larger than :data:`srn_port.core.limits.DATALIST_BYTES` is refused unread."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    most = limits.DATALIST_BYTES.value()
    try:
        size = regular_file_size(path, "datalist")
    except SrnPortError as exc:
        raise DatasetError(str(exc)) from None
    if size > most:
        raise DatasetError(f"The datalist '{path}' is {size:,} bytes, more than the limit of "
                           f"{most:,} bytes (about {most // 100:,} pairs); if it is really a "
                           f"datalist, raise the limit with {limits.DATALIST_BYTES.env}=N.")
    pairs, bad, shown = [], 0, []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.split()
                if len(fields) != 2:
                    bad += 1
                    if len(shown) < _LISTING:
                        shown.append(f"line {number}: {line[:60]!r}")
                    continue
                sharp, blur = fields
                pairs.append(Pair(root / blur, root / sharp))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read the datalist '{path}' ({exc}).") from None
    except MemoryError:
        pairs = None  # let the message be built
        raise DatasetError(f"The datalist '{path}' ({size:,} bytes) lists more pairs than fit "
                           f"in memory. Split it, or lower {limits.DATALIST_BYTES.env} so that "
                           f"lists this large are refused unread.") from None
    if bad:
        more = f" and {bad - len(shown)} more" if bad > len(shown) else ""
        raise DatasetError(f"Datalist '{path}': {bad} line(s) are not 'SHARP_PATH "
                           f"BLUR_PATH' (two paths, ground truth first, as the original's "
                           f"datalist): {', '.join(shown)}{more}.")
    if not pairs:
        raise DatasetError(f"Datalist '{path}' lists no pairs.")
    return pairs


def check_pairs(pairs: Sequence[Pair], crop: Optional[int] = None,
                advice: Optional[str] = None) -> None:
    """Each pair readable, blur and sharp the same size, both at least ``crop`` on each side;
    from the headers only. Raises one DatasetError listing the problems, ending with
    ``advice`` (default: training's, which names --crop)."""
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
        if advice is None:
            advice = ("Fix or remove them (or choose a smaller --crop) before training; "
                      "nothing was trained.")
        raise DatasetError(f"{len(problems)} of {len(pairs)} pair(s) cannot be used: "
                           f"{_few(problems)}. {advice}")


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

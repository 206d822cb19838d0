"""Evaluate a model on (blurry, sharp) pairs the way the SRN-Deblur paper did: deblur each
blurry image with the same pipeline as ``srn-port deblur`` (8-bit output, as it would be
saved), then MATLAB's ``psnr`` and ``ssim`` on the whole RGB image against the sharp one
(:mod:`srn_port.data.metrics`). The blurry input is scored too, for the gain."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.errors import SrnPortError
from ..data.metrics import psnr, ssim
from ..data.pairs import DatasetError, Pair, check_pairs, find_pairs, read_datalist
from ..data.images import read_image
from .deblur import deblur_image

#: Columns of the per-image CSV, in order.
FIELDS = ("index", "scene", "name", "psnr", "ssim", "input_psnr", "input_ssim", "seconds")


@dataclass
class Score:
    index: int  # position in the dataset's sorted pair list
    scene: str
    name: str
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    seconds: float  # deblurring this image (reading and scoring not included)


def scene_of(pair: Pair) -> str:
    """The GoPro scene of a pair: the folder holding its ``blur/`` folder."""
    return pair.blur.parent.parent.name


def dataset_pairs(dataset, root=None, scenes: Optional[Sequence[str]] = None,
                  limit: Optional[int] = None, left_out: Optional[dict] = None) -> List[Pair]:
    """The pairs of ``dataset`` (a GoPro-layout folder, or a datalist file relative to
    ``root``, default its folder), restricted to ``scenes`` and then to the first ``limit``;
    every pair checked (from the image headers) to exist with equal blur and sharp sizes.
    ``left_out``: see :func:`srn_port.data.pairs.find_pairs`."""
    dataset = Path(dataset)
    if dataset.is_dir():
        pairs = find_pairs(dataset, left_out)
    elif dataset.exists():  # read_datalist refuses what is not a regular file
        pairs = read_datalist(dataset, root)
    else:
        raise DatasetError(f"Dataset '{dataset}' does not exist. Give a folder in the GoPro "
                           f"layout (<scene>/blur/NAME next to <scene>/sharp/NAME) or a "
                           f"datalist file ('SHARP BLUR' paths per line).")
    if scenes:
        known = sorted({scene_of(p) for p in pairs})
        missing = [s for s in scenes if s not in known]
        if missing:
            raise DatasetError(f"Dataset '{dataset}' has no scene(s) {', '.join(missing)}; "
                               f"its scenes are: {', '.join(known[:20])}"
                               f"{' ...' if len(known) > 20 else ''}.")
        pairs = [p for p in pairs if scene_of(p) in scenes]
    if limit is not None:
        pairs = pairs[:limit]
    check_pairs(pairs, advice="Fix or remove them (or leave them out with --scenes or "
                              "--limit); nothing was evaluated.")
    return pairs


def _rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype != np.uint8:
        raise DatasetError(f"'{path}' is {image.dtype}; the paper's metrics are defined on "
                           f"8-bit images (peak 255). Convert the dataset to 8-bit PNGs.")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]


def score_pair(model, pair: Pair, index: int, max_pixels: Optional[int] = None,
               **deblur_options) -> Score:
    """Deblur ``pair.blur`` and score it and the blurry input against ``pair.sharp``."""
    blur = _rgb8(read_image(pair.blur, max_pixels=max_pixels), pair.blur)
    sharp = _rgb8(read_image(pair.sharp, max_pixels=max_pixels), pair.sharp)
    if blur.shape != sharp.shape:
        raise DatasetError(f"'{pair.blur}' is {blur.shape[1]}x{blur.shape[0]} but "
                           f"'{pair.sharp}' is {sharp.shape[1]}x{sharp.shape[0]}.")
    start = time.perf_counter()
    out = deblur_image(model, blur, **deblur_options)
    seconds = time.perf_counter() - start
    return Score(index, scene_of(pair), pair.blur.name, psnr(out, sharp), ssim(out, sharp),
                 psnr(blur, sharp), ssim(blur, sharp), seconds)


def evaluate(model, pairs: Sequence[Pair], indices: Optional[Sequence[int]] = None,
             progress: Optional[Callable[[Score], None]] = None, max_pixels=None,
             **deblur_options) -> List[Score]:
    """Scores of ``pairs`` (at dataset positions ``indices``, default 0, 1, ...) in order;
    ``deblur_options`` go to :func:`srn_port.api.deblur.deblur_image`."""
    indices = range(len(pairs)) if indices is None else indices
    scores = []
    for index, pair in zip(indices, pairs):
        scores.append(score_pair(model, pair, index, max_pixels=max_pixels, **deblur_options))
        if progress is not None:
            progress(scores[-1])
    return scores


def summarize(scores: Sequence[Score]) -> Dict[str, float]:
    """Means over the images (the paper's numbers), and per scene."""
    if not scores:
        raise SrnPortError("No images were scored.")

    def means(rows):
        return {"images": len(rows),
                "psnr": float(np.mean([r.psnr for r in rows])),
                "ssim": float(np.mean([r.ssim for r in rows])),
                "input_psnr": float(np.mean([r.input_psnr for r in rows])),
                "input_ssim": float(np.mean([r.input_ssim for r in rows])),
                "seconds_per_image": float(np.mean([r.seconds for r in rows]))}

    summary = means(scores)
    scenes = sorted({r.scene for r in scores})
    if len(scenes) > 1:
        summary["scenes"] = {s: means([r for r in scores if r.scene == s]) for s in scenes}
    if any(math.isinf(r.psnr) for r in scores):
        summary["note"] = "some outputs equal their sharp image exactly (PSNR inf)"
    return summary


def csv_text(scores: Sequence[Score]) -> str:
    """The per-image table, in dataset order (floats to 6 decimals)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FIELDS)
    for s in sorted(scores, key=lambda r: r.index):
        row = asdict(s)
        writer.writerow([f"{row[f]:.6f}" if isinstance(row[f], float) else row[f]
                         for f in FIELDS])
    return buf.getvalue()

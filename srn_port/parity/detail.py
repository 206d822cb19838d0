"""One layer's error in detail: where it peaks, how it sits on the border, its histogram,
and a heatmap picture. Padding mistakes live on the border; a shift or a wrong weight is
everywhere; round-off is a thin spread of tiny values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..core.errors import SrnPortError
from ..core.fileio import atomic_write

#: Border rings reported one by one (distance 0 = the outermost row/column); pixels at this
#: distance or more from every edge are "interior". A 5x5 'SAME' convolution reaches 2
#: pixels in, so a padding error spreads about 2 pixels per layer.
BORDER_RINGS = 4
#: Histogram of |error| / max |reference| in decades: 0, (0, 1e-8], ..., (0.1, 1], > 1.
HIST_EDGES = tuple(10.0 ** e for e in range(-8, 1))


@dataclass
class RingStats:
    where: str  # "0 px from the edge", ..., "interior (>= 4 px)", "top row", ...
    positions: int  # spatial positions (each has batch x channels values)
    max_abs_err: float
    mean_abs_err: float


@dataclass
class HistogramBin:
    label: str
    lo: float
    hi: float
    count: int


@dataclass
class LayerDetail:
    level: int
    layer: str
    shape: Tuple[int, ...]
    tolerance: str
    passed: bool
    max_abs_err: float
    max_abs_ref: float
    max_at: Tuple[int, int, int, int]  # (batch, channel, row, column) of the largest error
    ours_at_max: float
    ref_at_max: float
    rings: List[RingStats]  # by distance from the nearest edge, then interior
    sides: List[RingStats]  # outermost top row, bottom row, left column, right column
    border_error_share: float  # share of the summed |error| within BORDER_RINGS of an edge
    border_position_share: float  # share of the positions there
    histogram: List[HistogramBin]
    channel_max_abs_err: List[float]
    error_map: Optional[np.ndarray] = field(default=None, repr=False)  # HxW, max over N, C


def layer_detail(level: int, layer: str, ours: torch.Tensor, ref: torch.Tensor,
                 tolerance: str, passed: bool) -> LayerDetail:
    d = (ours.float() - ref.float()).abs()
    n, c, h, w = d.shape
    flat = int(torch.argmax(d))
    at = tuple(int(v) for v in np.unravel_index(flat, d.shape))
    per_pos_sum = d.sum(dim=(0, 1), dtype=torch.float64)  # HxW
    per_pos_max = d.amax(dim=(0, 1))
    rows = torch.arange(h).view(-1, 1)
    cols = torch.arange(w).view(1, -1)
    dist = torch.minimum(torch.minimum(rows, h - 1 - rows), torch.minimum(cols, w - 1 - cols))

    def stats(where, mask) -> RingStats:
        k = int(mask.sum())
        if k == 0:
            return RingStats(where, 0, 0.0, 0.0)
        return RingStats(where, k, float(per_pos_max[mask].max()),
                         float(per_pos_sum[mask].sum() / (k * n * c)))

    rings = [stats(f"{r} px from the edge", dist == r) for r in range(BORDER_RINGS)]
    rings.append(stats(f"interior (>= {BORDER_RINGS} px)", dist >= BORDER_RINGS))
    edge = torch.zeros(h, w, dtype=torch.bool)
    sides = []
    for label, sl in (("top row", (0, slice(None))), ("bottom row", (h - 1, slice(None))),
                      ("left column", (slice(None), 0)), ("right column", (slice(None), w - 1))):
        m = edge.clone()
        m[sl] = True
        sides.append(stats(label, m))
    border = dist < BORDER_RINGS
    total = float(per_pos_sum.sum())
    max_ref = float(ref.abs().max()) if ref.numel() else 0.0
    scale = max_ref if max_ref > 0 else 1.0
    nz = d[d > 0] / scale
    bounds = torch.tensor(HIST_EDGES, dtype=nz.dtype)
    idx = torch.bucketize(nz, bounds)  # i: HIST_EDGES[i-1] < v <= HIST_EDGES[i]
    counts = torch.bincount(idx, minlength=len(HIST_EDGES) + 1).tolist()
    hist = [HistogramBin("0 (exact)", 0.0, 0.0, int((d == 0).sum()))]
    lo = 0.0
    for i, hi in enumerate(list(HIST_EDGES) + [float("inf")]):
        label = f"({lo:.0e}, {hi:.0e}]" if np.isfinite(hi) else f"> {lo:.0e}"
        hist.append(HistogramBin(label.replace("0e+00", "0"), lo, hi, int(counts[i])))
        lo = hi
    return LayerDetail(
        level=level, layer=layer, shape=tuple(d.shape), tolerance=tolerance, passed=passed,
        max_abs_err=float(d.max()), max_abs_ref=max_ref, max_at=at,
        ours_at_max=float(ours[at]), ref_at_max=float(ref[at]), rings=rings, sides=sides,
        border_error_share=float(per_pos_sum[border].sum()) / total if total > 0 else 0.0,
        border_position_share=float(border.sum()) / (h * w),
        histogram=hist, channel_max_abs_err=[float(v) for v in d.amax(dim=(0, 2, 3))],
        error_map=per_pos_max.numpy().copy())


def write_heatmap(detail: LayerDetail, path) -> Path:
    """PNG of the per-pixel error (max over batch and channels), colour map 'inferno' from 0
    (black) to the layer's max error (yellow), scaled up so small maps stay visible, with a
    scale bar. Written atomically."""
    import cv2

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise SrnPortError(f"--heatmap '{path}': the heatmap is a PNG; give a name ending in .png.")
    if not path.parent.is_dir():
        raise SrnPortError(f"--heatmap '{path}': folder '{path.parent}' does not exist.")
    emap = detail.error_map
    peak = float(emap.max()) if emap.size else 0.0
    norm = (emap / peak) if peak > 0 else np.zeros_like(emap)
    img = cv2.applyColorMap(np.round(norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    factor = max(1, min(32, -(-384 // max(1, max(emap.shape)))))  # small maps: >= 384 px wide
    img = cv2.resize(img, (emap.shape[1] * factor, emap.shape[0] * factor),
                     interpolation=cv2.INTER_NEAREST)
    width = img.shape[1]
    bar = cv2.applyColorMap(np.tile(np.linspace(0, 255, width).astype(np.uint8), (12, 1)),
                            cv2.COLORMAP_INFERNO)
    text = np.zeros((22, width, 3), np.uint8)
    caption = f"level {detail.level} {detail.layer}: |error| 0 .. {peak:.2e}"
    cv2.putText(text, caption, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", np.vstack([img, bar, text]))
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 image
        raise SrnPortError(f"could not encode the heatmap for '{path}'")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    return path

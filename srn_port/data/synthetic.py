"""Synthetic motion blur: sharp scenes, camera-shake kernels, 8-bit blurry/sharp pairs.

Used to train a small SRN with the original TF graph (``tools/train_tf.py``), to measure it
(``tools/eval_trained.py``) and by the tests of the committed trained checkpoint. NumPy and
OpenCV only; the sample photographs scikit-image ships (no download) are an optional source.

A pair is made like a real blurry photo: a sharp 8-bit scene is convolved with a random
camera-shake kernel (a smoothed random walk with momentum, so curves and hooks as well as
straight strokes), a little Gaussian noise is added and the result is rounded to 8 bits.
Every pair is a pure function of its seed, so a training run replays the same data order
after a restart and held-out sets are fixed by their seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

#: scikit-image sample photographs used for training (all ship inside the wheel).
TRAIN_PHOTOS = ("astronaut", "brick", "camera", "cell", "clock", "coins", "colorwheel", "grass",
                "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page",
                "retina", "rocket", "text")
#: Photographs never seen in training: the held-out sets draw from these only.
#: (``stereo_motorcycle`` has a left and a right view of one scene: both are held out.)
HELD_OUT_PHOTOS = ("chelsea", "coffee", "stereo_motorcycle")

# Tags that put training batches, held-out sets and anything else on disjoint seed streams.
_TRAIN_STREAM = 0x5452  # "TR"
_HELD_OUT_STREAM = 0x484F  # "HO"


@dataclass(frozen=True)
class BlurSpec:
    """How strong the synthetic degradation is."""

    min_length: float = 2.0  # px, extent of the shake trajectory (its longer bounding-box side)
    max_length: float = 7.0  # px; the kernel support is the smallest odd size holding it
    max_noise: float = 2.0 / 255  # Gaussian noise sigma is uniform in [0, max_noise]
    photo_fraction: float = 0.5  # share of photographs (when available) vs procedural scenes
    min_zoom: float = 0.35  # photographs are rescaled by a log-uniform factor in
    max_zoom: float = 1.0  # [min_zoom, max_zoom] (< 1: area-downscaled, > 1: upscaled)
    channel_shuffle: float = 0.3  # chance to permute a photograph's RGB planes (training only)

    @property
    def margin(self) -> int:
        """Context needed around a crop so the blur never sees the image border."""
        return int(np.ceil(self.max_length / 2)) + 2


# --------------------------------------------------------------------------- kernels

def shake_trajectory(rng: np.random.Generator, n: int = 96) -> np.ndarray:
    """A camera-shake path: positions (n, 2) from a random walk whose velocity has momentum
    and occasional jerks; not normalised in size."""
    momentum = rng.uniform(0.8, 0.97)
    velocity = rng.normal(size=2)
    velocity /= np.linalg.norm(velocity) + 1e-12
    jerk_rate = rng.uniform(0.0, 0.08)
    pos = np.zeros((n, 2))
    for t in range(1, n):
        kick = rng.normal(scale=1.0, size=2)
        if rng.random() < jerk_rate:
            kick += rng.normal(scale=4.0, size=2)
        velocity = momentum * velocity + (1 - momentum) * kick
        pos[t] = pos[t - 1] + velocity
    return pos


def rasterize_path(path: np.ndarray, length: float, max_size: int) -> np.ndarray:
    """Scale ``path`` so its longer bounding-box side is ``length`` px, centre it on its mean
    (the blurred image does not shift on average) and splat it bilinearly on an odd grid
    of at most ``max_size`` pixels.
    Returns a float32 kernel that sums to 1."""
    path = path - path.mean(axis=0)
    extent = np.ptp(path, axis=0).max()
    path = path * (length / extent) if extent > 1e-9 else path * 0
    radius = int(np.ceil(np.abs(path).max() + 1))
    size = min(2 * radius + 1, max_size | 1)
    centre = size // 2
    # Sample the path uniformly in *time*: where the hand moves slowly the kernel is
    # brighter, as in a real exposure. Dense enough that the trace has no gaps.
    time = np.linspace(0, 1, len(path))
    dense = np.linspace(0, 1, 24 * len(path))
    xs = np.interp(dense, time, path[:, 0]) + centre
    ys = np.interp(dense, time, path[:, 1]) + centre
    xs, ys = np.clip(xs, 0, size - 1.0001), np.clip(ys, 0, size - 1.0001)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    k = np.zeros((size, size), np.float64)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                       (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(k, (y0 + dy, x0 + dx), wt)
    return (k / k.sum()).astype(np.float32)


def shake_kernel(rng: np.random.Generator, spec: BlurSpec = BlurSpec()) -> np.ndarray:
    """A random camera-shake blur kernel (odd square, sums to 1)."""
    length = rng.uniform(spec.min_length, spec.max_length)
    return rasterize_path(shake_trajectory(rng), length, 2 * spec.margin - 1)


# --------------------------------------------------------------------------- scenes

def _random_color(rng) -> Tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _smooth_field(rng, h, w, cells) -> np.ndarray:
    """Low-frequency random field in [0, 1], (h, w)."""
    small = rng.random((cells, cells)).astype(np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    field -= field.min()
    return field / max(field.max(), 1e-6)


def _texture(rng, h, w) -> np.ndarray:
    """A (h, w, 3) float texture in [0, 255]: stripes, checks, smooth blotches or grain."""
    kind = rng.integers(4)
    c1, c2 = np.array(_random_color(rng), np.float32), np.array(_random_color(rng), np.float32)
    if kind == 0:  # stripes at any angle and frequency
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4, 40)
        m = 0.5 + 0.5 * np.sign(np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period))
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(4, 32))
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((yy // cell + xx // cell) % 2).astype(np.float32)
    elif kind == 2:  # smooth blotches
        m = _smooth_field(rng, h, w, int(rng.integers(3, 12)))
    else:  # grain: filtered noise, like foliage, gravel or fabric
        m = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(0.7, 3))
        m = (m - m.min()) / max(np.ptp(m), 1e-6)
    return m[..., None] * c1 + (1 - m[..., None]) * c2


_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-"))


def procedural_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A sharp synthetic scene (uint8 RGB): a gradient or textured background with shapes,
    text and textured patches. Drawn at twice the size and area-downsampled, so edges are
    anti-aliased like a photograph's, not staircase-sharp."""
    h, w = 2 * height, 2 * width
    if rng.random() < 0.5:
        g = _smooth_field(rng, h, w, 2)[..., None]
        img = g * np.array(_random_color(rng), np.float32) + (1 - g) * np.array(
            _random_color(rng), np.float32)
    else:
        img = _texture(rng, h, w)
    img = np.ascontiguousarray(img.astype(np.float32))
    scale = (h + w) / 2
    for _ in range(int(rng.integers(6, 26))):
        kind = rng.integers(6)
        mask = np.zeros((h, w), np.uint8)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(scale * rng.uniform(0.03, 0.35))
        thick = -1 if rng.random() < 0.6 else int(rng.integers(2, 10))
        if kind == 0:
            cv2.rectangle(mask, (cx - size, cy - size // 2), (cx + size, cy + size // 2), 255,
                          thick, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(mask, (cx, cy), max(size // 2, 2), 255, thick, cv2.LINE_AA)
        elif kind == 2:
            cv2.ellipse(mask, (cx, cy), (max(size, 2), max(int(size * rng.uniform(0.2, 1)), 1)),
                        float(rng.uniform(0, 180)), 0, 360, 255, thick, cv2.LINE_AA)
        elif kind == 3:
            n = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = size * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            if thick < 0:
                cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
            else:
                cv2.polylines(mask, [pts], True, 255, thick, cv2.LINE_AA)
        elif kind == 4:
            for _ in range(int(rng.integers(1, 5))):
                p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                p2 = (p1[0] + int(rng.normal(0, size)), p1[1] + int(rng.normal(0, size)))
                cv2.line(mask, p1, p2, 255, int(rng.integers(1, 8)), cv2.LINE_AA)
        else:
            text = "".join(rng.choice(_CHARS, int(rng.integers(2, 12))))
            font = int(rng.choice(_FONTS))
            fscale = rng.uniform(0.6, 4.0) * (h / 256)
            cv2.putText(mask, text, (int(rng.integers(-w // 4, w)), cy), font, fscale, 255,
                        int(rng.integers(1, 6)), cv2.LINE_AA)
        x, y, bw, bh = cv2.boundingRect(mask)
        if bw == 0 or bh == 0:
            continue
        box = (slice(y, y + bh), slice(x, x + bw))
        alpha = mask[box].astype(np.float32)[..., None] / 255
        fill = _texture(rng, bh, bw) if rng.random() < 0.3 else np.array(_random_color(rng),
                                                                           np.float32)
        img[box] = img[box] * (1 - alpha) + fill * alpha
    shade = 0.75 + 0.5 * _smooth_field(rng, h, w, 2)[..., None]  # uneven illumination
    img = img * shade
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- photographs

def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255 if img.max() <= 1.0 else img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:  # RGBA (logo): composite on white
        a = img[..., 3:].astype(np.float32) / 255
        img = np.round(img[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    return np.ascontiguousarray(img)


@lru_cache(maxsize=None)
def load_photos(names: Tuple[str, ...]) -> Tuple[np.ndarray, ...]:
    """The named scikit-image sample photographs as uint8 RGB (gray ones replicated).
    Needs scikit-image; its sample images ship inside the wheel (no download)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError("The photograph sources need scikit-image (pip install scikit-image); "
                          "procedural scenes work without it.") from exc
    out = []
    for name in names:
        img = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            out.extend(_as_rgb_uint8(v) for v in img[:2])
        else:
            out.append(_as_rgb_uint8(img))
    return tuple(out)


def photo_crop(rng: np.random.Generator, photo: np.ndarray, height: int, width: int,
               min_zoom: float = 0.35, max_zoom: float = 1.0) -> np.ndarray:
    """A random (height, width) crop of ``photo`` at a random zoom in [min_zoom, max_zoom]
    (log-uniform; below 1 area-downscaled: more detail per pixel; above 1 upscaled
    bicubically: smoother, like an oversampling camera), randomly flipped/rotated."""
    ph, pw = photo.shape[:2]
    rotate = rng.random() < 0.5 and min(ph, pw) >= max(height, width)
    if rotate:  # crop the transposed size, rotate the crop (not the whole photograph)
        height, width = width, height
    lo = max(min_zoom, height / ph, width / pw)
    hi = max(max_zoom, lo)
    zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if lo < hi else lo
    sh, sw = min(ph, int(np.ceil(height / zoom))), min(pw, int(np.ceil(width / zoom)))
    y, x = int(rng.integers(0, ph - sh + 1)), int(rng.integers(0, pw - sw + 1))
    crop = photo[y:y + sh, x:x + sw]
    if (sh, sw) != (height, width):
        crop = cv2.resize(crop, (width, height),
                          interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC)
    if rotate:
        crop = np.rot90(crop)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


# --------------------------------------------------------------------------- pairs

def blur(sharp_with_margin: np.ndarray, kernel: np.ndarray, noise_sigma: float,
         rng: np.random.Generator, margin: int) -> Tuple[np.ndarray, np.ndarray]:
    """Blur an 8-bit image that carries ``margin`` extra pixels on every side, add noise,
    round to 8 bits; return (blurry, sharp), both cropped to the inner region."""
    x = sharp_with_margin.astype(np.float32) / 255
    b = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT)
    inner = (slice(margin, -margin), slice(margin, -margin))
    b = b[inner]
    if noise_sigma > 0:
        b = b + rng.normal(scale=noise_sigma, size=b.shape).astype(np.float32)
    blurry = np.clip(np.round(b * 255), 0, 255).astype(np.uint8)
    return blurry, np.ascontiguousarray(sharp_with_margin[inner])


def make_pair(rng: np.random.Generator, height: int, width: int, spec: BlurSpec = BlurSpec(),
              photos: Sequence[np.ndarray] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """One (blurry, sharp) uint8 RGB pair of size (height, width)."""
    m = spec.margin
    H, W = height + 2 * m, width + 2 * m
    if len(photos) and rng.random() < spec.photo_fraction:
        sharp = photo_crop(rng, photos[int(rng.integers(len(photos)))], H, W, spec.min_zoom,
                           spec.max_zoom)
        if rng.random() < spec.channel_shuffle and np.ptp(sharp.astype(int) - sharp[..., :1]) > 0:
            sharp = np.ascontiguousarray(sharp[..., rng.permutation(3)])
    else:
        sharp = procedural_scene(rng, H, W)
    kernel = shake_kernel(rng, spec)
    return blur(sharp, kernel, float(rng.uniform(0, spec.max_noise)), rng, m)


def training_batch(seed: int, step: int, batch: int, size: int, spec: BlurSpec = BlurSpec(),
                   photos: Sequence[np.ndarray] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """The batch of training step ``step``: (blurry, sharp) uint8 arrays (batch, size, size, 3).
    A pure function of (seed, step): a resumed run sees the same data order."""
    rng = np.random.default_rng([_TRAIN_STREAM, seed, step])
    pairs = [make_pair(rng, size, size, spec, photos) for _ in range(batch)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def held_out_set(n: int, height: int, width: Optional[int] = None, seed: int = 0,
                 spec: BlurSpec = BlurSpec(), photos: bool = True
                 ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``n`` fixed (blurry, sharp) pairs never used in training: procedural scenes on a
    separate seed stream and, if ``photos`` (needs scikit-image), every other image a crop of a
    held-out photograph (:data:`HELD_OUT_PHOTOS`), in its natural colours."""
    width = height if width is None else width
    sources = load_photos(HELD_OUT_PHOTOS) if photos else ()
    out = []
    for i in range(n):
        rng = np.random.default_rng([_HELD_OUT_STREAM, seed, i])
        use_photo = bool(sources) and i % 2 == 0
        pair_spec = replace(spec, photo_fraction=1.0 if use_photo else 0.0, channel_shuffle=0.0)
        out.append(make_pair(rng, height, width, pair_spec, sources))
    return out


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two 8-bit images (any matching shapes)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (network output) as 8 bits: clipped, scaled, rounded."""
    return np.clip(np.round(np.clip(x, 0, 1) * 255.0), 0, 255).astype(np.uint8)

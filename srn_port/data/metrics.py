"""PSNR and SSIM as MATLAB's Image Processing Toolbox computes them, the convention of the
SRN-Deblur paper's GoPro table (``psnr`` and ``ssim`` on whole 8-bit RGB images; no border
crop, no luma channel). No torch.

MATLAB's definitions, as documented by MathWorks (``psnr``, ``immse``, ``ssim``; the
algorithm of ``ssim`` is the one of its 2013-2014 implementation, unchanged in later
releases when called without name-value arguments):

* **PSNR**: ``10 log10(peak^2 / MSE)``, MSE over every element (all rows, columns and
  channels, in double), ``peak`` the range of the image class: 255 for uint8, 65535 for
  uint16.
* **SSIM** (Wang et al. 2004, eq. 13): local means, variances and covariance weighted by an
  isotropic Gaussian of sigma 1.5 sampled on ``2 * ceil(3 * 1.5) + 1 = 11`` taps per axis and
  normalised to sum 1, filtered with **replicated** borders (``imfilter(..., 'conv',
  'replicate')``); C1 = (0.01 L)^2, C2 = (0.03 L)^2, L the class range (255 for uint8); the
  index is the mean of the whole map (no border crop). Integer images are converted to
  double first. **An RGB image is an H x W x 3 volume**: MATLAB's default (``DataFormat``
  "SSS") filters it with the 3-D Gaussian, so the window spans the three channels too
  (replicated along that axis as well); this is *not* the mean of three per-channel SSIMs.
  A 2-D (gray) image uses the 2-D Gaussian.

Computed here in float64 with OpenCV's separable filter (the 2-D and 3-D Gaussians are the
outer products of the normalised 1-D one). ``tests/test_metrics.py`` checks both against
scikit-image on real photos: PSNR equal to ``peak_signal_noise_ratio``; the SSIM map equal to
``structural_similarity`` (Gaussian weights, sigma 1.5, population covariance, 11-tap window,
``full=True``) computed on the image padded by replication, inside the padding.
"""

from __future__ import annotations

import math
from typing import Tuple

import cv2
import numpy as np

from ..core.errors import SrnPortError

#: MATLAB ssim's defaults.
SIGMA = 1.5
RADIUS = math.ceil(3 * SIGMA)
K1, K2 = 0.01, 0.03
_PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _check(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise SrnPortError(f"The images to compare differ in shape: {a.shape} and {b.shape}.")
    if a.dtype != b.dtype or a.dtype not in _PEAK:
        raise SrnPortError(f"PSNR/SSIM compare two uint8 or two uint16 images (MATLAB's "
                           f"range of the class as the peak); got {a.dtype} and {b.dtype}.")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)) or 0 in a.shape:
        raise SrnPortError(f"expected HxW or HxWx3 images, got shape {a.shape}.")
    return _PEAK[a.dtype]


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """MATLAB's ``psnr(image, reference)`` of two uint8 (or uint16) images, in dB; inf for
    equal images."""
    peak = _check(image, reference)
    mse = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def gaussian_taps(sigma: float = SIGMA, radius: int = RADIUS) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer products are MATLAB's 2-D and 3-D windows."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _replicate_mix(taps: np.ndarray, n: int) -> np.ndarray:
    """The n x n matrix of filtering a length-n axis with ``taps`` under replicated borders:
    out[i] = sum_j M[i, j] in[j]."""
    radius = len(taps) // 2
    m = np.zeros((n, n))
    for i in range(n):
        for k, t in enumerate(taps):
            m[i, min(max(i + k - radius, 0), n - 1)] += t
    return m


def _filter(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Gaussian filter of an HxW or HxWxC float64 array, replicated borders on every axis
    (the channel axis too: MATLAB's volume)."""
    y = cv2.sepFilter2D(x, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REPLICATE)
    if x.ndim == 3 and x.shape[2] > 1:
        y = np.tensordot(y, _replicate_mix(taps, x.shape[2]), axes=([2], [1]))
    return y.reshape(x.shape)


def ssim_map(image: np.ndarray, reference: np.ndarray) -> Tuple[float, np.ndarray]:
    """MATLAB's ``[ssimval, ssimmap] = ssim(image, reference)`` with default arguments, for two
    uint8 (or uint16) images: HxW, or HxWx3 as a volume."""
    peak = _check(image, reference)
    if image.ndim == 3 and image.shape[2] == 1:
        image, reference = image[:, :, 0], reference[:, :, 0]
    x, y = image.astype(np.float64), reference.astype(np.float64)
    taps = gaussian_taps()
    mu_x, mu_y = _filter(x, taps), _filter(y, taps)
    mu_xy, mu_x2, mu_y2 = mu_x * mu_y, mu_x * mu_x, mu_y * mu_y
    sigma_x2 = _filter(x * x, taps) - mu_x2
    sigma_y2 = _filter(y * y, taps) - mu_y2
    sigma_xy = _filter(x * y, taps) - mu_xy
    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    smap = ((2 * mu_xy + c1) * (2 * sigma_xy + c2)) / ((mu_x2 + mu_y2 + c1)
                                                        * (sigma_x2 + sigma_y2 + c2))
    return float(smap.mean()), smap


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """MATLAB's ``ssim(image, reference)`` (see :func:`ssim_map`)."""
    return ssim_map(image, reference)[0]

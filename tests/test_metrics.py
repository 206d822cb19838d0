"""srn_port.data.metrics (MATLAB's psnr / ssim) against scikit-image, on real photos."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from srn_port.core.errors import SrnPortError
from srn_port.core.tolerances import TOLERANCES
from srn_port.data.images import read_image
from srn_port.data.metrics import RADIUS, psnr, ssim, ssim_map

skm = pytest.importorskip("skimage.metrics", reason="the eval extra (scikit-image)")

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


def _pairs():
    """(distorted, reference) uint8 crops of the example photos: a blur plus noise, and a
    JPEG round trip, so SSIM is far from 1 and the test can tell a wrong window."""
    rng = np.random.default_rng(0)
    out = []
    for name in ("01.png", "4c6.png"):
        ref = read_image(PHOTOS / name)[100:260, 200:392]
        blurred = cv2.GaussianBlur(ref, (0, 0), 2.0).astype(np.float64)
        noisy = np.clip(np.round(blurred + rng.normal(0, 6, ref.shape)), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", ref, [cv2.IMWRITE_JPEG_QUALITY, 20])
        out += [(noisy, ref), (cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), ref)]
    return out


def _skimage_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """scikit-image's Gaussian SSIM map of the images padded by replication (MATLAB's
    border rule), cut back to the image: inside the padding no border rule of
    scikit-image's own applies. Every axis is padded, the channel axis of an RGB volume
    too."""
    pad = [(RADIUS, RADIUS)] * a.ndim
    pa, pb = np.pad(a, pad, mode="edge"), np.pad(b, pad, mode="edge")
    _, full = skm.structural_similarity(
        pa.astype(np.float64), pb.astype(np.float64), data_range=255, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False, win_size=2 * RADIUS + 1, full=True)
    return full[tuple(slice(RADIUS, -RADIUS) for _ in range(a.ndim))]


@pytest.mark.parametrize("k", range(4))
def test_psnr_equals_scikit_image(k):
    a, b = _pairs()[k]
    assert psnr(a, b) == pytest.approx(skm.peak_signal_noise_ratio(b, a, data_range=255),
                                       abs=1e-12)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("gray", [False, True], ids=["rgb-volume", "gray"])
def test_ssim_map_equals_scikit_image(k, gray):
    a, b = _pairs()[k]
    if gray:
        a, b = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    value, smap = ssim_map(a, b)
    ref = _skimage_map(a, b)
    assert smap.shape == a.shape
    tol = TOLERANCES["metric"].rel  # the map's values are <= 1: relative = absolute
    np.testing.assert_allclose(smap, ref, rtol=0, atol=tol)
    assert value == pytest.approx(ref.mean(), abs=tol)
    assert 0.3 < value < 0.97  # far from the trivial 1: a wrong window would show


def test_rgb_is_a_volume_not_a_mean_of_channels():
    """MATLAB's default treats HxWx3 as a volume: the window mixes channels, so the value is
    not the mean of the three per-channel SSIMs (scikit-image's channel_axis=2 result)."""
    a, b = _pairs()[0]
    per_channel = skm.structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=2)
    assert abs(ssim(a, b) - per_channel) > 1e-4


def test_identical_and_bad_inputs():
    a, _ = _pairs()[0]
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(SrnPortError, match="differ in shape"):
        psnr(a, a[:-1])
    with pytest.raises(SrnPortError, match="uint8 or two uint16"):
        ssim(a.astype(np.float32), a.astype(np.float32))

"""`srn-port deblur` and `deblur_image` without TF: both modes, sizes, bit depths, alpha,
variants, tiling, precision, image IO, and every bad input through the CLI.

Models are width 4 with random weights scaled to keep outputs mostly in [0, 1]
(tests/_deblur_ckpt.py); images are small. The TF identity of --mode original is in
tests/test_deblur_tf.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import srn_port.api.deblur as deblur_module
from srn_port.cli import cli
from srn_port.core.network import SRNConfig
from srn_port.api.deblur import (ImageError, _blend_weights, _run_network, deblur_image,
                             encode_image, read_image, side_by_side, tile_starts, write_image)
from srn_port.core.errors import FileWriteError, SrnPortError
from srn_port.nn.model import SRN
from srn_port.core.tolerances import TOLERANCES, within
from srn_port.api.weights import save_weights

from _deblur_ckpt import smooth_picture, tame_model
from conftest import PHOTOS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CANVAS = dict(height=64, width=96)  # a small --mode original canvas keeps these tests fast


@pytest.fixture(scope="module")
def models():
    return {v: tame_model(SRNConfig(v, 4), seed=3) for v in ("color", "gray", "lstm")}


@pytest.fixture(scope="module")
def color(models):
    return models["color"]


def constant_model(value: float, variant: str = "color") -> SRN:
    """All weights 0 and the last bias ``value``: every output pixel is exactly ``value``."""
    model = SRN(SRNConfig(variant, 4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.dec1_0.bias.fill_(value)
    return model


class Spy(torch.nn.Module):
    """Wraps a model; records the input shapes; ``identity`` returns the input itself."""

    def __init__(self, inner: SRN, identity: bool = False):
        super().__init__()
        self.inner, self.identity, self.shapes = inner, identity, []
        self.config = inner.config

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return [x.clone()] if self.identity else self.inner(x)


def manual_full(model: SRN, image: np.ndarray) -> np.ndarray:
    """The full-mode pipeline written out for one RGB/gray-model case (no library code)."""
    h, w, _ = image.shape
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    maxv = np.iinfo(image.dtype).max
    pad = np.pad(image, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    x = torch.from_numpy((pad / float(maxv)).astype(np.float32)).permute(2, 0, 1)
    x = x[None] if model.config.channels == 3 else x[:, None]
    with torch.no_grad():
        y = model(x)[-1]
    y = y[0] if model.config.channels == 3 else y[:, 0]
    y = y.permute(1, 2, 0).numpy()[:h, :w]
    return np.rint(np.clip(y, 0, 1) * np.float32(maxv)).astype(image.dtype)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# -- full mode -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (33, 47, 3), (50, 20, 3), (48, 64, 3)])
def test_full_mode_equals_the_pipeline_written_out(color, shape):
    img = smooth_picture(shape[0], shape[1], seed=sum(shape))
    out = deblur_image(color, img)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, manual_full(color, img))


def test_full_mode_16_bit(color):
    img = smooth_picture(21, 30, seed=5, dtype=np.uint16)
    out = deblur_image(color, img)
    assert out.dtype == np.uint16 and out.shape == img.shape
    np.testing.assert_array_equal(out, manual_full(color, img))
    assert len(np.unique(out)) > 256  # really 16-bit values, not 8-bit ones scaled


def test_full_mode_rounds_original_mode_truncates():
    v = np.float32(100.7 / 255)  # 100.7 levels: rounds to 101, truncates to 100
    model = constant_model(float(v))
    img = smooth_picture(9, 13, seed=0)
    assert np.all(deblur_image(model, img) == 101)
    assert np.all(deblur_image(model, img, mode="original", **CANVAS) == 100)
    img16 = smooth_picture(9, 13, seed=0, dtype=np.uint16)
    assert np.all(deblur_image(model, img16) == np.rint(v * np.float32(65535)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_alpha_passes_through_untouched(color, dtype):
    rgb = smooth_picture(19, 23, seed=2, dtype=dtype)
    alpha = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (19, 23, 1), dtype=dtype)
    rgba = np.concatenate([rgb, alpha], axis=2)
    out = deblur_image(color, rgba)
    assert out.shape == rgba.shape and out.dtype == dtype
    np.testing.assert_array_equal(out[:, :, 3], alpha[:, :, 0])
    np.testing.assert_array_equal(out[:, :, :3], deblur_image(color, rgb))
    if dtype == np.uint8:
        orig = deblur_image(color, rgba, mode="original", **CANVAS)
        np.testing.assert_array_equal(orig[:, :, 3], alpha[:, :, 0])
        np.testing.assert_array_equal(orig[:, :, :3],
                                      deblur_image(color, rgb, mode="original", **CANVAS))


# -- variants and colour planes ----------------------------------------------------------

@pytest.mark.parametrize("variant", ["gray", "lstm"])
def test_gray_models_run_the_planes_as_one_batch_of_three(models, variant):
    spy = Spy(models[variant])
    img = smooth_picture(20, 30, seed=4)
    out = deblur_image(spy, img)
    assert spy.shapes == [(3, 1, 32, 32)]
    np.testing.assert_array_equal(out, manual_full(models[variant], img))
    # each plane is an independent gray image: the batch of three equals three runs
    x = (np.pad(img, ((0, 12), (0, 2), (0, 0)), mode="edge") / 255.0).astype(np.float32)
    batched = _run_network(models[variant], x, torch.device("cpu"), None)
    for k in range(3):
        single = _run_network(models[variant], x[:, :, k:k + 1], torch.device("cpu"), None)
        err = np.abs(single[:, :, 0] - batched[:, :, k]).max()
        assert within(err, np.abs(batched[:, :, k]).max(), TOLERANCES["output"]), err


@pytest.mark.parametrize("variant", ["gray", "lstm"])
def test_gray_image_runs_once_through_gray_models(models, variant):
    spy = Spy(models[variant])
    g = smooth_picture(20, 30, seed=6)[:, :, 1]
    out = deblur_image(spy, g)
    assert spy.shapes == [(1, 1, 32, 32)] and out.shape == g.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, manual_full(models[variant], g[:, :, None])[:, :, 0])


def test_gray_image_through_color_model_averages_the_three_outputs(color):
    spy = Spy(color)
    g = smooth_picture(20, 30, seed=7)[:, :, 0]
    out = deblur_image(spy, g)
    assert spy.shapes == [(1, 3, 32, 32)] and out.shape == g.shape
    x = torch.from_numpy((np.pad(g, ((0, 12), (0, 2)), mode="edge") / 255.0).astype(np.float32))
    with torch.no_grad():
        y = color(x.expand(1, 3, -1, -1))[-1][0].mean(dim=0).numpy()[:20, :30]
    np.testing.assert_array_equal(out, np.rint(np.clip(y, 0, 1) * np.float32(255)).astype(np.uint8))


def test_color_model_sees_rgb_in_rgb_order(color):
    spy = Spy(color, identity=True)
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :, 0] = 255  # red
    deblur_image(spy, img)
    out = deblur_image(spy, img)
    np.testing.assert_array_equal(out, img)  # identity model: nothing moved between planes


# -- original mode (TF identity: tests/test_deblur_tf.py) ----------------------------------

def test_original_small_image_is_padded_to_the_canvas(color):
    img = smooth_picture(37, 53, seed=8)
    out = deblur_image(color, img, mode="original", **CANVAS)
    pad = np.pad(img, ((0, 64 - 37), (0, 96 - 53), (0, 0)), mode="edge")
    x = torch.from_numpy((pad.astype(np.float64) / 255.0).astype(np.float32)).permute(2, 0, 1)
    with torch.no_grad():
        y = color(x[None])[-1][0].permute(1, 2, 0).numpy()
    expected = (np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)[:37, :53]
    np.testing.assert_array_equal(out, expected)
    # the canvas, not the image, decides the padding: full mode pads to 48x64 instead
    assert not np.array_equal(out, deblur_image(color, img))


@pytest.mark.parametrize("shape", [(70, 40), (7, 5), (150, 100)])
def test_original_portrait_runs_as_the_transposed_landscape(color, shape):
    img = smooth_picture(*shape, seed=9)
    out = deblur_image(color, img, mode="original", **CANVAS)
    landscape = deblur_image(color, np.ascontiguousarray(img.transpose(1, 0, 2)), mode="original",
                             **CANVAS)
    np.testing.assert_array_equal(out, landscape.transpose(1, 0, 2))


@pytest.mark.parametrize("shape,fitted", [((100, 150), (64, 96)), ((90, 300), (28, 96)),
                                          ((65, 97), (64, 95))])
def test_original_larger_than_canvas_is_bicubic_down_then_up(color, shape, fitted):
    img = smooth_picture(*shape, seed=10)
    out = deblur_image(color, img, mode="original", **CANVAS)
    assert out.shape == img.shape
    # the same as: PIL bicubic down to the fitted size, the no-resize path, PIL bicubic up
    down = np.asarray(Image.fromarray(img).resize(fitted[::-1], Image.BICUBIC))
    small = deblur_image(color, down, mode="original", **CANVAS)
    up = np.asarray(Image.fromarray(small).resize(shape[::-1], Image.BICUBIC))
    np.testing.assert_array_equal(out, up)


def test_original_refuses_16_bit(color):
    with pytest.raises(ImageError, match="8-bit images only.*mode 'full'"):
        deblur_image(color, smooth_picture(8, 8, dtype=np.uint16), mode="original")


def test_original_refuses_tile_and_bad_canvas(color):
    img = smooth_picture(8, 8)
    with pytest.raises(SrnPortError, match="tiling works with mode 'full'"):
        deblur_image(color, img, mode="original", tile=64, **CANVAS)
    with pytest.raises(SrnPortError, match="multiple of 16"):
        deblur_image(color, img, mode="original", height=70, width=96)


def test_bad_arrays_are_refused(color):
    for bad, what in [(np.zeros((4, 4), np.float32), "uint8 or uint16"),
                      (np.zeros((4, 4, 2), np.uint8), "HxW, HxWx3 or HxWx4"),
                      (np.zeros((0, 4, 3), np.uint8), "empty")]:
        with pytest.raises(ImageError, match=what):
            deblur_image(color, bad)
    with pytest.raises(SrnPortError, match="Unknown mode"):
        deblur_image(color, np.zeros((4, 4), np.uint8), mode="fast")


# -- tiling ------------------------------------------------------------------------------

def test_tile_layout_covers_every_pixel_on_the_16_grid():
    for tile in range(16, 272, 16):
        for overlap in range(0, tile // 2 + 1, 16):
            for length in range(16, 800, 16):
                starts, size = tile_starts(length, tile, overlap)
                assert starts[0] == 0 and starts[-1] + size == length
                assert all(s % 16 == 0 for s in starts)
                assert all(a + size - b >= overlap for a, b in zip(starts, starts[1:]))
                total = np.zeros(length)
                for s, w in zip(starts, _blend_weights(starts, size)):
                    total[s:s + size] += w
                assert total.min() > 0, (length, tile, overlap)


def test_blend_weights_drop_the_outer_quarter_of_each_overlap():
    w = _blend_weights([0, 64, 128], 128)  # overlaps of 64
    assert np.all(w[0][:80] == 1) and np.all(w[0][112:] == 0)  # the overlap is 64..127
    assert np.all(np.diff(w[0][80:112]) < 0)  # the ramp: its middle half
    assert np.all(w[1][:16] == 0) and np.all(w[1][-16:] == 0) and np.all(w[1][48:80] == 1)
    assert np.all(np.diff(w[2][:64]) >= 0)


@pytest.mark.parametrize("shape,tile,overlap", [((100, 70, 3), 32, 16), ((64, 200, 4), 48, 16),
                                                ((33, 17), 16, 0)])
def test_tiles_are_put_back_where_they_came_from(color, shape, tile, overlap):
    # With an identity network every pixel must come back unchanged: tile positions, crops
    # and the weight normalisation are exact.
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    spy = Spy(color, identity=True)
    calls = []
    out = deblur_image(spy, img, tile=tile, overlap=overlap,
                       progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(out, img)
    n = len(spy.shapes)
    assert n > 1 and calls == [(k, n) for k in range(1, n + 1)]
    assert all(s[-2] <= tile and s[-1] <= tile for s in spy.shapes)


def test_one_tile_covering_the_image_equals_untiled(color):
    img = smooth_picture(40, 60, seed=11)
    np.testing.assert_array_equal(deblur_image(color, img, tile=64), deblur_image(color, img))


def test_overlap_brings_tiles_closer_to_untiled(color):
    img = smooth_picture(64, 64, seed=12)
    ref = deblur_image(color, img)
    abutting = deblur_image(color, img, tile=32, overlap=0)  # 4 tiles, no overlap at all
    blended = deblur_image(color, img, tile=32, overlap=16)  # 9 tiles, blended
    assert psnr(blended, ref) > psnr(abutting, ref)


def test_bad_tiling_is_refused(color):
    img = smooth_picture(8, 8)
    for tile, overlap, what in [(40, 0, "tile size"), (64, 48, "overlap"), (64, 8, "overlap")]:
        with pytest.raises(SrnPortError, match=what):
            deblur_image(color, img, tile=tile, overlap=overlap)


# -- device and precision ----------------------------------------------------------------

def test_fp16_on_cpu_is_refused_with_the_way_out(color):
    with pytest.raises(SrnPortError, match="precision 'fp16' runs on device 'cuda' or 'mps'.*fp32"):
        deblur_image(color, smooth_picture(8, 8), device="cpu", precision="fp16")


def test_bf16_runs_on_a_cpu_with_bf16_instructions(color, monkeypatch):
    # Forced "yes": on a CPU without them this runs emulated (slow, but a tiny image).
    monkeypatch.setattr(deblur_module, "cpu_has_native_bf16", lambda: True)
    img = smooth_picture(20, 30, seed=13)
    out = deblur_image(color, img, device="cpu", precision="bf16")
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, deblur_image(color, img))  # bf16 was really used


def test_bf16_is_refused_on_a_cpu_without_bf16_instructions(color, monkeypatch, weights, photos,
                                                            tmp_path):
    monkeypatch.setattr(deblur_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(SrnPortError, match="bfloat16 instructions.*AVX512-BF16 or AMX.*'fp32'"):
        deblur_image(color, smooth_picture(8, 8), device="cpu", precision="bf16")
    res = run(weights, photos / "a.png", "-o", tmp_path / "out", "--precision", "bf16",
              "--device", "cpu")
    assert res.exit_code == 2 and "bfloat16 instructions" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "out").exists()


def test_bf16_detection_matches_the_cpu_flags():
    flags = set()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    # No false "yes" (a "no" on a CPU whose flags list bf16 can be the OS withholding AMX).
    if deblur_module.cpu_has_native_bf16():
        assert {"avx512_bf16", "amx_bf16"} & flags


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_cuda_is_refused(color):
    with pytest.raises(SrnPortError, match="CUDA is not available"):
        deblur_image(color, smooth_picture(8, 8), device="cuda")


# -- image files -------------------------------------------------------------------------

LOSSLESS = {".png": ("gray", "rgb", "rgba", "gray16", "rgb16", "rgba16"),
            ".bmp": ("gray", "rgb", "rgba"),
            ".tif": ("gray", "rgb", "rgba", "gray16", "rgb16", "rgba16"),
            ".tiff": ("rgb",), ".webp": ("rgb",)}


def _kind(kind: str) -> np.ndarray:
    dtype = np.uint16 if kind.endswith("16") else np.uint8
    rng = np.random.default_rng(len(kind))
    c = {"gray": 1, "rgb": 3, "rgba": 4}[kind.rstrip("16")]
    img = rng.integers(1, np.iinfo(dtype).max, (9, 11, c), dtype=dtype)
    return img[:, :, 0] if c == 1 else img


@pytest.mark.parametrize("suffix,kind", [(s, k) for s, ks in LOSSLESS.items() for k in ks])
def test_lossless_formats_round_trip(tmp_path, suffix, kind):
    img = _kind(kind)
    path = tmp_path / f"x{suffix}"
    write_image(path, img)
    back = read_image(path)
    assert back.dtype == img.dtype
    np.testing.assert_array_equal(back, img)


def test_jpeg_round_trips_approximately_and_files_are_rgb(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :, 0] = 200  # red
    write_image(tmp_path / "r.jpg", img)
    bgr = cv2.imread(str(tmp_path / "r.jpg"))
    assert bgr[8, 8, 2] > 180 and bgr[8, 8, 0] < 20  # OpenCV's BGR: red is the last plane
    assert read_image(tmp_path / "r.jpg")[8, 8, 0] > 180


def test_written_images_get_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(mask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(FileWriteError, match="disk full"):
        write_image(target, np.zeros((4, 4, 3), np.uint8))
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.png"]


def _corrupt_files(folder: Path) -> dict:
    png = encode_image(smooth_picture(40, 40), ".png")
    jpg = encode_image(smooth_picture(40, 40), ".jpg")
    files = {"text.png": b"this is not an image", "empty.jpg": b"",
             "half.png": png[: len(png) // 2], "half.jpg": jpg[: len(jpg) // 2]}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_unreadable_images_raise_naming_the_file(tmp_path):
    for name in _corrupt_files(tmp_path):
        with pytest.raises(ImageError) as info:
            read_image(tmp_path / name)
        assert name in str(info.value)


def test_side_by_side():
    a, b = np.zeros((2, 3, 3), np.uint8), np.ones((2, 3, 3), np.uint8)
    both = side_by_side(a, b)
    assert both.shape == (2, 6, 3) and both[:, :3].max() == 0 and both[:, 3:].min() == 1


# -- the command line --------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory, color):
    path = tmp_path_factory.mktemp("w") / "color4.pt"
    save_weights(color.state_dict(), {"variant": "color", "width": 4}, path)
    return path


def run(*args):
    result = CliRunner().invoke(cli, ["deblur", *[str(a) for a in args]])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def photos(tmp_path):
    """A folder of small images: png, 16-bit png, jpg, gray bmp, RGBA webp, tiny tif."""
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", smooth_picture(30, 40, seed=1))
    write_image(src / "b16.png", smooth_picture(20, 25, seed=2, dtype=np.uint16))
    write_image(src / "c.jpg", smooth_picture(24, 18, seed=3))
    write_image(src / "d.bmp", smooth_picture(17, 19, seed=4, channels=1))
    rgba = np.concatenate([smooth_picture(20, 20, seed=5),
                           np.full((20, 20, 1), 128, np.uint8)], axis=2)
    write_image(src / "e.webp", rgba)
    write_image(src / "f.tif", smooth_picture(3, 5, seed=6))  # smaller than 16 px
    (src / "notes.txt").write_text("not an image")
    (src / "sub").mkdir()
    write_image(src / "sub" / "deep.png", smooth_picture(8, 8))
    return src


def test_cli_deblurs_a_folder_keeping_names_formats_and_inputs(weights, photos, tmp_path):
    before = digest(photos)
    out = tmp_path / "out"
    res = run(weights, photos, "-o", out, "--compare")
    assert res.exit_code == 0, res.output
    names = ["a.png", "b16.png", "c.jpg", "d.bmp", "e.webp", "f.tif"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        names + [Path(n).stem + "_compare.png" for n in names])
    for name in names:
        src, dst = read_image(photos / name), read_image(out / name)
        assert dst.shape == src.shape and dst.dtype == src.dtype, name
        cmp = read_image(out / (Path(name).stem + "_compare.png"))
        assert cmp.shape[1] == 2 * src.shape[1] and cmp.dtype == src.dtype
    np.testing.assert_array_equal(read_image(out / "a.png"),
                                  deblur_image(read_model(weights), read_image(photos / "a.png")))
    np.testing.assert_array_equal(read_image(out / "e.webp")[:, :, 3], 128)
    assert digest(photos) == before  # inputs untouched
    assert "notes.txt" in res.output  # ignored, and said so
    summary = res.output.strip().splitlines()[-1]
    assert summary.startswith("6 file(s) deblurred, 0 failed") and "s/megapixel" in summary


def read_model(path):
    from srn_port.api.weights import load_model

    return load_model(path)


def test_cli_files_and_folders_original_mode(weights, photos, tmp_path):
    other = tmp_path / "single.png"
    write_image(other, smooth_picture(70, 40, seed=7))
    out = tmp_path / "out"
    res = run(weights, photos / "a.png", other, "-o", out, "--mode", "original",
              "--height", 64, "--width", 96)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(
        read_image(out / "single.png"),
        deblur_image(read_model(weights), read_image(other), mode="original", **CANVAS))


def test_cli_bad_files_are_reported_and_skipped(weights, photos, tmp_path):
    corrupt = _corrupt_files(photos)
    before = digest(photos)
    out = tmp_path / "out"
    res = run(weights, photos, "-o", out)
    assert res.exit_code == 1
    for name in corrupt:
        assert f"{name}'" in res.output, name
    assert (out / "a.png").exists() and (out / "f.tif").exists()
    assert not any((out / name).exists() for name in corrupt)
    assert "4 failed" in res.output and digest(photos) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_explicit_non_image_file_is_reported(weights, photos, tmp_path):
    res = run(weights, photos / "notes.txt", photos / "a.png", "-o", tmp_path / "out")
    assert res.exit_code == 1 and "notes.txt" in res.output
    assert (tmp_path / "out" / "a.png").exists()


def test_cli_16_bit_in_original_mode_is_reported_and_skipped(weights, photos, tmp_path):
    res = run(weights, photos / "b16.png", photos / "a.png", "-o", tmp_path / "out",
              "--mode", "original", "--height", 64, "--width", 96)
    assert res.exit_code == 1 and "b16.png" in res.output and "8-bit" in res.output
    assert (tmp_path / "out" / "a.png").exists() and not (tmp_path / "out" / "b16.png").exists()


def test_cli_refuses_outdir_equal_to_an_input_folder(weights, photos):
    before = digest(photos)
    res = run(weights, photos, "-o", photos)
    assert res.exit_code == 2 and "is the input folder" in res.output
    assert digest(photos) == before


def test_cli_refuses_to_overwrite_an_input(weights, photos, tmp_path):
    before = digest(photos)
    res = run(weights, photos / "a.png", "-o", photos)
    assert res.exit_code == 2 and "would overwrite the input" in res.output
    assert "a.png" in res.output
    assert digest(photos) == before
    # the --compare picture may not overwrite an input either
    write_image(tmp_path / "a_compare.png", smooth_picture(8, 8))
    res = run(weights, photos / "a.png", tmp_path / "a_compare.png", "-o", tmp_path, "--compare")
    assert res.exit_code == 2 and "would overwrite the input" in res.output


def test_cli_refuses_two_inputs_with_one_output_name(weights, photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_image(other / "a.png", smooth_picture(8, 8))
    res = run(weights, photos / "a.png", other / "a.png", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "same file name" in res.output
    assert not (tmp_path / "out").exists()


def test_cli_existing_outputs_need_force(weights, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    res = run(weights, photos / "a.png", photos / "c.jpg", "-o", out)
    assert res.exit_code == 2 and "--force" in res.output and "a.png" in res.output
    assert (out / "a.png").read_bytes() == b"keep me" and not (out / "c.jpg").exists()
    res = run(weights, photos / "a.png", "-o", out, "--force")
    assert res.exit_code == 0 and read_image(out / "a.png").shape == (30, 40, 3)


@pytest.mark.parametrize("args,code,needle", [
    (["--precision", "fp16", "--device", "cpu"], 2, "precision 'fp16' runs on device 'cuda'"),
    (["--tile", "40"], 2, "multiple of 16"),
    (["--tile", "64", "--overlap", "48"], 2, "half the tile"),
    (["--mode", "original", "--tile", "64"], 2, "--tile works with --mode full"),
    (["--height", "64"], 2, "--height sets the canvas of --mode original"),
    (["--overlap", "32"], 2, "--overlap only applies with --tile"),
    (["--mode", "original", "--width", "100"], 2, "multiple of 16"),
])
def test_cli_bad_options_are_refused_before_anything_runs(weights, photos, tmp_path, args, code,
                                                          needle):
    res = run(weights, photos / "a.png", "-o", tmp_path / "out", *args)
    assert res.exit_code == code and needle in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_cli_bad_weights_is_one_clean_error(photos, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torch")
    res = run(bad, photos / "a.png", "-o", tmp_path / "out")
    assert res.exit_code == 1 and "bad.pt" in res.output


def test_cli_tiles_with_a_progress_callback(weights, tmp_path):
    src = tmp_path / "big.png"
    write_image(src, smooth_picture(70, 90, seed=8))
    res = run(weights, src, "-o", tmp_path / "out", "--tile", 32, "--overlap", 16)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(
        read_image(tmp_path / "out" / "big.png"),
        deblur_image(read_model(weights), read_image(src), tile=32, overlap=16))


def test_cli_deblurs_the_four_photos_in_one_command(weights, tmp_path):
    out = tmp_path / "out"
    res = run(weights, PHOTOS, "-o", out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["01.png", "07.png", "08.png", "4c6.png"]
    assert read_image(out / "4c6.png").shape == (768, 1024, 3)

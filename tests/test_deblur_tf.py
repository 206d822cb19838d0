"""`--mode original` equals the original TF pipeline, pixel for pixel (the issue's criterion).

The reference is srn_port.reference.pipeline: the authors' test() replayed statement by statement
with the TF graph restored from a TF-written checkpoint, and pre/post-processing written
independently of srn_port.api.deblur. Both run on the same uint8 image and checkpoint; the
8-bit outputs must agree on >= 99.9% of pixels (per photo; over all pixels of a set of
small synthetic images) and never differ by more than 1 level (per image).

Why not 100%: TF and PyTorch sum convolution products in different orders (float32
round-off, srn_port/tolerances.py "output": <= 1e-5 x max |output|), and the truncation
to 8 bits turns an output within that round-off of a level boundary into a 1-level
difference; an upscaled (bicubic) result spreads such a pixel to its neighbours by at most
that level. Any real bug (a shifted pixel, a wrong resize, rounding instead of truncation,
a missed transpose) changes far more than 0.1% of pixels or by more than 1 level.

Checkpoints: width 4 (color, gray, lstm) written by TF (make_checkpoint) with random
weights whose last layer is scaled so that most outputs are inside [0, 1]
(tests/_deblur_ckpt.py; the share of unclipped pixels is printed), plus the trained
checkpoint examples/trained/color/ when it is in the repository.
Run with -s to see the per-image numbers.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from srn_port.core.network import SRNConfig
from srn_port.api.deblur import deblur_image, read_image

from _deblur_ckpt import smooth_picture, tame_weights
from conftest import PHOTOS, REPO

pytestmark = [pytest.mark.tf, pytest.mark.usefixtures("one_torch_thread")]

PHOTO_NAMES = ("01.png", "07.png", "08.png", "4c6.png")
#: gray/lstm run three planes per photo (3x the work of color); to keep this file near 3
#: minutes on 2 busy cores they get two photos: one exactly the canvas, one downscaled to
#: fit it (the two code paths). color and the trained checkpoint run all four.
PHOTOS_PER_MODEL = {"gray": ("01.png", "4c6.png"), "lstm": ("01.png", "4c6.png")}
TRAINED = REPO / "examples" / "trained" / "color"
#: The issue's definition of "pixel-identical" for 8-bit outputs (reason: module docstring).
MIN_EQUAL_FRACTION = 0.999
MAX_LEVEL_DIFFERENCE = 1
#: The original's canvas (run_model.py defaults), and a small one for the synthetic sizes.
CANVAS = (720, 1280)
SMALL_CANVAS = (64, 96)
RANDOM = ("color", "gray", "lstm")


def _sample() -> np.ndarray:
    """What tame_weights calibrates on: a photo scaled to 64x96, else a synthetic picture."""
    if (PHOTOS / "01.png").is_file():
        return cv2.resize(read_image(PHOTOS / "01.png"), (96, 64), interpolation=cv2.INTER_AREA)
    return smooth_picture(64, 96, seed=0)


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """name -> (torch model, checkpoint prefix, config); pipelines cached per canvas."""
    from srn_port.reference.pipeline import TFOriginalPipeline
    from srn_port.reference.graph import make_checkpoint
    from srn_port.api.weights import load_model

    made, pipelines = {}, {}
    sample = _sample()

    def get(name: str, canvas):
        if name not in made:
            if name == "trained":
                if not (TRAINED / "checkpoint").is_file():
                    pytest.skip(f"{TRAINED.relative_to(REPO)} is not in the repository yet "
                                f"(issue 6 trains it); the random checkpoints cover the "
                                f"pipeline")
                from srn_port.core.checkpoint import CheckpointReader

                with CheckpointReader(TRAINED) as reader:
                    prefix = reader.prefix
                model = load_model(TRAINED)
                made[name] = (model, prefix, model.config)
            else:
                config = SRNConfig(name, 4)
                weights = tame_weights(config, seed=1, sample=sample)
                prefix = make_checkpoint(tmp_path_factory.mktemp(f"tf_{name}"), config,
                                         seed=1, weights=weights)
                # make_checkpoint takes one Adam step after loading the weights (as a real
                # training checkpoint): the model must come from the file, via the converter.
                model = load_model(prefix)
                assert model.config == config
                made[name] = (model, prefix, config)
        model, prefix, config = made[name]
        if (name, canvas) not in pipelines:
            pipelines[(name, canvas)] = TFOriginalPipeline(prefix, config, *canvas)
        return model, pipelines[(name, canvas)]

    yield get
    for p in pipelines.values():
        p.close()


def compare(ours: np.ndarray, ref: np.ndarray, label: str, tally: dict = None) -> None:
    """Check one image against TF: never more than 1 level apart, and (alone, or with
    ``tally`` summed over a set of small images) >= 99.9% of pixels equal."""
    assert ours.dtype == ref.dtype == np.uint8, label
    assert ours.shape == ref.shape, f"{label}: {ours.shape} vs TF {ref.shape}"
    d = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    equal, total = int(np.sum(d == 0)), d.size
    print(f"  {label:<34} equal {100 * equal / total:9.5f}%  max {d.max()}  "
          f"unclipped {100 * np.mean((ref > 0) & (ref < 255)):5.1f}%")
    assert d.max() <= MAX_LEVEL_DIFFERENCE, f"{label}: differs by {d.max()} levels"
    if tally is None:
        check_fraction(equal, total, label)
    else:
        tally["equal"] = tally.get("equal", 0) + equal
        tally["total"] = tally.get("total", 0) + total


def check_fraction(equal: int, total: int, label: str) -> None:
    # A tiny image has few pixels (a 5x7 one: one pixel is 3%), so for the synthetic sets
    # the fraction is taken over all their pixels together; max <= 1 holds per image.
    assert equal >= MIN_EQUAL_FRACTION * total, (
        f"{label}: {100 * equal / total:.4f}% of pixels equal (need >= "
        f"{100 * MIN_EQUAL_FRACTION}%)")


def run_both(model, pipeline, image: np.ndarray, canvas) -> tuple:
    t0 = time.perf_counter()
    ref = pipeline.run(image)
    t1 = time.perf_counter()
    ours = deblur_image(model, image, mode="original", height=canvas[0], width=canvas[1])
    t2 = time.perf_counter()
    return ours, ref, t1 - t0, t2 - t1


@pytest.mark.parametrize("name", RANDOM + ("trained",))
def test_original_mode_equals_tf_on_the_four_photos(setups, name):
    model, pipeline = setups(name, CANVAS)
    print(f"\n{name} ({model.config.variant}, width {model.config.width}), canvas 720x1280")
    for photo in PHOTOS_PER_MODEL.get(name, PHOTO_NAMES):
        image = read_image(PHOTOS / photo)
        ours, ref, t_tf, t_torch = run_both(model, pipeline, image, CANVAS)
        compare(ours, ref, f"{photo} {image.shape[0]}x{image.shape[1]} "
                           f"(tf {t_tf:.1f}s, torch {t_torch:.1f}s)")


#: (h, w): smaller than the canvas, portrait (transposed), tiny, exactly the canvas, larger
#: (downscaled, incl. portrait, very wide, and one pixel over), for the 64x96 canvas.
AWKWARD = [(40, 70), (70, 40), (1, 1), (5, 7), (7, 5), (64, 96), (96, 64), (100, 150),
           (150, 100), (90, 300), (65, 97), (200, 97)]


def _awkward(h: int, w: int, k: int) -> np.ndarray:
    """A crop of a photo (else a synthetic picture) resized to h x w."""
    if (PHOTOS / "07.png").is_file():
        photo = read_image(PHOTOS / "07.png")
        y0, x0 = 37 * k % 300, 53 * k % 600
        crop = photo[y0:y0 + 300, x0:x0 + 500]
        return np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA))
    return smooth_picture(h, w, seed=k)


@pytest.mark.parametrize("name", RANDOM + ("trained",))
def test_original_mode_equals_tf_on_awkward_sizes(setups, name):
    model, pipeline = setups(name, SMALL_CANVAS)
    print(f"\n{name} ({model.config.variant}, width {model.config.width}), canvas 64x96")
    tally = {}
    for k, (h, w) in enumerate(AWKWARD):
        image = _awkward(h, w, k)
        ours, ref, _, _ = run_both(model, pipeline, image, SMALL_CANVAS)
        compare(ours, ref, f"{h}x{w}", tally)
    check_fraction(tally["equal"], tally["total"], f"{name}, all {len(AWKWARD)} sizes")


@pytest.mark.parametrize("name", ["gray", "lstm"])
def test_gray_image_equals_tf_on_three_equal_planes(setups, name):
    """Documented extension: a gray image through a gray model is what the original gives
    for the RGB image with three equal planes."""
    model, pipeline = setups(name, SMALL_CANVAS)
    print(f"\n{name}: gray images vs TF on three equal planes")
    tally = {}
    for k, (h, w) in enumerate([(40, 70), (150, 100), (5, 7)]):
        gray = _awkward(h, w, k)[:, :, 1].copy()
        ref = pipeline.run(np.stack([gray] * 3, axis=-1))
        ours = deblur_image(model, gray, mode="original", height=SMALL_CANVAS[0],
                            width=SMALL_CANVAS[1])
        for c in range(3):
            compare(ours, ref[:, :, c], f"gray {h}x{w} vs plane {c}", tally)
    check_fraction(tally["equal"], tally["total"], f"{name}, gray images")

"""The original test-time pipeline with the TF graph: the reference for ``--mode original``.

A replay of ``DEBLUR.test()`` (models/model.py of jiangsutx/SRN-Deblur) for one image at a
time, statement by statement, with the TF graph of :mod:`srn_port.reference.graph` restored
from a checkpoint at the canvas size. It is written separately from
:mod:`srn_port.api.deblur` (which computes the same thing with PyTorch) and shares none of its
code, so that a mistake in one cannot hide in both:

* ``scipy.misc.imread`` / ``imresize`` (gone from SciPy since 1.3) are re-created from what
  SciPy 1.0-1.2 did: ``imread`` = ``np.array(Image.open(path))``; ``imresize(arr, [h, w],
  'bicubic')`` = ``toimage(arr)`` (for uint8 data ``bytescale`` returns it unchanged; the
  channel axis is the first axis of length 3, else of length 4), then PIL
  ``resize((w, h), resample=3)`` (BICUBIC), then ``np.array``;
* ``blurPad / 255.0`` is fed as the original does: a float64 array into a float32
  placeholder, TF doing the conversion;
* ``im2uint8`` of util/util.py: ``np.clip(x, 0.0, 1.0) * 255.0`` then ``astype(np.uint8)``.

TensorFlow is imported lazily (through :func:`srn_port.reference.graph.import_tf`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..core.network import SRNConfig


def scipy_imread(path) -> np.ndarray:
    """``scipy.misc.imread(path)`` (SciPy <= 1.2: ``fromimage(Image.open(path))``)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im)


def _toimage(arr: np.ndarray):
    """``scipy.misc.toimage`` for the uint8 arrays test() passes (3-D, no cmin/cmax)."""
    from PIL import Image

    data = np.asarray(arr)
    shape = list(data.shape)
    if data.ndim == 2:
        return Image.frombytes("L", (shape[1], shape[0]), data.astype(np.uint8).tobytes())
    if 3 in shape:
        ca = int(np.flatnonzero(np.asarray(shape) == 3)[0])
    else:
        ca = int(np.flatnonzero(np.asarray(shape) == 4)[0])
    numch = shape[ca]
    assert data.dtype == np.uint8  # bytescale() returns uint8 input unchanged
    bytedata = data
    if ca == 2:
        strdata = bytedata.tobytes()
        size = (shape[1], shape[0])
    elif ca == 1:
        strdata = np.transpose(bytedata, (0, 2, 1)).tobytes()
        size = (shape[2], shape[0])
    else:
        strdata = np.transpose(bytedata, (1, 2, 0)).tobytes()
        size = (shape[2], shape[1])
    mode = "RGB" if numch == 3 else "RGBA"
    return Image.frombytes(mode, size, strdata)


def scipy_imresize(arr: np.ndarray, size, interp: str = "bicubic") -> np.ndarray:
    """``scipy.misc.imresize(arr, [h, w], interp)`` for a list size (SciPy <= 1.2)."""
    im = _toimage(arr)
    func = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "cubic": 3}
    imnew = im.resize((size[1], size[0]), resample=func[interp])
    return np.array(imnew)


def im2uint8(x: np.ndarray) -> np.ndarray:
    """util/util.py ``im2uint8`` for numpy input."""
    t = np.clip(x, 0.0, 1.0) * 255.0
    return t.astype(np.uint8)


class TFOriginalPipeline:
    """``DEBLUR.test()`` for one model and canvas: ``run(blur)`` deblurs one uint8 RGB
    image (h, w, 3) exactly as the original's loop body does and returns the uint8 result
    that test() would save."""

    def __init__(self, checkpoint, config: SRNConfig, height: int = 720, width: int = 1280,
                 threads: Optional[int] = None):
        from .graph import ReferenceModel

        self.H, self.W = height, width
        self.model_type = config.variant
        inp_chns = 3 if self.model_type == "color" else 1
        self.batch_size = 1 if self.model_type == "color" else 3
        self.reference = ReferenceModel(Path(checkpoint), config,
                                        (self.batch_size, height, width, inp_chns),
                                        threads=threads, record=False)

    def run(self, blur: np.ndarray) -> np.ndarray:
        H, W = self.H, self.W
        h, w, c = blur.shape
        # make sure the width is larger than the height
        rot = False
        if h > w:
            blur = np.transpose(blur, [1, 0, 2])
            rot = True
        h = int(blur.shape[0])
        w = int(blur.shape[1])
        resize = False
        if h > H or w > W:
            scale = min(1.0 * H / h, 1.0 * W / w)
            new_h = int(h * scale)
            new_w = int(w * scale)
            blur = scipy_imresize(blur, [new_h, new_w], "bicubic")
            resize = True
            blurPad = np.pad(blur, ((0, H - new_h), (0, W - new_w), (0, 0)), "edge")
        else:
            blurPad = np.pad(blur, ((0, H - h), (0, W - w), (0, 0)), "edge")
        blurPad = np.expand_dims(blurPad, 0)
        if self.model_type != "color":
            blurPad = np.transpose(blurPad, (3, 1, 2, 0))

        deblur = self.reference.run(blurPad / 255.0, activations=False).outputs
        res = deblur[-1]
        if self.model_type != "color":
            res = np.transpose(res, (3, 1, 2, 0))
        res = im2uint8(res[0, :, :, :])
        # crop the image into original size
        if resize:
            res = res[:new_h, :new_w, :]
            res = scipy_imresize(res, [h, w], "bicubic")
        else:
            res = res[:h, :w, :]

        if rot:
            res = np.transpose(res, [1, 0, 2])
        return res

    def close(self):
        self.reference.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

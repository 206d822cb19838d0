"""Deblur photos with an SRN model: image files in, image files out.

Two pipelines around the network (``mode``):

``"full"`` (default)
    Full resolution whatever the size: edge-pad bottom/right to a multiple of 16, run,
    crop back, round to the input's bit depth. 8- and 16-bit. ``tile=N`` runs large images
    in overlapping N x N tiles (bounded memory) and blends the overlaps linearly; see
    :func:`deblur_image` for how far that is from the untiled result (about 68 dB PSNR
    at tile 256, 79-89 dB at tile 512, never more than 1 level on 8 bits).
``"original"``
    A replay of the authors' ``DEBLUR.test()`` (models/model.py), step by step: fixed
    ``height`` x ``width`` canvas (720 x 1280), transpose of portrait images, bicubic
    downscale of images larger than the canvas (PIL, as ``scipy.misc.imresize`` did),
    edge-pad to the canvas, ``x / 255.0`` computed in float64 and fed as float32, last level,
    ``im2uint8`` (clip, * 255, *truncate*), crop, bicubic upscale back, transpose back.
    Its outputs equal the TF original's on the same image and checkpoint
    (tests/test_deblur_tf.py). 8-bit only: the original read 8-bit RGB, so there is no
    original behaviour to replay for 16 bits (:class:`ImageError`; use ``"full"``).
    Not replayed: ``scipy.misc.imresize`` guessed the channel axis as the first axis of
    length 3, so the original mis-resized an image whose fitted size is 3 pixels on a side;
    here the channels are always last. An image that the canvas shrinks to 0 pixels (e.g.
    1x5000) is an :class:`ImageError` (the original crashes). Files are written by OpenCV
    (JPEG quality 95; the original's ``scipy.misc.imsave`` used PIL's default, 75).

Both modes, beyond what the original accepted:

* colour planes: ``color`` models run RGB; ``gray`` and ``lstm`` models run the R, G, B
  planes as a batch of three 1-channel images (as the original); a gray image runs once
  (batch 1) through a gray model, and through a ``color`` model as three equal planes whose
  three outputs are averaged (in float, before the conversion back to integers);
* an alpha channel is passed through untouched (only RGB goes through the network);
* ``original`` mode on a gray image does what the original does to the RGB image with
  three equal planes; for gray/lstm models that is exactly the original's result.

The library returns arrays and prints nothing; ``progress(done, total)`` reports tiles.
Image files are read and written by :mod:`srn_port.data.images` (RGB(A) order in memory).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.errors import ImageError, SrnPortError
from ..core.network import SIZE_MULTIPLE
from ..core.options import (DEFAULT_OVERLAP, DEVICES, IMAGE_EXTENSIONS, MODES,  # noqa: F401
                            ORIGINAL_CANVAS, PRECISIONS)
from ..data.images import MAX_VALUE, encode_image, read_image, side_by_side  # noqa: F401
from ..data.images import write_image  # noqa: F401
from ..nn.model import SRN
from ..nn.precision import ieee_fp32

Progress = Callable[[int, int], None]


# -- device and precision ----------------------------------------------------------------

def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must be available."""
    if isinstance(device, torch.device):
        return device
    if device not in DEVICES:
        raise SrnPortError(f"Unknown device '{device}'; expected one of {', '.join(DEVICES)}.")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if device == "cuda" and not cuda:
        raise SrnPortError("device 'cuda': CUDA is not available (no NVIDIA GPU, or this torch "
                           "build is CPU-only). Use device 'cpu', or install a CUDA build of "
                           "torch.")
    if device == "mps" and not mps:
        raise SrnPortError("device 'mps': Apple's Metal backend is not available (it needs an "
                           "Apple-silicon Mac and a torch build with MPS). Use device 'cpu'.")
    return torch.device(device)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device`` (None for fp32), or a clear error
    where PyTorch does not support it: fp16 runs on cuda and mps (CPU half-precision
    convolutions are not what CPUs are built for: use bf16 there); bf16 on cpu and cuda
    (GPUs with bf16 support)."""
    if precision not in PRECISIONS:
        raise SrnPortError(f"Unknown precision '{precision}'; expected one of "
                           f"{', '.join(PRECISIONS)}.")
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if precision == "fp16":
        if kind not in ("cuda", "mps"):
            raise SrnPortError(f"precision 'fp16' runs on device 'cuda' or 'mps' only, not on "
                               f"{kind}. On a CPU use precision 'fp32' (or 'bf16' where the CPU "
                               f"has bfloat16 instructions).")
        return torch.float16
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise SrnPortError("precision 'bf16': this GPU has no bfloat16 support; use 'fp16'.")
    if kind not in ("cpu", "cuda"):
        raise SrnPortError(f"precision 'bf16' runs on device 'cpu' or 'cuda' only, not on "
                           f"{kind}. On mps use precision 'fp16'.")
    if kind == "cpu" and not cpu_has_native_bf16():
        raise SrnPortError(
            "precision 'bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX, e.g. "
            "Intel Xeon Sapphire Rapids or later, AMD Zen 4 or later); this CPU has neither, "
            "and emulated bf16 is about 14x slower than fp32 here. Use precision 'fp32' (the "
            "default), which is also the exact one.")
    return torch.bfloat16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles).

    Elsewhere (AVX2-only CPUs, AVX-512 without the BF16 extension) oneDNN emulates bf16
    with conversions around fp32 arithmetic: measured 14x *slower* than fp32 on an AVX2
    AMD EPYC (color 256x256: 15.3 s against TF's 1.1 s), so bf16 is refused there."""
    cpu = torch.cpu
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported",
                                              "_is_amx_tile_supported")]
    checks = [c for c in checks if c is not None]
    if not checks:  # a torch without these probes: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(c() for c in checks)


def _bf16_model(model):
    """A bfloat16 copy of ``model``, made for this call (never cached: a cache would go
    stale when the model's weights change in place). bf16 runs the whole network in bf16
    (weights cast once per call, a few MB) rather than under autocast, which casts every
    conv's input and weights on each call: measured 2x faster on a CPU with AMX, same PSNR
    (52.8 dB against fp32 on a photo with the trained example). bf16 has float32's range,
    so nothing overflows; fp16 has not, so fp16 keeps autocast's fp32 islands."""
    if next(model.parameters()).dtype == torch.bfloat16:
        return model
    return copy.deepcopy(model).to(torch.bfloat16)


@contextlib.contextmanager
def _numerics(device: torch.device, amp: Optional[torch.dtype]) -> Iterator[None]:
    """inference_mode, plus autocast for fp16. For fp32 on CUDA, TF32 convolutions
    (PyTorch's cuDNN default on Ampere and later, ~1e-3 relative error) are switched off
    for the duration, so fp32 means fp32 as in the original."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if amp is not None and amp != torch.bfloat16:
            stack.enter_context(torch.autocast(device.type, dtype=amp))
        elif device.type == "cuda":
            stack.enter_context(ieee_fp32())
        yield


# -- the network on float planes -----------------------------------------------------------

def _model_device(model) -> torch.device:
    if not isinstance(model, torch.nn.Module):  # an OnnxModel says where it runs
        return model.device
    return next(model.parameters()).device


def _run_network(model, x: np.ndarray, device: torch.device,
                 amp: Optional[torch.dtype]) -> np.ndarray:
    """Last level output for ``x`` (H, W, C) float32, C = 1 or 3, H and W multiples of 16."""
    return _run_network_batch(model, x[None], device, amp)[0]


def _run_network_batch(model, x: np.ndarray, device: torch.device,
                       amp: Optional[torch.dtype]) -> np.ndarray:
    """Last level output for the images ``x`` (N, H, W, C) float32 in one network call.

    Colour handling of the original: a color model takes RGB as one sample; gray and lstm
    models take the planes as a batch of 1-channel samples. A 1-plane input to a color
    model runs as three equal planes and the outputs are averaged.
    """
    n, h, w, planes = x.shape
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    if model.config.channels == 3:
        batch = t if planes == 3 else t.expand(n, 3, h, w)
    else:
        batch = t.reshape(n * planes, 1, h, w)  # the planes as a batch of gray images
    if amp == torch.bfloat16:
        model, batch = _bf16_model(model), batch.to(torch.bfloat16)
    with _numerics(device, amp):
        y = model(batch)[-1].float()
    if model.config.channels == 3:
        y = y if planes == 3 else y.mean(dim=1, keepdim=True)
    else:
        y = y.reshape(n, planes, h, w)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def tile_starts(length: int, tile: int, overlap: int) -> Tuple[List[int], int]:
    """Start offsets of the tiles along one axis, and the tile length there.

    The fewest tiles whose neighbours overlap by at least ``overlap``, spread evenly over
    ``length`` (the first starts at 0, the last ends at ``length``), every start a multiple
    of 16 when ``length``, ``tile`` and ``overlap`` are: each tile then sees the same
    sampling phase as the untiled run.
    """
    if length <= tile:
        return [0], length
    n = 1 + -(-(length - tile) // (tile - overlap))
    room = (length - tile) // SIZE_MULTIPLE
    starts = [SIZE_MULTIPLE * int(round(k * room / (n - 1))) for k in range(n)]
    return starts, tile


def _blend_weights(starts: Sequence[int], size: int) -> List[np.ndarray]:
    """Per tile, 1-D weights. Across each overlap with a neighbour (``a`` pixels): 0 over
    the outer quarter (where the tile's missing context shows most), a linear ramp over
    the middle half, 1 beyond; so two overlapping tiles' weights sum to 1 across it."""
    d = np.arange(size, dtype=np.float64) + 0.5  # pixel centres' distance from the start edge

    def ramp(a: int) -> np.ndarray:
        return np.clip((d - a / 4) / (a / 2), 0.0, 1.0) if a > 0 else np.ones(size)

    out = []
    for k, s in enumerate(starts):
        w = np.ones(size)
        if k > 0:
            w = np.minimum(w, ramp(starts[k - 1] + size - s))
        if k + 1 < len(starts):
            w = np.minimum(w, ramp(s + size - starts[k + 1])[::-1])
        out.append(w.astype(np.float32))
    return out


def _run_tiled(model, x: np.ndarray, tile: int, overlap: int, device, amp,
               progress: Optional[Progress]) -> np.ndarray:
    h, w, _ = x.shape
    ys, th = tile_starts(h, tile, overlap)
    xs, tw = tile_starts(w, tile, overlap)
    total = len(ys) * len(xs)
    if total == 1:
        out = _run_network(model, x, device, amp)
        if progress:
            progress(1, 1)
        return out
    wy, wx = _blend_weights(ys, th), _blend_weights(xs, tw)
    acc = None
    norm = np.zeros((h, w, 1), np.float32)
    done = 0
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            part = _run_network(model, x[y0:y0 + th, x0:x0 + tw], device, amp)
            if acc is None:
                acc = np.zeros((h, w, part.shape[2]), np.float32)
            weight = (wy[i][:, None] * wx[j][None, :])[:, :, None]
            acc[y0:y0 + th, x0:x0 + tw] += part * weight
            norm[y0:y0 + th, x0:x0 + tw] += weight
            done += 1
            if progress:
                progress(done, total)
    assert norm.min() > 0, "tiles leave pixels uncovered"  # by construction of the weights
    return acc / norm


# -- the two pipelines -------------------------------------------------------------------

def _pad_edge(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-pad ``a`` (H, W[, C]) at the bottom/right to ``height`` x ``width``."""
    pad = [(0, height - a.shape[0]), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, mode="edge")


def _to_unit_float(a: np.ndarray, max_value: float) -> np.ndarray:
    # The original feeds `blurPad / 255.0` (a float64 array) to a float32 placeholder: the
    # quotient is rounded to float64, then to float32. A direct float32 division rounds
    # once; double rounding could differ in the last bit. (Checked: for all 256 uint8 and
    # 65536 uint16 values the two agree, so this is the original's order by construction
    # rather than a measured fix.)
    return (a.astype(np.float64) / max_value).astype(np.float32)


def _pil_bicubic(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """``scipy.misc.imresize(a, [height, width], 'bicubic')`` for uint8 RGB (or one plane):
    a PIL ``Image.resize((width, height), BICUBIC)`` on the uint8 image."""
    from PIL import Image

    mode = "RGB" if a.ndim == 3 else "L"
    return np.asarray(Image.fromarray(np.ascontiguousarray(a), mode)
                      .resize((width, height), Image.BICUBIC))


def _original(model, planes: np.ndarray, height: int, width: int, device, amp,
              progress: Optional[Progress]) -> np.ndarray:
    """The original test() on ``planes`` (h, w, C) uint8, C = 1 or 3; returns (h, w, C)."""
    img = planes
    rot = img.shape[0] > img.shape[1]
    if rot:  # the original makes every image landscape
        img = img.transpose(1, 0, 2)
    h, w = img.shape[:2]
    resize = h > height or w > width
    if resize:
        scale = min(1.0 * height / h, 1.0 * width / w)
        new_h, new_w = int(h * scale), int(w * scale)
        if new_h == 0 or new_w == 0:
            raise ImageError(f"a {h}x{w} image shrinks to {new_h}x{new_w} on the "
                             f"{height}x{width} canvas of mode 'original' (the original "
                             f"fails on it too); use mode 'full'.")
        img = _pil_bicubic(img[:, :, 0] if img.shape[2] == 1 else img, new_h, new_w)
        img = img.reshape(new_h, new_w, -1)
    pad = _pad_edge(img, height, width)
    y = _run_network(model, _to_unit_float(pad, 255.0), device, amp)
    if progress:
        progress(1, 1)
    # im2uint8 of the original: clip, * 255.0 and a cast, i.e. truncation (in float32).
    res = (np.clip(y, np.float32(0.0), np.float32(1.0)) * np.float32(255.0)).astype(np.uint8)
    if resize:
        res = res[:new_h, :new_w]
        res = _pil_bicubic(res[:, :, 0] if res.shape[2] == 1 else res, h, w).reshape(h, w, -1)
    else:
        res = res[:h, :w]
    if rot:
        res = res.transpose(1, 0, 2)
    return np.ascontiguousarray(res)


def _full(model, planes: np.ndarray, tile: Optional[int], overlap: int, device, amp,
          progress: Optional[Progress]) -> np.ndarray:
    """Full resolution: pad to a multiple of 16, run (tiled or not), crop, round."""
    if tile is None:
        out = _full_batch(model, planes[None], device, amp)[0]
        if progress:
            progress(1, 1)
        return out
    h, w = planes.shape[:2]
    max_value = MAX_VALUE[planes.dtype]
    y = _run_tiled(model, _to_unit_float(_pad_to_multiple(planes), max_value), tile, overlap,
                   device, amp, progress)
    return _round(y[:h, :w], max_value, planes.dtype)


def _pad_to_multiple(a: np.ndarray) -> np.ndarray:
    """Edge-pad the last-but-one two axes (H, W of (..., H, W, C)) to multiples of 16."""
    h, w = a.shape[-3:-1]
    hp, wp = -(-h // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-w // SIZE_MULTIPLE) * SIZE_MULTIPLE
    pad = [(0, 0)] * (a.ndim - 3) + [(0, hp - h), (0, wp - w), (0, 0)]
    return np.pad(a, pad, mode="edge")


def _round(y: np.ndarray, max_value: float, dtype) -> np.ndarray:
    y = np.clip(y, np.float32(0.0), np.float32(1.0)) * np.float32(max_value)
    return np.rint(y).astype(dtype)


def _full_batch(model, planes: np.ndarray, device, amp) -> np.ndarray:
    """:func:`_full` (untiled) of N same-sized images (N, H, W, C) in one network call."""
    h, w = planes.shape[1:3]
    max_value = MAX_VALUE[planes.dtype]
    y = _run_network_batch(model, _to_unit_float(_pad_to_multiple(planes), max_value), device,
                           amp)
    return _round(y[:, :h, :w], max_value, planes.dtype)


def default_overlap(tile: int) -> int:
    """:data:`DEFAULT_OVERLAP`, or less for tiles under 128 px: at most half the tile."""
    return min(DEFAULT_OVERLAP, tile // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE)


def check_tiling(tile: Optional[int], overlap: int) -> None:
    if tile is None:
        return
    if tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE:
        raise SrnPortError(f"tile {tile}: the tile size must be a positive multiple of "
                           f"{SIZE_MULTIPLE} (e.g. 256 or 512).")
    if overlap < 0 or overlap % SIZE_MULTIPLE or overlap > tile // 2:
        raise SrnPortError(f"overlap {overlap}: the overlap must be a multiple of "
                           f"{SIZE_MULTIPLE} from 0 to half the tile size ({tile // 2}), so "
                           f"that tiles start on the network's 16-pixel grid and the blend "
                           f"ramps of a tile's two sides do not meet.")


def check_canvas(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if v < SIZE_MULTIPLE or v % SIZE_MULTIPLE:
            raise SrnPortError(f"{name} {v}: the canvas of mode 'original' must be a positive "
                               f"multiple of {SIZE_MULTIPLE} (the original's default is "
                               f"{ORIGINAL_CANVAS[0]}x{ORIGINAL_CANVAS[1]}).")


def deblur_image(model, image: np.ndarray, mode: str = "full",
                 height: int = ORIGINAL_CANVAS[0], width: int = ORIGINAL_CANVAS[1],
                 tile: Optional[int] = None, overlap: Optional[int] = None,
                 device=None, precision: str = "fp32",
                 progress: Optional[Progress] = None) -> np.ndarray:
    """Deblur one image array with a loaded SRN ``model``; returns the same shape and dtype.

    ``image``: HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA, alpha returned untouched), uint8 or
    uint16 (16-bit only in ``mode="full"``). ``mode``: ``"full"`` or ``"original"`` (see
    the module docstring). ``height``/``width``: the canvas of ``"original"`` (multiples of
    16). ``tile``/``overlap``: ``"full"`` only; tiles of ``tile`` x ``tile`` pixels (a
    multiple of 16), neighbours overlapping by at least ``overlap`` pixels (a multiple of
    16, at most half the tile; default :data:`DEFAULT_OVERLAP`, or half a tile under 128 px)
    and blended with linear ramps; peak memory is that of one tile. ``device``: None keeps the
    model where it is; otherwise ``auto``/``cpu``/``cuda``/``mps`` and the model is moved
    there (``nn.Module.to``, in place). ``precision``: ``fp32``, ``fp16`` (cuda, mps) or
    ``bf16`` (cpu, cuda), by autocast; the exactness claims hold for fp32.

    Tiling error: each tile sees only its own content (and TF 'SAME' zero padding at its
    borders), and SRN's 1/4-scale level has a large receptive field, so tiles are not
    exactly the untiled result; the blend drops the outer quarter of every overlap, where
    the error is largest. Measured with ``tests/_deblur_measure.py`` on the four photos of
    examples/photos (720x1280, 768x1024) and the trained color checkpoint
    examples/trained/color (width 8, step 500), 8-bit, tiled vs untiled:

    ==========  =======  =============  ==========  =====================
    tile        overlap  PSNR (dB)      max diff    pixels that differ
    ==========  =======  =============  ==========  =====================
    256         64       67.7 - 68.4    1 level     0.9 - 1.1 %
    256         128      71.9 - 74.9    1 level     0.2 - 0.4 %
    512         64       79.0 - 89.2    1 level     0.01 - 0.08 %
    256         0        49.5 - 50.2    71 levels   13 - 15 % (visible seams)
    ==========  =======  =============  ==========  =====================

    Memory: a 3840x2160 photo with that width-8 model peaks at 2.2 GB resident untiled,
    0.8 GB with ``tile=512`` (CPU, fp32).
    """
    if mode not in MODES:
        raise SrnPortError(f"Unknown mode '{mode}'; expected one of {', '.join(MODES)}.")
    image = np.asarray(image)
    if image.dtype not in MAX_VALUE:
        raise ImageError(f"expected a uint8 or uint16 image, got {image.dtype}.")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"empty image (shape {image.shape}).")
    if mode == "original":
        check_canvas(height, width)
        if image.dtype != np.uint8:
            raise ImageError("mode 'original' replays the authors' pipeline, which reads 8-bit "
                             "images only; this image is 16-bit. Use mode 'full' (the "
                             "default), which keeps all 16 bits.")
        if tile is not None:
            raise SrnPortError("tiling works with mode 'full'; mode 'original' runs the fixed "
                               "canvas in one piece, as the original does.")
    else:
        if tile is not None and overlap is None:
            overlap = default_overlap(tile)
        check_tiling(tile, overlap)

    if device is None:
        dev = _model_device(model)
    else:
        dev = resolve_device(device)
        model.to(dev)
    amp = autocast_dtype(precision, dev)
    if amp is not None and not isinstance(model, SRN):
        raise SrnPortError(f"precision '{precision}' runs srn-port's own model; an exported "
                           f"model ({type(model).__name__}) runs in the precision it was "
                           f"exported in (fp32). Use precision 'fp32', or the converted weights.")

    gray = image.ndim == 2
    planes = image[:, :, None] if gray else image[:, :, :3]
    if mode == "original":
        out = _original(model, planes, height, width, dev, amp, progress)
    else:
        out = _full(model, planes, tile, overlap, dev, amp, progress)
    if gray:
        return out[:, :, 0]
    if image.shape[2] == 4:
        return np.concatenate([out, image[:, :, 3:]], axis=2)
    return out


def deblur_batch(model, images: Sequence[np.ndarray], precision: str = "fp32") -> List[np.ndarray]:
    """:func:`deblur_image` with ``mode="full"`` (untiled) of several images of one shape and
    dtype (video frames) in one network call; the same results as one image at a time
    within float32 round-off of the batched convolutions (tests/test_video.py)."""
    if not images:
        return []
    first = np.asarray(images[0])
    if any(np.asarray(i).shape != first.shape or np.asarray(i).dtype != first.dtype
           for i in images):
        raise ImageError("a batch holds images of one shape and dtype; deblur the others "
                         "one at a time.")
    if len(images) == 1 or first.ndim != 3 or first.shape[2] != 3:
        return [deblur_image(model, i, precision=precision) for i in images]
    if first.dtype not in MAX_VALUE:
        raise ImageError(f"expected uint8 or uint16 images, got {first.dtype}.")
    dev = _model_device(model)
    amp = autocast_dtype(precision, dev)
    if amp is not None and not isinstance(model, SRN):
        return [deblur_image(model, i, precision=precision) for i in images]
    out = _full_batch(model, np.stack(images), dev, amp)
    return list(out)


def compile_model(model, mode: str = "default", precision: str = "fp32"):
    """``model`` (an :class:`SRN`) compiled in place by ``torch.compile`` (``nn.Module.
    compile``: it stays an SRN with its weights and metadata) and returned.

    ``mode``: ``default``, or ``reduce-overhead`` (CUDA graphs; CUDA only; worth it where
    the input size repeats: video frames, tiles, a dataset of one size). The first call at
    each input size compiles (seconds to minutes); later calls reuse it. For ``precision``
    bf16 the weights are cast to bfloat16 once, before compiling (the eager path makes a
    bf16 copy per call, see ``_bf16_model``). Outputs equal the eager ones within the
    tolerance table's 'output' (tests/test_compile.py). Refused with the reason when
    Inductor cannot run here (no C++ compiler, no Triton)."""
    from ..nn.compiling import COMPILE_MODES, inductor_unavailable, quiet_dynamo

    if not isinstance(model, SRN):
        raise SrnPortError(f"--compile compiles srn-port's own model; an exported model "
                           f"({type(model).__name__}) is run as it was exported. Give the "
                           f"converted weights (or a TF checkpoint) to compile.")
    if mode not in COMPILE_MODES:
        raise SrnPortError(f"Unknown compile mode '{mode}'; expected one of "
                           f"{', '.join(COMPILE_MODES)}.")
    dev = _model_device(model)
    if mode == "reduce-overhead" and dev.type != "cuda":
        raise SrnPortError(f"compile mode 'reduce-overhead' records CUDA graphs and runs on "
                           f"device cuda only, not {dev.type}; use the default mode.")
    why = inductor_unavailable(dev.type)
    if why:
        raise SrnPortError(f"--compile: torch.compile cannot run on {dev.type} here ({why}). "
                           f"Run without --compile (the eager path computes the same "
                           f"outputs).")
    quiet_dynamo()
    if precision == "bf16":  # once, not a fresh bf16 copy (and compilation) per call
        model.to(torch.bfloat16)
    model.compile(mode=mode)
    return model

"""Image files in and out (OpenCV codecs), as RGB(A) or gray arrays; no torch.

Images are RGB(A) order in memory; :func:`read_image`/:func:`write_image` convert from and
to OpenCV's BGR(A). 8- and 16-bit unsigned samples.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import List

import cv2
import numpy as np

from ..core import limits
from ..core.errors import ImageError, SrnPortError
from ..core.fileio import atomic_write, regular_file_size
from ..core.options import IMAGE_EXTENSIONS

#: The largest sample value of each supported sample type.
MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}



def declared_size(data: bytes):
    """(width, height) that an image file's header declares, read without decoding the
    pixels (PIL reads headers lazily); None where PIL does not know the format."""
    from PIL import Image

    bomb_limit = Image.MAX_IMAGE_PIXELS  # PIL's own bomb check would hide the size
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # not an image PIL knows, or a damaged header: OpenCV decides
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit


def read_image(path, max_pixels: int = None) -> np.ndarray:
    """Read an image file as stored: HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA), uint8 or
    uint16. EXIF orientation is not applied (neither did the original's scipy imread).

    Only regular files are read (not FIFOs or devices), at most ``limits.IMAGE_BYTES``; an
    image whose header declares more than ``max_pixels`` pixels (default
    ``limits.PIXELS``) is refused before its pixels are decoded. Raises
    :class:`ImageError` naming the file if it is none of that, not an image OpenCV can
    decode, truncated, or holds another sample type (float, signed).
    """
    path = Path(path)
    max_pixels = limits.PIXELS.value() if max_pixels is None else max_pixels
    try:
        size = regular_file_size(path, "image")
    except SrnPortError as exc:
        raise ImageError(str(exc)) from None
    if size > limits.IMAGE_BYTES.value():
        raise ImageError(f"'{path}': {size:,} bytes, more than the {limits.IMAGE_BYTES.value():,} "
                         f"srn-port reads as one image; raise {limits.IMAGE_BYTES.env} to read it.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"'{path}': cannot read the file ({exc.strerror or exc}).") from None
    dims = declared_size(data)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        raise ImageError(
            f"'{path}': its header declares {dims[0]}x{dims[1]} pixels "
            f"({dims[0] * dims[1] / 1e6:.1f} MP), more than the limit of {max_pixels / 1e6:g} MP. "
            f"Skipped, nothing was decoded. To deblur it anyway, raise the limit "
            f"(srn-port deblur --max-pixels N, or {limits.PIXELS.env}) and use --tile 512 to "
            f"bound the network's memory.")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        _check_jpeg_complete(path, data)
    image = None
    if data:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:  # e.g. out of memory, or OpenCV's own pixel limit
            raise ImageError(f"'{path}': OpenCV could not decode it ({str(exc).strip()}).") from None
    if image is None:
        raise ImageError(f"'{path}': not an image, or a corrupt one (OpenCV cannot decode "
                         f"it). Readable formats: {', '.join(IMAGE_EXTENSIONS)}.")
    if image.dtype not in MAX_VALUE:
        raise ImageError(f"'{path}': {image.dtype} samples; srn-port deblurs 8- and 16-bit "
                         f"unsigned images. Convert it to 8 or 16 bits first.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ImageError(f"'{path}': {image.shape[2]} channels; expected gray, RGB or RGBA.")
    if image.ndim == 3:
        code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        image = cv2.cvtColor(image, code)
    return image


def _check_jpeg_complete(path: Path, data: bytes) -> None:
    # libjpeg (inside OpenCV) decodes a truncated JPEG with a warning and grey rows instead
    # of failing; PIL refuses it, so a truncated file is caught here and reported.
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # PIL raises OSError/SyntaxError/ValueError for bad files
        raise ImageError(f"'{path}': corrupt or truncated JPEG ({exc}).") from None


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """Encode an RGB(A)/gray array in the format of ``suffix`` ('.png', '.jpg', ...).
    JPEG quality 95; WebP lossless (OpenCV's defaults otherwise)."""
    suffix = suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageError(f"cannot write '{suffix}' files; use one of "
                         f"{', '.join(IMAGE_EXTENSIONS)}.")
    if image.ndim == 3:
        code = cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        image = cv2.cvtColor(image, code)
    params: List[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise ImageError(f"OpenCV could not encode a {image.dtype} image with "
                         f"{1 if image.ndim == 2 else image.shape[2]} channel(s) as {suffix}.")
    return buf.tobytes()


def write_image(path, image: np.ndarray) -> None:
    """Write ``image`` to ``path`` in the format its extension names, atomically (a
    temporary file beside it, renamed into place)."""
    path = Path(path)
    data = encode_image(image, path.suffix)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left | right`` in one image (same shape and dtype), for ``--compare``."""
    if left.shape != right.shape or left.dtype != right.dtype:
        raise ValueError(f"side_by_side needs equal images, got {left.shape} {left.dtype} and "
                         f"{right.shape} {right.dtype}")
    return np.concatenate([left, right], axis=1)

"""CRC-32C and TensorFlow's *masked* CRC (docs/tf-numerics.md §3.3).

Mirrors ``xla/tsl/lib/hash/crc32c.h`` (``Value``, ``Mask``, ``Unmask``). TF never stores
a raw CRC next to the data it covers: a CRC computed over bytes that themselves contain
CRCs is weak, so every stored CRC (SSTable block trailers, ``BundleEntryProto.crc32c``,
the length checksum inside string tensors) is rotated and offset by a constant first.
"""

from __future__ import annotations

import google_crc32c
import numpy as np

#: Added after the rotation; the constant comes from LevelDB, which TF's table code derives from.
MASK_DELTA = 0xA282EAD8

_U32 = 0xFFFFFFFF


def crc32c(data) -> int:
    """CRC-32C (Castagnoli) of ``data`` (any bytes-like object)."""
    if isinstance(data, bytes):
        return google_crc32c.value(data)
    # google_crc32c's C extension rejects writable buffers (bytearray, memoryview) but
    # accepts a numpy view of them, which costs no copy.
    return google_crc32c.value(np.frombuffer(data, dtype=np.uint8))


def extend(crc: int, data) -> int:
    """Continue a CRC-32C over more bytes, as if the inputs had been concatenated."""
    if not isinstance(data, bytes):
        data = np.frombuffer(data, dtype=np.uint8)
    return google_crc32c.extend(crc, data)


def mask(crc: int) -> int:
    """Rotate right by 15 bits and add :data:`MASK_DELTA` (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32

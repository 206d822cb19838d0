"""Turn the stored bytes of one bundle entry into a numpy array (docs/tf-numerics.md §3.5–3.6).

Mirrors ``BundleReader::GetValue`` and ``ReadStringTensor`` in
``tensorflow/core/util/tensor_bundle/tensor_bundle.cc``: the CRC is computed over the
bytes as they are in the file, and only then are they byte-swapped if the bundle was
written on a machine of the other endianness.

Functions here raise :class:`TensorFormatError` with a short reason; ``bundle.py``
turns it into a :class:`~srn_port.core.errors.CheckpointError` naming the tensor and file.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from . import crc
from .dtypes import DT_BFLOAT16, StorageType
from .sstable import TableFormatError, decode_varint

_U32_MAX = 0xFFFFFFFF


class TensorFormatError(Exception):
    """Internal: the stored bytes of a tensor do not match its entry."""


class TensorChecksumError(TensorFormatError):
    """Internal: a CRC over the stored bytes does not match the stored CRC."""


def check_crc(raw, stored_masked: int) -> None:
    """Compare ``crc32c(raw)`` with the masked CRC from a ``BundleEntryProto``."""
    actual = crc.crc32c(raw)
    if crc.unmask(stored_masked) != actual:
        raise TensorChecksumError(
            f"CRC-32C mismatch: stored 0x{crc.unmask(stored_masked):08x}, computed 0x{actual:08x}"
        )


def check_size(size: int, storage: StorageType, shape: tuple) -> None:
    """Check an entry's ``size`` against its dtype and shape before reading anything.

    Fixed-width types must match exactly (TF: "Invalid size in bundle entry"); a string
    tensor needs at least one varint byte per element plus the 4-byte length checksum.
    """
    count = math.prod(shape)
    if storage.stored is None:
        if size < count + 4:
            raise TensorFormatError(
                f"the entry says {size} bytes, too few for {count} strings (at least {count + 4})"
            )
        return
    expected = count * storage.stored.itemsize
    if size != expected:
        raise TensorFormatError(
            f"the entry says {size} bytes but {count} elements of {storage.tf_name} need {expected}"
        )


def decode_fixed(
    raw: bytearray, storage: StorageType, code: int, shape: tuple, big_endian: bool
) -> np.ndarray:
    """Decode a fixed-width tensor that passed :func:`check_size` and :func:`check_crc`.

    Returns a native-endian, C-ordered array that owns (or shares only with ``raw``,
    which the caller discards) its memory, so it is writable.
    """
    stored = storage.stored
    file_order = stored.newbyteorder(">" if big_endian else "<")
    array = np.frombuffer(raw, dtype=file_order).reshape(shape)
    if code == DT_BFLOAT16:
        # bfloat16 is the top half of a float32's bit pattern: widening is exact.
        bits = array.astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32)
    if not file_order.isnative:
        return array.astype(file_order.newbyteorder("="))
    return array


def decode_strings(raw, shape: tuple, stored_masked: int, big_endian: bool) -> np.ndarray:
    """Decode a ``DT_STRING`` tensor and verify both of its checksums.

    Layout: ``varint64 length[n]``, a 4-byte masked CRC of the lengths, then the string
    bytes back to back. The lengths CRC is taken over each length as a uint32 (a uint64
    if it does not fit), not over the varints, in the writer's byte order; the entry CRC
    continues over the raw 4 checksum bytes and all string bytes.
    """
    count = math.prod(shape)
    size = len(raw)
    order = ">" if big_endian else "<"
    lengths = []
    pos = 0
    length_crc = 0
    try:
        for _ in range(count):
            length, pos = decode_varint(raw, pos, size)
            lengths.append(length)
            fmt = order + ("I" if length <= _U32_MAX else "Q")
            length_crc = crc.extend(length_crc, struct.pack(fmt, length))
    except TableFormatError as exc:
        raise TensorFormatError(f"the string lengths cannot be decoded ({exc})") from None
    if pos + 4 > size:
        raise TensorFormatError("the string lengths run past the end of the entry")
    raw_checksum = bytes(raw[pos : pos + 4])
    (stored_length_crc,) = struct.unpack(order + "I", raw_checksum)
    if crc.unmask(stored_length_crc) != length_crc:
        raise TensorChecksumError(
            f"CRC-32C mismatch in the string lengths: stored 0x{crc.unmask(stored_length_crc):08x}, "
            f"computed 0x{length_crc:08x}"
        )
    pos += 4
    if pos + sum(lengths) != size:
        raise TensorFormatError(
            f"the string lengths add up to {pos + sum(lengths)} bytes but the entry has {size}"
        )
    entry_crc = crc.extend(length_crc, raw_checksum)
    entry_crc = crc.extend(entry_crc, memoryview(raw)[pos:])
    if crc.unmask(stored_masked) != entry_crc:
        raise TensorChecksumError(
            f"CRC-32C mismatch: stored 0x{crc.unmask(stored_masked):08x}, computed 0x{entry_crc:08x}"
        )
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    for i, length in enumerate(lengths):
        out[i] = bytes(view[pos : pos + length])
        pos += length
    return out.reshape(shape)

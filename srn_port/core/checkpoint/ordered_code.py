"""Keys of the slice entries of partitioned variables (docs/tf-numerics.md §3.7).

A partitioned variable is stored as one data-less "full tensor" entry, keyed by its
name, listing its slices, plus one ordinary entry per slice whose key is
``EncodeTensorNameSlice(name, slice)`` (``tensorflow/core/util/saved_tensor_slice_util.cc``),
an OrderedCode string (``tensorflow/core/lib/strings/ordered_code.cc``). The encoding is
order-preserving, which is why it is so particular; this module only needs to produce
the keys, never to parse them.
"""

from __future__ import annotations

import re
from typing import Iterable

#: A dimension with no explicit length (the whole dimension) is encoded as (0, -1),
#: TensorSlice's kFullExtent.
FULL_EXTENT = -1

_ESCAPES = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}
_STRING_TERMINATOR = b"\x00\x01"


def write_num_increasing(value: int) -> bytes:
    """OrderedCode ``WriteNumIncreasing``: a length byte, then big-endian minimal bytes.

    ``0 -> 00``, ``2 -> 01 02``, ``256 -> 02 01 00``.
    """
    if value < 0:
        raise ValueError(f"write_num_increasing needs a non-negative value, got {value}")
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def write_string(data: bytes) -> bytes:
    """OrderedCode ``WriteString``: escape ``00`` as ``00 FF`` and ``FF`` as ``FF 00``, end with ``00 01``."""
    return re.sub(rb"[\x00\xff]", lambda m: _ESCAPES[m.group()], data) + _STRING_TERMINATOR


def write_signed_num_increasing(value: int) -> bytes:
    """OrderedCode ``WriteSignedNumIncreasing`` for a 64-bit signed integer.

    An ``n``-byte code is the value in ``n``-byte two's complement with its top ``n`` bits
    inverted; for a non-negative value those bits are 0 and become a run of ``n`` ones
    (the length header), then a 0 sign bit. So ``n`` bytes carry ``7n - 1`` magnitude bits:
    ``-64 <= v < 64`` takes one byte (``0x80 ^ v``: 0 -> 80, 5 -> 85, -1 -> 7F), 100 takes
    two (``c0 64``), and a full int64 needs ten.
    """
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"write_signed_num_increasing needs an int64, got {value}")
    magnitude = ~value if value < 0 else value
    length = (magnitude.bit_length() + 1 + 6) // 7  # ceil((bits + 1) / 7), at least 1
    header = ((1 << length) - 1) << (7 * length)  # the top `length` bits of `length` bytes
    twos = int.from_bytes(value.to_bytes(length, "big", signed=True), "big")
    return (twos ^ header).to_bytes(length, "big")


def tensor_slice_key(name: str, extents: Iterable[tuple[int, int]]) -> bytes:
    """The table key of one slice of variable ``name``.

    ``extents`` holds ``(start, length)`` per dimension, with ``length ==``
    :data:`FULL_EXTENT` for a dimension taken whole. The leading ``WriteNumIncreasing(0)``
    (a single ``00`` byte) makes every slice key sort before every variable name.
    """
    extents = list(extents)
    parts = [
        write_num_increasing(0),
        write_string(name.encode("utf-8")),
        write_num_increasing(len(extents)),
    ]
    for start, length in extents:
        parts.append(write_signed_num_increasing(start))
        parts.append(write_signed_num_increasing(length))
    return b"".join(parts)

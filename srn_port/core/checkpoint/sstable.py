"""Read the LevelDB-style SSTable that a TF checkpoint ``.index`` file is (docs/tf-numerics.md §3.2).

Mirrors the reading side of ``xla/tsl/lib/io/{format.cc, block.cc, table.cc}`` (formerly
``tensorflow/core/lib/io``). TF's table is LevelDB's ``doc/table_format.md`` with TF's
own defaults (256 KiB blocks, no filter blocks, never compressed), so the reader here is
deliberately small: it reads the whole file (an index is kilobytes to a few megabytes),
checks the footer, the CRC of every block, and decodes every entry of every data block
in order. It does not use the restart arrays: a sequential scan only needs to know
where the entries end.

Every problem is reported as a :class:`~srn_port.core.errors.CheckpointError` naming the
file; the table layer knows nothing about tensors.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from .. import limits
from ..errors import CheckpointError, SrnPortError
from ..fileio import regular_file_size
from . import crc

#: Last 8 bytes of every table, stored as two little-endian fixed32 words (low word first).
TABLE_MAGIC = 0xDB4775248B80FB57
#: Footer = two BlockHandles (at most 2 * 20 bytes of varints, zero padded to 40) + magic.
FOOTER_SIZE = 48
_HANDLES_SIZE = 40
#: After every block: 1 byte compression type + fixed32 masked CRC of (contents + type).
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1

_U32 = struct.Struct("<I")


class TableFormatError(Exception):
    """Internal: a malformed structure inside a block whose CRC already matched.

    Callers turn it into a :class:`CheckpointError` that names the file.
    """


def decode_varint(buf, pos: int, limit: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decode one base-128 varint (LevelDB ``GetVarint32``/``GetVarint64``).

    Little-endian groups of 7 bits, high bit set on every byte but the last. Returns
    ``(value, position after it)``. ``max_bytes`` is 5 for varint32 and 10 for varint64.
    Protobuf has its own decoder, but it is not public API; this one is only used for
    the SSTable layer (entry headers and BlockHandles).
    """
    result = 0
    shift = 0
    for i in range(max_bytes):
        if pos + i >= limit:
            raise TableFormatError("a varint runs past the end of its block")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + i + 1
        shift += 7
    raise TableFormatError(f"a varint is longer than {max_bytes} bytes")


def decode_block_handle(buf, pos: int, limit: int) -> tuple[tuple[int, int], int]:
    """Decode a BlockHandle ``(varint64 offset, varint64 size)``; size excludes the trailer."""
    offset, pos = decode_varint(buf, pos, limit)
    size, pos = decode_varint(buf, pos, limit)
    return (offset, size), pos


def iter_block_entries(contents):
    """Yield ``(key, value)`` from one block's contents (trailer already removed).

    Layout (``block_builder.cc``): entries, then ``uint32 restarts[n]``, then ``uint32 n``.
    Each entry is ``varint32 shared, varint32 non_shared, varint32 value_len,
    key_delta[non_shared], value[value_len]`` and its key is the previous key's first
    ``shared`` bytes followed by ``key_delta``.
    """
    size = len(contents)
    if size < 4:
        raise TableFormatError(f"a block of {size} bytes is too small to hold its restart count")
    (num_restarts,) = _U32.unpack_from(contents, size - 4)
    limit = size - 4 - 4 * num_restarts
    if limit < 0:
        raise TableFormatError(f"a block of {size} bytes claims {num_restarts} restart points")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = decode_varint(contents, pos, limit, 5)
        non_shared, pos = decode_varint(contents, pos, limit, 5)
        value_len, pos = decode_varint(contents, pos, limit, 5)
        if shared > len(key):
            raise TableFormatError(f"an entry shares {shared} bytes with a {len(key)}-byte key")
        end = pos + non_shared + value_len
        if end > limit:
            raise TableFormatError("an entry runs past the end of its block")
        key = key[:shared] + bytes(contents[pos : pos + non_shared])
        yield key, bytes(contents[pos + non_shared : end])
        pos = end


def _corrupt(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint index file {path} is corrupt: {what}. It was damaged or "
        "truncated while being copied, downloaded or written; copy or download the "
        "checkpoint again (the .index file together with its .data-* files)."
    )


class _TableFile:
    """The bytes of one ``.index`` file plus the checks that need its name."""

    def __init__(self, path: Path, data: bytes):
        self.path = path
        self.data = data

    def footer(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Return the (metaindex, index) BlockHandles from the 48-byte footer."""
        data, size = self.data, len(self.data)
        if size < FOOTER_SIZE:
            raise _corrupt(
                self.path,
                f"it has {size} bytes, fewer than the {FOOTER_SIZE}-byte table footer, so it "
                "is truncated (or is not a TensorFlow checkpoint index at all)",
            )
        lo, hi = struct.unpack_from("<II", data, size - 8)
        if (hi << 32) | lo != TABLE_MAGIC:
            raise _corrupt(
                self.path,
                "its last 8 bytes are not the SSTable magic number 0xdb4775248b80fb57, so the "
                "file is truncated or overwritten (or is not a TensorFlow checkpoint index)",
            )
        start = size - FOOTER_SIZE
        try:
            metaindex, pos = decode_block_handle(data, start, start + _HANDLES_SIZE)
            index, pos = decode_block_handle(data, pos, start + _HANDLES_SIZE)
        except TableFormatError as exc:
            raise _corrupt(self.path, f"its footer cannot be decoded ({exc})") from None
        # TF zero-fills the footer after the two handles; anything else is damage that no
        # CRC would otherwise catch.
        if any(data[pos : start + _HANDLES_SIZE]):
            raise _corrupt(self.path, "the padding in its footer is not zero")
        return metaindex, index

    def block(self, handle: tuple[int, int], what: str):
        """Return the CRC-checked contents of the block at ``handle`` as a memoryview."""
        offset, size = handle
        end = offset + size + BLOCK_TRAILER_SIZE
        footer_start = len(self.data) - FOOTER_SIZE
        if end > footer_start:
            raise _corrupt(
                self.path,
                f"the {what} at bytes [{offset}, {end}) extends past the end of the table "
                f"data at byte {footer_start}, so the file is truncated",
            )
        view = memoryview(self.data)
        ctype = view[offset + size]
        (stored,) = _U32.unpack_from(self.data, offset + size + 1)
        actual = crc.crc32c(view[offset : offset + size + 1])
        if crc.unmask(stored) != actual:
            raise _corrupt(
                self.path,
                f"the {what} at bytes [{offset}, {end}) fails its CRC-32C check "
                f"(stored 0x{crc.unmask(stored):08x}, computed 0x{actual:08x})",
            )
        if ctype == SNAPPY_COMPRESSION:
            # TF's reader still accepts snappy blocks, but BundleWriter has always disabled
            # compression, so only a hand-made or foreign table can contain one.
            raise CheckpointError(
                f"The checkpoint index file {self.path} uses snappy-compressed table "
                f"blocks (the {what} at byte {offset}). TensorFlow never writes compressed "
                "checkpoint indexes and srn-port does not decompress them. Re-save the "
                "checkpoint with TensorFlow (tf.compat.v1.train.Saver().save) and convert that."
            )
        if ctype != NO_COMPRESSION:
            raise _corrupt(self.path, f"the {what} has unknown compression type {ctype}")
        return view[offset : offset + size]

    def entries(self, contents, what: str):
        try:
            yield from iter_block_entries(contents)
        except TableFormatError as exc:
            raise _corrupt(self.path, f"the {what} is malformed ({exc})") from None


def read_table(path: os.PathLike | str) -> list[tuple[bytes, bytes]]:
    """Return every ``(key, value)`` of the table in ``path``, in key order.

    Verifies the footer magic, the CRC of the metaindex, index and every data block,
    and that keys are strictly increasing (bytewise, as TF's comparator orders them).
    """
    path = Path(path)
    try:
        size = regular_file_size(path, "checkpoint index file")
    except SrnPortError as exc:
        raise CheckpointError(str(exc)) from None
    limit = limits.INDEX_BYTES.value()
    if size > limit:
        raise CheckpointError(
            f"The checkpoint index file {path} has {size:,} bytes, more than the {limit:,} "
            f"that srn-port reads (an SRN index has about 10 KB), so it is not the index of an "
            f"SRN checkpoint or it is damaged. If it really is an index this large, raise the "
            f"limit with {limits.INDEX_BYTES.env}=BYTES.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(
            f"Cannot read the checkpoint index file {path}: {exc.strerror or exc}. "
            "Check that the file exists and is readable."
        ) from None
    table = _TableFile(path, data)
    metaindex_handle, index_handle = table.footer()
    # TF's metaindex is always empty (no filter blocks); it is read only so that damage
    # to it is reported rather than ignored.
    table.block(metaindex_handle, "metaindex block")
    index = table.block(index_handle, "index block")

    out: list[tuple[bytes, bytes]] = []
    # Index keys are separators (e.g. "t" after a last key "scalar"), not tensor names:
    # only the handles matter.
    for number, (_, value) in enumerate(table.entries(index, "index block")):
        what = f"data block {number}"
        try:
            handle, end = decode_block_handle(value, 0, len(value))
        except TableFormatError as exc:
            raise _corrupt(path, f"the index entry for {what} is malformed ({exc})") from None
        if end != len(value):
            raise _corrupt(path, f"the index entry for {what} has trailing bytes")
        for key, val in table.entries(table.block(handle, what), what):
            if out and key <= out[-1][0]:
                raise _corrupt(path, f"the keys in {what} are not in increasing order")
            out.append((key, val))
    return out

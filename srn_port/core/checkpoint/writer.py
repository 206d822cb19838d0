"""Write TensorFlow V2 checkpoints ("tensor bundles") without TensorFlow.

The inverse of the reader, following ``BundleWriter`` (``tensor_bundle.cc``) and the
LevelDB table builder TF uses (``xla/tsl/lib/io/table_builder.cc``, ``block_builder.cc``,
``format.cc``) as described in docs/tf-numerics.md §3:

* ``P.data-00000-of-00001``: the tensors' little-endian bytes, back to back
  (``data_alignment`` 1) in the order they are given;
* ``P.index``: an SSTable mapping ``""`` to the ``BundleHeaderProto`` (one shard, LITTLE,
  ``version { producer: 1 }``) and every tensor name, in byte order, to its
  ``BundleEntryProto`` (dtype, shape, offset, size, masked CRC-32C). Data blocks close when
  their estimated size reaches 256 KiB and restart every 16 entries; the index block
  restarts at every entry and keys each data block by TF's shortest separator; the
  metaindex block is empty; blocks are uncompressed, each with a type byte and masked CRC;
  a 48-byte footer ends the file.

Given the tensors in key order (as ``tf.compat.v1.train.Saver`` adds them), the files are
byte for byte what TF writes (tests/test_export_tf.py compares them). Only plain variables
are written: float32, float64, int32 and int64, scalars included; no slices, no strings.
Both files are written atomically (temporary file, then rename), the data file first, so a
``.index`` (which is what makes a checkpoint visible) never names missing data.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Tuple

import numpy as np
from google.protobuf import text_format

from ..errors import SrnPortError
from ..fileio import atomic_write, atomic_write_group
from . import protos
from .crc import crc32c, extend, mask

#: ``table::Options.block_size`` as TF sets it for bundles (LevelDB's default is 4 KiB).
BLOCK_SIZE = 262144
DATA_RESTART_INTERVAL = 16
INDEX_RESTART_INTERVAL = 1
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
NO_COMPRESSION = 0
#: ``kTensorBundleVersion``: the ``producer`` of the header's VersionDef.
BUNDLE_VERSION = 1
STATE_FILE = "checkpoint"

#: numpy dtype -> (TF DataType code, little-endian stored dtype).
WRITABLE = {
    np.dtype("float32"): (1, np.dtype("<f4")),
    np.dtype("float64"): (2, np.dtype("<f8")),
    np.dtype("int32"): (3, np.dtype("<i4")),
    np.dtype("int64"): (9, np.dtype("<i8")),
}


def data_file(prefix, shard: int = 0, num_shards: int = 1) -> Path:
    """``<prefix>.data-SSSSS-of-NNNNN`` (``tensor_bundle/naming.h``)."""
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def index_file(prefix) -> Path:
    return Path(f"{prefix}.index")


# -- SSTable ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """``BytewiseComparator::FindShortestSeparator``: a short key in [start, limit)."""
    diff = _common_prefix(start, limit)
    if diff >= min(len(start), len(limit)):
        return start  # one is a prefix of the other: no shortening
    byte = start[diff]
    if byte < 0xFF and byte + 1 < limit[diff]:
        return start[:diff] + bytes([byte + 1])
    return start


def short_successor(key: bytes) -> bytes:
    """``BytewiseComparator::FindShortSuccessor``: a short key >= ``key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    """``BlockBuilder``: prefix-compressed entries, a restart point every ``interval``."""

    def __init__(self, interval: int):
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def empty(self) -> bool:
        return not self.buffer

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.interval:
            shared = _common_prefix(self.last_key, key)
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        self.buffer += key[shared:] + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buffer) + b"".join(struct.pack("<I", r) for r in self.restarts) \
            + struct.pack("<I", len(self.restarts))


def build_table(entries: Iterable[Tuple[bytes, bytes]], block_size: int = BLOCK_SIZE) -> bytes:
    """An SSTable of ``entries`` (keys strictly increasing), as ``TableBuilder`` writes it."""
    out = bytearray()
    data = _BlockBuilder(DATA_RESTART_INTERVAL)
    index = _BlockBuilder(INDEX_RESTART_INTERVAL)
    pending: Optional[Tuple[int, int]] = None  # handle of a flushed block awaiting its key
    last_key: Optional[bytes] = None

    def write_block(contents: bytes) -> Tuple[int, int]:
        handle = (len(out), len(contents))
        trailer = bytes([NO_COMPRESSION])
        crc = extend(crc32c(contents), trailer)
        out.extend(contents + trailer + struct.pack("<I", mask(crc)))
        return handle

    def handle_bytes(handle: Tuple[int, int]) -> bytes:
        return _varint(handle[0]) + _varint(handle[1])

    for key, value in entries:
        if last_key is not None and key <= last_key:
            raise ValueError(f"table keys must be unique and increasing: {key!r} after "
                             f"{last_key!r}")
        if pending is not None:
            index.add(shortest_separator(last_key, key), handle_bytes(pending))
            pending = None
        data.add(key, value)
        last_key = key
        if data.size_estimate() >= block_size:
            pending = write_block(data.finish())
            data.reset()
    if not data.empty():
        pending = write_block(data.finish())
    if pending is not None:
        index.add(short_successor(last_key), handle_bytes(pending))
    metaindex = write_block(_BlockBuilder(DATA_RESTART_INTERVAL).finish())
    index_handle = write_block(index.finish())
    handles = handle_bytes(metaindex) + handle_bytes(index_handle)
    out += handles + bytes(40 - len(handles))
    out += struct.pack("<II", TABLE_MAGIC & 0xFFFFFFFF, TABLE_MAGIC >> 32)
    return bytes(out)


# -- the bundle ------------------------------------------------------------------------


def _stored(name: str, value) -> Tuple[int, np.ndarray]:
    array = np.asarray(value)
    code = WRITABLE.get(array.dtype.newbyteorder("="))
    if code is None:
        raise SrnPortError(
            f"Cannot write tensor '{name}' to a TF checkpoint: its dtype is {array.dtype}; "
            f"srn-port writes float32, float64, int32 and int64 tensors only. Convert it "
            f"(e.g. array.astype(np.float32)) first.")
    # not np.ascontiguousarray, which turns a 0-d array (a scalar) into shape [1]
    return code[0], np.asarray(array, dtype=code[1], order="C")


def _entry(code: int, array: np.ndarray, offset: int, data: bytes) -> bytes:
    entry = protos.BundleEntryProto(dtype=code, offset=offset, size=len(data),
                                    crc32c=mask(crc32c(data)))
    entry.shape.SetInParent()  # a scalar still has its (empty) shape message
    for dim in array.shape:
        entry.shape.dim.add(size=dim)
    return entry.SerializeToString()


def _header() -> bytes:
    header = protos.BundleHeaderProto(num_shards=1, endianness=protos.LITTLE)
    header.version.producer = BUNDLE_VERSION
    return header.SerializeToString()


def checkpoint_prefix(prefix, step: Optional[int] = None) -> Path:
    """``prefix`` itself, or ``prefix-<step>`` as ``Saver.save(..., global_step=step)``."""
    return Path(prefix if step is None else f"{prefix}-{int(step)}")


def existing_files(prefix) -> List[Path]:
    """The files of checkpoint ``prefix`` that already exist (index, data)."""
    return [p for p in (index_file(prefix), data_file(prefix)) if p.exists()]


def write_checkpoint(prefix, tensors: Mapping[str, np.ndarray], step: Optional[int] = None,
                     force: bool = False) -> Path:
    """Write ``tensors`` as the TF V2 checkpoint ``prefix`` (``prefix-<step>`` with ``step``,
    as the Saver names it): ``<P>.index`` and ``<P>.data-00000-of-00001``. Returns ``P``.

    Tensors are stored in the mapping's order, entries sorted by name; refuses to replace
    existing files without ``force``. The folder must exist. Does not touch the
    ``checkpoint`` state file (:func:`write_checkpoint_state`).
    """
    prefix = checkpoint_prefix(prefix, step)
    if not prefix.parent.is_dir():
        raise SrnPortError(f"The folder '{prefix.parent}' of checkpoint '{prefix}' does not "
                           f"exist; create it first.")
    present = existing_files(prefix)
    if present and not force:
        raise SrnPortError(f"A checkpoint '{prefix}' already exists ({present[0].name}); pass "
                           f"force=True (--force) to overwrite it, or choose another step.")
    entries = {}
    chunks = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise SrnPortError(f"Cannot write a tensor named {name!r}: TF checkpoint names are "
                               f"non-empty strings.")
        code, array = _stored(name, value)
        data = array.tobytes()
        entries[name.encode("utf-8")] = _entry(code, array, offset, data)
        chunks.append(data)
        offset += len(data)
    table = build_table([(b"", _header())] + sorted(entries.items()))

    def write_data(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)

    # both files are written and synced before either is renamed into place: a failed
    # write (a full disk) leaves a previous checkpoint of this prefix whole
    atomic_write_group([(data_file(prefix), write_data),
                        (index_file(prefix), lambda tmp: Path(tmp).write_bytes(table))])
    return prefix


# -- the `checkpoint` state file -------------------------------------------------------


def read_checkpoint_state(directory) -> Optional["protos.CheckpointState"]:
    """The parsed ``checkpoint`` file of ``directory``, None if there is none; an
    SrnPortError if it exists but is not a text-format CheckpointState."""
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), protos.CheckpointState(),
                                 allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError, OSError) as exc:
        raise SrnPortError(
            f"'{path}' exists but is not a TF 'checkpoint' state file ({exc}). Move it away, "
            f"or pass force=True (--force) to replace it.") from None


def write_checkpoint_state(directory, prefix_name: str, force: bool = False) -> Path:
    """Make ``prefix_name`` (e.g. ``"deblur.model-523000"``, relative to ``directory``) the
    latest checkpoint of ``directory``'s ``checkpoint`` file, as the Saver does::

        model_checkpoint_path: "deblur.model-523000"
        all_model_checkpoint_paths: "deblur.model-523000"

    An existing state file keeps its other checkpoints in ``all_model_checkpoint_paths``
    (the new one moves to the end); one that cannot be parsed is an error unless
    ``force``, which replaces it. Written atomically; returns the file's path."""
    directory = Path(directory)
    prefix_name = str(prefix_name)
    if os.path.isabs(prefix_name) or os.sep in prefix_name or "/" in prefix_name:
        raise ValueError(f"prefix_name must be a file name in {directory}, not {prefix_name!r}")
    try:
        old = read_checkpoint_state(directory)
    except SrnPortError:
        if not force:
            raise
        old = None
    state = protos.CheckpointState(model_checkpoint_path=prefix_name)
    if old is not None:
        state.all_model_checkpoint_paths.extend(
            p for p in old.all_model_checkpoint_paths
            if p != prefix_name and os.path.basename(p) != prefix_name)
    state.all_model_checkpoint_paths.append(prefix_name)
    text = text_format.MessageToString(state)
    path = directory / STATE_FILE
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path

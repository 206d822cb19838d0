"""A TF V2 tensor bundle: its index entries and the tensors they point to (docs/tf-numerics.md §3.4–3.8).

Mirrors ``BundleReader`` in ``tensorflow/core/util/tensor_bundle/tensor_bundle.cc``
(constructor, ``GetValue``, ``GetSliceValue``), with two deliberate differences:

* everything is checked before anything is returned: the header version, that every
  data shard exists, each tensor's byte range against its file's size, and (for a
  partitioned variable) that its slices tile the full shape exactly. TF checks the
  slices lazily and only for the region asked for.
* partitioned variables of every supported dtype are reassembled; TF's slice copy
  lacks some (e.g. half, uint16, strings).

Data files are opened on first use and read with ``seek`` + ``readinto`` of exactly the
tensor's byte range, so reading one tensor never loads a whole shard into memory.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from .. import limits
from ..errors import CheckpointError
from . import protos
from .dtypes import DT_STRING, STORAGE, StorageType, tf_dtype_name
from .ordered_code import FULL_EXTENT, tensor_slice_key
from .sstable import read_table
from .tensors import (
    TensorChecksumError,
    TensorFormatError,
    check_crc,
    check_size,
    decode_fixed,
    decode_strings,
)

#: ``kTensorBundleVersion``: the format version this reader implements (dated 2016-09-14).
BUNDLE_VERSION = 1
#: ``kTensorBundleMinProducer``.
MIN_PRODUCER = 0
#: The header entry's key; it sorts before every other key, so it is the first entry.
HEADER_KEY = b""
#: Slice keys start with OrderedCode ``WriteNumIncreasing(0)``; tensor names never do.
SLICE_KEY_PREFIX = b"\x00"

_RE_COPY = (
    "The file was damaged or cut short while being copied, downloaded or written; copy or "
    "download the checkpoint again (its .index file and all of its .data-* files)."
)


def index_filename(prefix: Path) -> Path:
    """``P.index`` (``MetaFilename`` in ``tensor_bundle/naming.cc``)."""
    return Path(f"{prefix}.index")


def data_filename(prefix: Path, shard_id: int, num_shards: int) -> Path:
    """``P.data-SSSSS-of-NNNNN`` (``DataFilename`` in ``tensor_bundle/naming.cc``)."""
    return Path(f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}")


@dataclass(frozen=True)
class EntryDescription:
    """What the index says about one tensor, without reading its data."""

    dtype_code: int
    shape: tuple[int, ...]
    partitioned: bool
    #: Bytes of tensor data in the data files (summed over slices when partitioned).
    nbytes: int


class Bundle:
    """The index of one checkpoint prefix, parsed and validated, plus its data files."""

    def __init__(self, prefix: Path):
        self.prefix = prefix
        self.index_path = index_filename(prefix)
        entries = read_table(self.index_path)
        if not entries or entries[0][0] != HEADER_KEY:
            raise CheckpointError(
                f"The checkpoint index file {self.index_path} has no header entry (an empty "
                "key), which every TensorFlow V2 checkpoint index starts with, so it is not a "
                "TF V2 checkpoint index or it is damaged. Pass the prefix of a checkpoint "
                "written by tf.compat.v1.train.Saver or tf.train.Checkpoint."
            )
        self.header = self._parse(protos.BundleHeaderProto, entries[0][1], "the header entry")
        self._check_header()
        self.big_endian = self.header.endianness == protos.BIG
        self.data_paths = [
            data_filename(prefix, i, self.header.num_shards) for i in range(self.header.num_shards)
        ]
        self._check_data_files()

        self._entries: dict[str, object] = {}
        self._slice_entries: dict[bytes, object] = {}
        for key, value in entries[1:]:
            if key.startswith(SLICE_KEY_PREFIX):
                self._slice_entries[key] = self._parse(
                    protos.BundleEntryProto, value, f"the slice entry {key!r}"
                )
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise self._index_corrupt(f"the key {key!r} is not valid UTF-8") from None
            self._entries[name] = self._parse(
                protos.BundleEntryProto, value, f"the entry for {name!r}"
            )
        self._files: dict[int, object] = {}

    # -- index -----------------------------------------------------------------------

    def _index_corrupt(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"The checkpoint index file {self.index_path} is corrupt: {what}. {_RE_COPY}"
        )

    def _parse(self, cls, value: bytes, what: str):
        try:
            return cls.FromString(value)
        except DecodeError as exc:
            raise self._index_corrupt(
                f"{what} is not a valid {cls.DESCRIPTOR.name} ({exc})"
            ) from None

    def _check_header(self) -> None:
        header, path = self.header, self.index_path
        version = header.version
        # Same rules as TF's CheckVersions(header.version(), kTensorBundleVersion, kTensorBundleMinProducer).
        if version.producer < MIN_PRODUCER:
            raise self._index_corrupt(
                f"its header has an invalid producer version {version.producer}"
            )
        if version.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in version.bad_consumers:
            why = (
                f"needs a reader of bundle format version {version.min_consumer} or newer"
                if version.min_consumer > BUNDLE_VERSION
                else f"declares bundle format version {BUNDLE_VERSION} readers incompatible"
            )
            raise CheckpointError(
                f"The checkpoint index file {path} uses an unsupported bundle format version: it "
                f"{why} (producer {version.producer}, min_consumer {version.min_consumer}, "
                f"bad_consumers {list(version.bad_consumers)}), but srn-port reads version "
                f"{BUNDLE_VERSION}, the only version TensorFlow has written since 0.12 (through "
                "2.21 at least). Re-save the checkpoint in that format: load it with the "
                "TensorFlow that wrote it and save it with tf.compat.v1.train.Saver().save using "
                "a release that writes version 1, or use a newer srn-port that reads this version."
            )
        if header.endianness not in (protos.LITTLE, protos.BIG):
            raise self._index_corrupt(
                f"its header has an unknown endianness value {header.endianness}"
            )
        if header.num_shards < 1:
            raise self._index_corrupt(
                f"its header says the checkpoint has {header.num_shards} data files"
            )
        most = limits.SHARDS.value()
        if header.num_shards > most:
            raise CheckpointError(
                f"The checkpoint index file {self.index_path} says the checkpoint has "
                f"{header.num_shards:,} data files, more than the {most:,} srn-port accepts (an "
                f"SRN checkpoint has 1). The index is damaged or not an SRN checkpoint's; if the "
                f"checkpoint really has that many files, raise the limit with "
                f"{limits.SHARDS.env}=N."
            )

    def _check_data_files(self) -> None:
        not_regular = [p for p in self.data_paths if p.exists() and not p.is_file()]
        if not_regular:
            raise CheckpointError(
                f"The checkpoint data file {not_regular[0]} is not a regular file (a folder, "
                f"FIFO or device); srn-port reads only regular files. Copy the checkpoint's "
                f"real files into {self.prefix.parent}."
            )
        missing = [p for p in self.data_paths if not p.is_file()]
        if not missing:
            return
        present = sorted(
            p.name for p in self.prefix.parent.glob(f"{glob.escape(self.prefix.name)}.data-*")
        )
        n = self.header.num_shards
        raise CheckpointError(
            f"The checkpoint {self.prefix} is incomplete: its index says the tensors are in "
            f"{n:,} data file{'s' if n > 1 else ''}, but {len(missing):,} "
            f"{'is' if len(missing) == 1 else 'are'} missing: {_few(p.name for p in missing)} "
            f"(data files found for this prefix: {_few(present) if present else 'none'}). "
            f"Copy every file of the checkpoint into {self.prefix.parent}: "
            f"{self.prefix.name}.index and all {n} {self.prefix.name}.data-?????-of-{n:05d} files."
        )

    def names(self) -> list[str]:
        """Tensor names in bytewise order (partitioned variables by full name)."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def _storage(self, name: str, entry) -> StorageType:
        storage = STORAGE.get(entry.dtype)
        if storage is None:
            supported = ", ".join(s.tf_name for s in STORAGE.values())
            raise CheckpointError(
                f"Tensor {name!r} in checkpoint {self.prefix} has dtype "
                f"{tf_dtype_name(entry.dtype)} (DataType {entry.dtype}), which srn-port cannot "
                f"read; it reads {supported}. If you need this tensor, read it with TensorFlow "
                f"(tf.train.load_checkpoint('{self.prefix}').get_tensor({name!r}))."
            )
        return storage

    def _shape(self, name: str, entry) -> tuple[int, ...]:
        most = limits.TENSOR_RANK.value()
        if len(entry.shape.dim) > most:
            raise self._index_corrupt(
                f"the entry for {name!r} has {len(entry.shape.dim)} dimensions, more than the "
                f"{most} srn-port reads ({limits.TENSOR_RANK.env} raises it)"
            )
        shape = tuple(d.size for d in entry.shape.dim)
        if entry.shape.unknown_rank or any(d < 0 for d in shape):
            raise self._index_corrupt(f"the entry for {name!r} has an invalid shape {list(shape)}")
        return shape

    def describe(self, name: str) -> EntryDescription:
        """Index facts about ``name``; works even for dtypes that :meth:`read` rejects."""
        entry = self._entries[name]
        shape = self._shape(name, entry)
        if entry.slices:
            pieces = self._slices(name, entry, shape)
            return EntryDescription(entry.dtype, shape, True, sum(p[1].size for p in pieces))
        return EntryDescription(entry.dtype, shape, False, entry.size)

    # -- data ------------------------------------------------------------------------

    def read(self, name: str) -> np.ndarray:
        """Return tensor ``name`` as a native-endian, C-ordered, writable array."""
        entry = self._entries[name]
        storage = self._storage(name, entry)
        shape = self._shape(name, entry)
        if not entry.slices:
            return self._read_entry(f"tensor {name!r}", entry, storage, shape)
        pieces = self._slices(name, entry, shape)  # validated before allocating the result
        for index, slice_entry in pieces:  # ...and backed by real bytes in the data files
            self._check_extent(f"a slice of tensor {name!r}", slice_entry, storage,
                               slice_entry_shape(slice_entry))
        out = np.empty(shape, dtype=storage.returned)
        for index, slice_entry in pieces:
            bounds = ", ".join(f"{s.start}:{s.stop}" for s in index)
            part = self._read_entry(
                f"slice [{bounds}] of tensor {name!r}",
                slice_entry,
                storage,
                slice_entry_shape(slice_entry),
            )
            out[index] = part
        return out

    def _slices(self, name: str, entry, shape: tuple[int, ...]):
        """Return ``[(numpy index, slice entry)]`` for a partitioned variable, validated.

        The slices must lie inside the full shape, must not overlap and must cover it
        completely; TF would only notice a gap when asked for the missing region.
        """
        pieces = []
        boxes = []
        for number, tslice in enumerate(entry.slices):
            if len(tslice.extent) != len(shape):
                raise self._index_corrupt(
                    f"slice {number} of {name!r} has {len(tslice.extent)} dimensions, the tensor {len(shape)}"
                )
            key_extents, index = [], []
            for dim, extent in zip(shape, tslice.extent):
                if extent.HasField("length"):
                    start, stop = extent.start, extent.start + extent.length
                    key_extents.append((extent.start, extent.length))
                else:  # no length: the whole dimension (TensorSlice's kFullExtent)
                    start, stop = extent.start, dim
                    key_extents.append((extent.start, FULL_EXTENT))
                if not (0 <= start <= stop <= dim) or (
                    not extent.HasField("length") and start != 0
                ):
                    raise self._index_corrupt(
                        f"slice {number} of {name!r} does not fit its shape {list(shape)}"
                    )
                index.append(slice(start, stop))
            key = tensor_slice_key(name, key_extents)
            slice_entry = self._slice_entries.get(key)
            if slice_entry is None:
                raise self._index_corrupt(
                    f"the entry of slice {number} of partitioned tensor {name!r} is missing"
                )
            lengths = tuple(s.stop - s.start for s in index)
            if (
                slice_entry.dtype != entry.dtype
                or slice_entry_shape(slice_entry) != lengths
                or slice_entry.slices
            ):
                raise self._index_corrupt(
                    f"slice {number} of {name!r} does not match the tensor's dtype or its own extent"
                )
            pieces.append((tuple(index), slice_entry))
            boxes.append([(s.start, s.stop) for s in index])
        covered = sum(math.prod(b - a for a, b in box) for box in boxes)
        if covered != math.prod(shape) or _overlapping(boxes):
            raise self._index_corrupt(
                f"the {len(boxes)} slices of partitioned tensor {name!r} do not tile its shape "
                f"{list(shape)} exactly (they overlap or leave a gap)"
            )
        return pieces

    def _read_entry(
        self, what: str, entry, storage: StorageType, shape: tuple[int, ...]
    ) -> np.ndarray:
        if not 0 <= entry.shard_id < self.header.num_shards:
            raise self._index_corrupt(
                f"{what} is in data file {entry.shard_id}, but the checkpoint has "
                f"{self.header.num_shards}"
            )
        if entry.offset < 0 or entry.size < 0:
            raise self._index_corrupt(f"{what} has a negative offset or size")
        path = self.data_paths[entry.shard_id]
        try:
            check_size(entry.size, storage, shape)  # before reading: size may be absurd
            raw = self._read_bytes(what, entry, path)
            if entry.dtype == DT_STRING:
                return decode_strings(raw, shape, entry.crc32c, self.big_endian)
            check_crc(raw, entry.crc32c)
            return decode_fixed(raw, storage, entry.dtype, shape, self.big_endian)
        except TensorChecksumError as exc:
            raise CheckpointError(
                f"The checkpoint data file {path} is corrupt: {what} (bytes [{entry.offset}, "
                f"{entry.offset + entry.size})) fails its checksum ({exc}). {_RE_COPY}"
            ) from None
        except TensorFormatError as exc:
            raise CheckpointError(
                f"The checkpoint {self.prefix} is corrupt: the entry of {what} in "
                f"{self.index_path} does not match its data in {path} ({exc}). {_RE_COPY}"
            ) from None

    def _check_extent(self, what: str, entry, storage: StorageType, shape) -> None:
        """The entry's size fits its dtype and shape and lies inside its data file: so the
        memory a tensor needs is bounded by the files' real size, whatever the index says."""
        if not 0 <= entry.shard_id < self.header.num_shards:
            raise self._index_corrupt(
                f"{what} is in data file {entry.shard_id}, but the checkpoint has "
                f"{self.header.num_shards}"
            )
        path = self.data_paths[entry.shard_id]
        try:
            check_size(entry.size, storage, shape)
        except TensorFormatError as exc:
            raise CheckpointError(
                f"The checkpoint {self.prefix} is corrupt: the entry of {what} in "
                f"{self.index_path} does not match its data in {path} ({exc}). {_RE_COPY}"
            ) from None
        file_size = os.stat(path).st_size
        if entry.offset < 0 or entry.offset + entry.size > file_size:
            raise CheckpointError(
                f"The checkpoint data file {path} is truncated: {what} occupies bytes "
                f"[{entry.offset}, {entry.offset + entry.size}) but the file has only "
                f"{file_size} bytes. {_RE_COPY}"
            )

    def _read_bytes(self, what: str, entry, path: Path) -> bytearray:
        """Exactly the bytes ``[offset, offset + size)`` of the entry's data file."""
        handle = self._file(entry.shard_id)
        file_size = os.fstat(handle.fileno()).st_size
        start, end = entry.offset, entry.offset + entry.size
        if end > file_size:
            raise CheckpointError(
                f"The checkpoint data file {path} is truncated: {what} occupies bytes "
                f"[{start}, {end}) but the file has only {file_size} bytes. {_RE_COPY}"
            )
        buf = bytearray(entry.size)
        handle.seek(start)
        if handle.readinto(buf) != entry.size:
            raise CheckpointError(
                f"The checkpoint data file {path} is truncated: reading {what} at bytes "
                f"[{start}, {end}) ended early. {_RE_COPY}"
            )
        return buf

    def _file(self, shard_id: int):
        handle = self._files.get(shard_id)
        if handle is None:
            path = self.data_paths[shard_id]
            try:
                handle = open(path, "rb")  # noqa: SIM115 - kept open until close()
            except OSError as exc:
                raise CheckpointError(
                    f"Cannot open the checkpoint data file {path}: {exc.strerror or exc}. "
                    "Check that it exists and is readable."
                ) from None
            self._files[shard_id] = handle
        return handle

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def slice_entry_shape(entry) -> tuple[int, ...]:
    return tuple(d.size for d in entry.shape.dim)


def _overlapping(boxes: list[list[tuple[int, int]]]) -> bool:
    """True if any two of the half-open boxes share an element."""
    if len(boxes) < 2:
        return False
    if not boxes[0]:
        return True  # rank 0: every slice is the whole scalar
    starts = np.array([[a for a, _ in box] for box in boxes], dtype=np.int64)
    stops = np.array([[b for _, b in box] for box in boxes], dtype=np.int64)
    for i in range(len(boxes) - 1):
        lo = np.maximum(starts[i], starts[i + 1 :])
        hi = np.minimum(stops[i], stops[i + 1 :])
        if np.any(np.all(lo < hi, axis=1)):
            return True
    return False


def _few(names, limit: int = 5) -> str:
    """At most ``limit`` names and a count of the rest: an error stays one short paragraph."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")

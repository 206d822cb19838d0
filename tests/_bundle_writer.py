"""Test-only writer of TF V2 checkpoints (tensor bundles), so reader tests need no TF.

Written from the format description (docs/tf-numerics.md §3), independently
of the reader's decoding code; it reuses only the runtime protos and the OrderedCode key
encoder from ``srn_port.core.checkpoint``, both of which the TF tests check against
checkpoints written by TensorFlow. The TF tests also read this writer's output with
``tf.train.load_checkpoint``, which keeps the writer honest.

It can also produce what TF never writes (big-endian bundles, snappy-flagged blocks,
future format versions, unknown dtypes), to test the reader's handling of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np

from srn_port.core.checkpoint import protos
from srn_port.core.checkpoint.ordered_code import tensor_slice_key

MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
TF_BLOCK_SIZE = 262144

# TF DataType codes and the little-endian numpy type of their stored bytes.
NUMPY_TO_TF = {
    "float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6,
    "complex64": 8, "int64": 9, "bool": 10, "uint16": 17, "complex128": 18,
    "float16": 19, "uint32": 22, "uint64": 23,
}  # fmt: skip
TF_TO_STORED = {code: np.dtype(name) for name, code in NUMPY_TO_TF.items()}
TF_TO_STORED[14] = np.dtype("uint16")  # bfloat16: top 16 bits of a float32
DT_STRING = 7
DT_BFLOAT16 = 14


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def crc32c(data: bytes, crc: int = 0) -> int:
    return google_crc32c.extend(crc, bytes(data))


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# -- SSTable -------------------------------------------------------------------------


def build_block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out = bytearray()
    restarts = []
    previous = b""
    for i, (key, value) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        previous = key
    if not restarts:
        restarts = [0]
    for r in restarts:
        out += struct.pack("<I", r)
    out += struct.pack("<I", len(restarts))
    return bytes(out)


def build_table(
    entries: list[tuple[bytes, bytes]],
    block_size: int = TF_BLOCK_SIZE,
    compression_type: int = 0,
) -> bytes:
    """An SSTable as TF writes it: 16-entry restarts in data blocks, 1 in the index."""
    out = bytearray()

    def add_block(contents: bytes) -> tuple[int, int]:
        handle = (len(out), len(contents))
        trailer_type = bytes([compression_type])
        out.extend(
            contents + trailer_type + struct.pack("<I", mask(crc32c(contents + trailer_type)))
        )
        return handle

    index_entries = []
    pending: list[tuple[bytes, bytes]] = []
    pending_size = 0
    for key, value in entries:
        pending.append((key, value))
        pending_size += len(key) + len(value) + 3
        if pending_size >= block_size:
            # The block's last key is a valid separator (>= its keys, < the next block's).
            index_entries.append((pending[-1][0], add_block(build_block(pending, 16))))
            pending, pending_size = [], 0
    if pending or not index_entries:
        index_entries.append(
            (pending[-1][0] if pending else b"", add_block(build_block(pending, 16)))
        )
    metaindex = add_block(build_block([], 16))
    index = add_block(
        build_block([(key, varint(off) + varint(size)) for key, (off, size) in index_entries], 1)
    )
    handles = varint(metaindex[0]) + varint(metaindex[1]) + varint(index[0]) + varint(index[1])
    out += handles + bytes(40 - len(handles)) + MAGIC
    return bytes(out)


# -- tensor encoding -----------------------------------------------------------------


def encode_strings(values, big_endian: bool = False) -> tuple[bytes, int]:
    """Return (stored bytes, masked entry CRC) of a DT_STRING tensor."""
    order = ">" if big_endian else "<"
    items = [bytes(v) for v in np.asarray(values, dtype=object).ravel()]
    lengths = b"".join(varint(len(v)) for v in items)
    crc = 0
    for v in items:
        crc = crc32c(struct.pack(order + ("I" if len(v) <= 0xFFFFFFFF else "Q"), len(v)), crc)
    length_checksum = struct.pack(order + "I", mask(crc))
    crc = crc32c(length_checksum, crc)
    body = b"".join(items)
    crc = crc32c(body, crc)
    return lengths + length_checksum + body, mask(crc)


def encode_fixed(array: np.ndarray, code: int, big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    if code == DT_BFLOAT16:
        bits = (np.asarray(array, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits.astype(np.dtype("uint16").newbyteorder(order)).tobytes()
    stored = TF_TO_STORED[code].newbyteorder(order)
    return np.ascontiguousarray(np.asarray(array).astype(stored)).tobytes()


def tf_code_of(array: np.ndarray) -> int:
    if array.dtype == object:
        return DT_STRING
    return NUMPY_TO_TF[array.dtype.name]


@dataclass
class Stored:
    """One tensor to write, optionally with a forced dtype code or raw bytes."""

    value: np.ndarray
    code: int | None = None
    raw: bytes | None = None  # stored bytes as-is (for unknown dtypes)
    #: For a partitioned variable: one tuple of (start, length or None) per slice.
    slices: list[tuple[tuple[int, int | None], ...]] | None = None


@dataclass
class BundleSpec:
    tensors: dict[str, Stored | np.ndarray] = field(default_factory=dict)
    num_shards: int = 1
    big_endian: bool = False
    block_size: int = TF_BLOCK_SIZE
    compression_type: int = 0
    version: tuple[int, int, tuple[int, ...]] = (1, 0, ())  # producer, min_consumer, bad


def _shape_proto(msg, shape) -> None:
    for d in shape:
        msg.dim.add(size=d)
    if not shape:
        msg.SetInParent()


def write_bundle(prefix, tensors=None, **options) -> Path:
    """Write ``prefix.index`` and its data shard(s); return the prefix as a Path."""
    spec = BundleSpec(tensors=dict(tensors or {}), **options)
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shards = [bytearray() for _ in range(spec.num_shards)]
    entries: dict[bytes, bytes] = {}
    counter = 0

    def add(key: bytes, code: int, value, shape, raw: bytes | None = None) -> None:
        nonlocal counter
        shard = counter % spec.num_shards
        counter += 1
        if raw is not None:
            data, crc = raw, mask(crc32c(raw))
        elif code == DT_STRING:
            data, crc = encode_strings(value, spec.big_endian)
        else:
            data = encode_fixed(value, code, spec.big_endian)
            crc = mask(crc32c(data))
        entry = protos.BundleEntryProto(
            dtype=code, shard_id=shard, offset=len(shards[shard]), size=len(data), crc32c=crc
        )
        _shape_proto(entry.shape, shape)
        shards[shard].extend(data)
        entries[key] = entry.SerializeToString()

    for name, item in spec.tensors.items():
        if not isinstance(item, Stored):
            item = Stored(np.asarray(item))
        value = np.asarray(item.value)
        code = item.code if item.code is not None else tf_code_of(value)
        if item.slices is None:
            add(name.encode(), code, value, value.shape, item.raw)
            continue
        full = protos.BundleEntryProto(dtype=code)
        _shape_proto(full.shape, value.shape)
        for extents in item.slices:
            tslice = full.slices.add()
            index, key_extents = [], []
            for dim, (start, length) in zip(value.shape, extents):
                ext = tslice.extent.add(start=start)
                if length is None:
                    index.append(slice(0, dim))
                    key_extents.append((start, -1))
                else:
                    ext.length = length
                    index.append(slice(start, start + length))
                    key_extents.append((start, length))
            part = value[tuple(index)]
            add(tensor_slice_key(name, key_extents), code, part, part.shape)
        entries[name.encode()] = full.SerializeToString()

    producer, min_consumer, bad = spec.version
    header = protos.BundleHeaderProto(num_shards=spec.num_shards, endianness=int(spec.big_endian))
    header.version.producer = producer
    header.version.min_consumer = min_consumer
    header.version.bad_consumers.extend(bad)
    table = [(b"", header.SerializeToString())] + sorted(entries.items())
    Path(f"{prefix}.index").write_bytes(build_table(table, spec.block_size, spec.compression_type))
    for i, data in enumerate(shards):
        Path(f"{prefix}.data-{i:05d}-of-{spec.num_shards:05d}").write_bytes(bytes(data))
    return prefix


# -- rewriting a TF-made bundle ------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _swap_strings(raw: bytes, count: int) -> tuple[bytes, int]:
    """Re-checksum a little-endian string tensor as a big-endian writer would have."""
    pos = 0
    items_len = []
    for _ in range(count):
        n, pos = _read_varint(raw, pos)
        items_len.append(n)
    body = raw[pos + 4 :]
    items, at = [], 0
    for n in items_len:
        items.append(body[at : at + n])
        at += n
    return encode_strings(items, big_endian=True)


def rewrite_big_endian(src_prefix, dst_prefix) -> Path:
    """Copy a (little-endian, e.g. TF-written) bundle as a big-endian machine would write it.

    Header endianness=BIG, every fixed-width element byte-swapped, string checksums
    recomputed over big-endian lengths, every CRC recomputed; offsets are unchanged.
    """
    from srn_port.core.checkpoint.sstable import read_table

    src_prefix, dst_prefix = Path(src_prefix), Path(dst_prefix)
    table = read_table(f"{src_prefix}.index")
    header = protos.BundleHeaderProto.FromString(table[0][1])
    assert header.endianness == 0
    n = header.num_shards
    data = [bytearray(Path(f"{src_prefix}.data-{i:05d}-of-{n:05d}").read_bytes()) for i in range(n)]
    out_entries = []
    for key, value in table[1:]:
        entry = protos.BundleEntryProto.FromString(value)
        if not entry.slices:
            raw = bytes(data[entry.shard_id][entry.offset : entry.offset + entry.size])
            count = int(np.prod([d.size for d in entry.shape.dim]))
            if entry.dtype == DT_STRING:
                swapped, crc = _swap_strings(raw, count)
            else:
                stored = TF_TO_STORED[entry.dtype]
                width = stored.itemsize // (2 if stored.kind == "c" else 1)
                swapped = (
                    np.frombuffer(raw, dtype=f"<u{width}" if width > 1 else "u1")
                    .byteswap()
                    .tobytes()
                )
                crc = mask(crc32c(swapped))
            assert len(swapped) == len(raw)
            data[entry.shard_id][entry.offset : entry.offset + entry.size] = swapped
            entry.crc32c = crc
        out_entries.append((key, entry.SerializeToString()))
    header.endianness = 1
    Path(dst_prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{dst_prefix}.index").write_bytes(
        build_table([(b"", header.SerializeToString())] + out_entries)
    )
    for i, blob in enumerate(data):
        Path(f"{dst_prefix}.data-{i:05d}-of-{n:05d}").write_bytes(bytes(blob))
    return dst_prefix

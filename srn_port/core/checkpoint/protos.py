"""The few TensorFlow protos a checkpoint reader needs, defined at runtime (docs/tf-numerics.md §3.4–3.9).

Field names and numbers follow ``tensorflow/core/protobuf/tensor_bundle.proto``,
``tensorflow/core/framework/{tensor_shape,tensor_slice,versions,types}.proto`` and
``tensorflow/python/training/checkpoint_state.proto``. Building them from a
``FileDescriptorProto`` lets the ``protobuf`` runtime do all wire decoding (defaults
for omitted proto3 fields, skipping unknown fields, packed or unpacked repeated ints)
without generated ``_pb2`` modules and without TensorFlow.

The descriptors live in a private pool: TensorFlow registers messages with the same
full names (``tensorflow.BundleEntryProto`` ...) in the default pool, and both must be
able to coexist in one process (the tests compare this reader against TF's).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .dtypes import TF_DTYPE_NAMES

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tensorflow"


def _field(msg, name, number, ftype, *, repeated=False, type_name=None, oneof=None):
    field = msg.field.add(name=name, number=number, type=ftype)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = f".{_PACKAGE}.{type_name}"
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="srn_port/checkpoint/tensor_bundle_runtime.proto", package=_PACKAGE, syntax="proto3"
    )

    dtype_enum = fdp.enum_type.add(name="DataType")
    for number, name in sorted(TF_DTYPE_NAMES.items()):
        dtype_enum.value.add(name=name, number=number)

    shape = fdp.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    _field(dim, "size", 1, _F.TYPE_INT64)
    _field(dim, "name", 2, _F.TYPE_STRING)
    _field(shape, "dim", 2, _F.TYPE_MESSAGE, repeated=True, type_name="TensorShapeProto.Dim")
    _field(shape, "unknown_rank", 3, _F.TYPE_BOOL)

    version = fdp.message_type.add(name="VersionDef")
    _field(version, "producer", 1, _F.TYPE_INT32)
    _field(version, "min_consumer", 2, _F.TYPE_INT32)
    _field(version, "bad_consumers", 3, _F.TYPE_INT32, repeated=True)

    tslice = fdp.message_type.add(name="TensorSliceProto")
    extent = tslice.nested_type.add(name="Extent")
    _field(extent, "start", 1, _F.TYPE_INT64)
    # A oneof gives `length` presence: an absent length means "the full dimension".
    extent.oneof_decl.add(name="has_length")
    _field(extent, "length", 2, _F.TYPE_INT64, oneof=0)
    _field(tslice, "extent", 1, _F.TYPE_MESSAGE, repeated=True, type_name="TensorSliceProto.Extent")

    header = fdp.message_type.add(name="BundleHeaderProto")
    endianness = header.enum_type.add(name="Endianness")
    endianness.value.add(name="LITTLE", number=0)
    endianness.value.add(name="BIG", number=1)
    _field(header, "num_shards", 1, _F.TYPE_INT32)
    _field(header, "endianness", 2, _F.TYPE_ENUM, type_name="BundleHeaderProto.Endianness")
    _field(header, "version", 3, _F.TYPE_MESSAGE, type_name="VersionDef")

    entry = fdp.message_type.add(name="BundleEntryProto")
    _field(entry, "dtype", 1, _F.TYPE_ENUM, type_name="DataType")
    _field(entry, "shape", 2, _F.TYPE_MESSAGE, type_name="TensorShapeProto")
    _field(entry, "shard_id", 3, _F.TYPE_INT32)
    _field(entry, "offset", 4, _F.TYPE_INT64)
    _field(entry, "size", 5, _F.TYPE_INT64)
    _field(entry, "crc32c", 6, _F.TYPE_FIXED32)
    _field(entry, "slices", 7, _F.TYPE_MESSAGE, repeated=True, type_name="TensorSliceProto")

    state = fdp.message_type.add(name="CheckpointState")
    _field(state, "model_checkpoint_path", 1, _F.TYPE_STRING)
    _field(state, "all_model_checkpoint_paths", 2, _F.TYPE_STRING, repeated=True)
    _field(state, "all_model_checkpoint_timestamps", 3, _F.TYPE_DOUBLE, repeated=True)
    _field(state, "last_preserved_timestamp", 4, _F.TYPE_DOUBLE)
    return fdp


def _message_classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    # Newer protobuf releases provide GetMessageClass and have removed
    # MessageFactory.GetPrototype; older ones only have the latter.
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:
        get_class = message_factory.MessageFactory(pool).GetPrototype
    names = [
        "TensorShapeProto",
        "VersionDef",
        "TensorSliceProto",
        "BundleHeaderProto",
        "BundleEntryProto",
        "CheckpointState",
    ]
    return {name: get_class(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in names}


_CLASSES = _message_classes()
TensorShapeProto = _CLASSES["TensorShapeProto"]
VersionDef = _CLASSES["VersionDef"]
TensorSliceProto = _CLASSES["TensorSliceProto"]
BundleHeaderProto = _CLASSES["BundleHeaderProto"]
BundleEntryProto = _CLASSES["BundleEntryProto"]
CheckpointState = _CLASSES["CheckpointState"]

#: ``BundleHeaderProto.Endianness`` values.
LITTLE = 0
BIG = 1

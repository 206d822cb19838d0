"""TensorFlow ``DataType`` codes and how their elements are stored (docs/tf-numerics.md §3.5).

Names and numbers are those of ``tensorflow/core/framework/types.proto``. Bundle entries
always carry the base type: ``*_REF`` codes (value + 100) never reach a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Every ``DataType`` value TF 2.21 defines, so that an unsupported one is named in errors.
TF_DTYPE_NAMES: dict[int, str] = {
    0: "DT_INVALID",
    1: "DT_FLOAT",
    2: "DT_DOUBLE",
    3: "DT_INT32",
    4: "DT_UINT8",
    5: "DT_INT16",
    6: "DT_INT8",
    7: "DT_STRING",
    8: "DT_COMPLEX64",
    9: "DT_INT64",
    10: "DT_BOOL",
    11: "DT_QINT8",
    12: "DT_QUINT8",
    13: "DT_QINT32",
    14: "DT_BFLOAT16",
    15: "DT_QINT16",
    16: "DT_QUINT16",
    17: "DT_UINT16",
    18: "DT_COMPLEX128",
    19: "DT_HALF",
    20: "DT_RESOURCE",
    21: "DT_VARIANT",
    22: "DT_UINT32",
    23: "DT_UINT64",
    24: "DT_FLOAT8_E5M2",
    25: "DT_FLOAT8_E4M3FN",
    26: "DT_FLOAT8_E4M3FNUZ",
    27: "DT_FLOAT8_E4M3B11FNUZ",
    28: "DT_FLOAT8_E5M2FNUZ",
    29: "DT_INT4",
    30: "DT_UINT4",
    31: "DT_INT2",
    32: "DT_UINT2",
    33: "DT_FLOAT4_E2M1FN",
}

DT_STRING = 7
DT_BFLOAT16 = 14


@dataclass(frozen=True)
class StorageType:
    """How one supported ``DataType`` is laid out on disk and returned to callers."""

    #: TF's name, e.g. ``"DT_FLOAT"``.
    tf_name: str
    #: Little-endian element type of the stored bytes; ``None`` for strings.
    stored: np.dtype | None
    #: dtype of the arrays :func:`get_tensor` returns (``object`` for strings).
    returned: np.dtype


def _fixed(tf_name: str, code: str, returned: str | None = None) -> StorageType:
    return StorageType(tf_name, np.dtype(code), np.dtype(returned or code).newbyteorder("="))


#: Supported types. Quantized (DT_Q*), 8/4/2-bit and handle types are left out on purpose:
#: numpy has no faithful representation for them and plain-variable checkpoints (all SRN
#: ever writes) do not contain them.
STORAGE: dict[int, StorageType] = {
    1: _fixed("DT_FLOAT", "<f4"),
    2: _fixed("DT_DOUBLE", "<f8"),
    3: _fixed("DT_INT32", "<i4"),
    4: _fixed("DT_UINT8", "u1"),
    5: _fixed("DT_INT16", "<i2"),
    6: _fixed("DT_INT8", "i1"),
    7: StorageType("DT_STRING", None, np.dtype(object)),
    8: _fixed("DT_COMPLEX64", "<c8"),
    9: _fixed("DT_INT64", "<i8"),
    # One byte per element, 0 or 1, which is exactly numpy's bool layout.
    10: _fixed("DT_BOOL", "?"),
    # numpy has no bfloat16; the 16 stored bits are the top half of a float32, so the
    # values are returned as float32 exactly (see tensors.decode_fixed).
    14: _fixed("DT_BFLOAT16", "<u2", "<f4"),
    17: _fixed("DT_UINT16", "<u2"),
    18: _fixed("DT_COMPLEX128", "<c16"),
    19: _fixed("DT_HALF", "<f2"),
    22: _fixed("DT_UINT32", "<u4"),
    23: _fixed("DT_UINT64", "<u8"),
}


def tf_dtype_name(code: int) -> str:
    """``"DT_FLOAT"`` for 1; ``"unknown DataType 77"`` for a code TF does not define."""
    return TF_DTYPE_NAMES.get(code, f"unknown DataType {code}")

"""The public reader: a small, strict, safetensors-style view of one TF V2 checkpoint.

It plays the role of ``tf.train.load_checkpoint`` (``py_checkpoint_reader`` over
``BundleReader``) without TensorFlow: ``keys()`` lists what TF's
``get_variable_to_shape_map()`` lists (partitioned variables by full name, never their
slice keys) and ``get_tensor`` returns the same values. Differences from TF, on purpose:
scalars come back as 0-d arrays, bfloat16 as exact float32 values (numpy has no
bfloat16; ``info(name).tf_dtype`` still says ``DT_BFLOAT16``), and every array is a
native-endian, writable copy.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .bundle import Bundle
from .dtypes import STORAGE, tf_dtype_name
from .locate import resolve_checkpoint


class CheckpointKeyError(CheckpointError, KeyError):
    """A tensor name that the checkpoint does not contain (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a repr
        return str(self.args[0])


@dataclass(frozen=True)
class TensorInfo:
    """What the index says about one tensor; obtained without reading its data."""

    name: str
    #: dtype of the array ``get_tensor`` returns: ``np.dtype(object)`` for strings,
    #: float32 for bfloat16; None for a dtype srn-port cannot read (``get_tensor``
    #: raises; ``tf_dtype`` names it), so that listing a checkpoint never fails.
    dtype: np.dtype | None
    #: TensorFlow's name for the stored type, e.g. ``"DT_FLOAT"``, ``"DT_BFLOAT16"``.
    tf_dtype: str
    shape: tuple[int, ...]
    #: True for a partitioned variable, stored as several slices and reassembled here.
    partitioned: bool
    #: Bytes the tensor occupies in the data files (all slices together); for strings
    #: this includes the length prefix and checksum.
    nbytes: int


class CheckpointReader:
    """Read the tensors of one TF V2 checkpoint; use as a context manager.

    ``path`` is a prefix, one of its files, or a directory (see
    :func:`~srn_port.core.checkpoint.locate.resolve_checkpoint`); ``step`` selects a
    checkpoint in a directory. Opening reads and verifies the index (every block CRC,
    header version, presence of every data file); ``get_tensor`` reads exactly that
    tensor's bytes and verifies its CRC. Not thread-safe.
    """

    def __init__(self, path: os.PathLike | str, step: int | None = None):
        self.prefix: Path = resolve_checkpoint(path, step)
        self._bundle: Bundle | None = Bundle(self.prefix)

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._bundle is None else f"{len(self._bundle.names())} tensors"
        return f"CheckpointReader('{self.prefix}', {state})"

    def _open_bundle(self) -> Bundle:
        if self._bundle is None:
            raise ValueError(f"CheckpointReader for {self.prefix} is closed")
        return self._bundle

    def _known(self, name: str) -> Bundle:
        bundle = self._open_bundle()
        if name not in bundle:
            close = difflib.get_close_matches(name, bundle.names(), n=3)
            hint = f" Similar names: {', '.join(close)}." if close else ""
            raise CheckpointKeyError(
                f"The checkpoint {self.prefix} has no tensor named {name!r} (it has "
                f"{len(bundle.names())}).{hint} List them with CheckpointReader.keys()."
            )
        return bundle

    def keys(self) -> list[str]:
        """Sorted tensor names; partitioned variables appear once, by full name."""
        return sorted(self._open_bundle().names())

    def __contains__(self, name: str) -> bool:
        return name in self._open_bundle()

    def info(self, name: str) -> TensorInfo:
        """dtype, shape and size of ``name`` from the index, without reading its data."""
        described = self._known(name).describe(name)
        return TensorInfo(
            name=name,
            dtype=(
                STORAGE[described.dtype_code].returned if described.dtype_code in STORAGE else None
            ),
            tf_dtype=tf_dtype_name(described.dtype_code),
            shape=described.shape,
            partitioned=described.partitioned,
            nbytes=described.nbytes,
        )

    def get_tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a native-endian, C-ordered, writable numpy array.

        Strings come back as an object array of ``bytes``; bfloat16 as float32.
        """
        return self._known(name).read(name)

    def metadata(self) -> dict:
        """Facts from the header: shards, byte order, format version, files."""
        bundle = self._open_bundle()
        header = bundle.header
        return {
            "prefix": str(self.prefix),
            "index_file": str(bundle.index_path),
            "data_files": [str(p) for p in bundle.data_paths],
            "num_shards": header.num_shards,
            "endianness": "big" if bundle.big_endian else "little",
            "version": {
                "producer": header.version.producer,
                "min_consumer": header.version.min_consumer,
                "bad_consumers": list(header.version.bad_consumers),
            },
        }

    def close(self) -> None:
        """Close the data files; further reads raise ``ValueError``. Idempotent."""
        if self._bundle is not None:
            self._bundle.close()
            self._bundle = None


def read_checkpoint(path: os.PathLike | str, step: int | None = None) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint, by sorted name."""
    with CheckpointReader(path, step) as reader:
        return {name: reader.get_tensor(name) for name in reader.keys()}

"""Read TensorFlow V2 checkpoints ("tensor bundles") without TensorFlow.

Layout, following the data: ``locate`` (which files) -> ``sstable`` (the ``.index``
table) -> ``protos`` (its entries) -> ``bundle`` (entries to byte ranges, slices) ->
``tensors`` (bytes to arrays) -> ``reader`` (the public API). The format is described
in ``docs/tf-numerics.md`` §3; nothing here imports TensorFlow.
"""

from ..errors import CheckpointError
from .locate import resolve_checkpoint
from .reader import CheckpointKeyError, CheckpointReader, TensorInfo, read_checkpoint

__all__ = [
    "CheckpointError",
    "CheckpointKeyError",
    "CheckpointReader",
    "TensorInfo",
    "read_checkpoint",
    "resolve_checkpoint",
]

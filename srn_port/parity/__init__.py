"""Parity of the PyTorch model with the TF original: golden files, live TF, per-layer
comparison, layer detail and diagnosis. Returns data; only the CLI prints.

Pipeline: a :class:`Reference` (golden file or live TF, one level at a time) ->
:func:`compare` (rows per node and level, tolerances from :mod:`srn_port.core.tolerances`) ->
:func:`diagnose` for the first divergent node -> :func:`write_heatmap` for a layer's detail.
An exported ``.onnx``/``.pt2`` file exposes only its level outputs: :func:`compare_outputs`.
"""

from ..port.taps import error_stats  # the toolkit's, which judges SRN's rows
from .compare import Comparison, Row, compare, compare_outputs
from .detail import LayerDetail, layer_detail, write_heatmap
from .diagnose import CAUSES, MISTAKES, Diagnosis, WeightDifference, diagnose
from .golden import (GoldenError, GoldenFile, default_golden_dir, find_golden, list_goldens,
                     regenerate_command)
from .reference import (GoldenReference, Reference, TFReference, image_input, parse_size,
                        random_input)

__all__ = [
    "CAUSES", "Comparison", "Diagnosis", "GoldenError", "GoldenFile", "GoldenReference",
    "LayerDetail", "MISTAKES", "Reference", "Row", "TFReference", "WeightDifference", "compare",
    "compare_outputs", "default_golden_dir", "diagnose", "error_stats", "find_golden",
    "image_input", "layer_detail", "list_goldens", "parse_size", "random_input",
    "regenerate_command", "write_heatmap",
]

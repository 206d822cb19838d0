"""A model-independent toolkit for porting TF1 / tf-slim networks to PyTorch
(docs/porting.md).

- TF-exact layers (:mod:`.layers`): ``Conv2d`` ('SAME'/'VALID'/explicit, any stride,
  dilation, groups), ``DepthwiseConv2d``, ``ConvTranspose2d``, ``MaxPool2d``/``AvgPool2d``
  ('SAME' as TF, average without the padding), ``BatchNorm`` (slim's), ``SlimConv2d``,
  ``FullyConnected`` (NHWC flatten), ``Resize`` (TF1/TF2 conventions);
- a strict weight mapper (:mod:`.mapping`, on :mod:`srn_port.core.mapping`, the mechanism
  that converts SRN's own checkpoints): a few ``Map``/``Drop``/``Rename`` scope rules, the
  layout transforms, and a ledger in which every variable is mapped or dropped by a named rule and
  every parameter filled;
- taps and a layer-by-layer comparison (:mod:`.taps`, :mod:`.compare`) against TF's
  activations with the tolerance table, and a diagnosis in words (:mod:`.diagnose`).

Nothing here imports TensorFlow (the TF side, :mod:`srn_port.reference.porting`, produces
plain arrays) or anything specific to SRN.
"""

from .compare import PortComparison, compare
from .diagnose import CAUSES, WEIGHT_TRANSFORMS, diagnose
from .layers import (AvgPool2d, BatchNorm, Conv2d, ConvTranspose2d, DepthwiseConv2d,
                     FullyConnected, GlobalMean, MaxPool2d, Resize, SlimConv2d, Squeeze)
from .mapping import (LAYOUTS, TRAINING_STATE, Conversion, Drop, Map, Rename, convert,
                      ema_rules, glob, load, module_path, target_of, tf_leaves)
from .taps import Diagnosis, Judged, Row, Tap, error_stats, matches, rel_error, taps_for

__all__ = [
    "AvgPool2d", "BatchNorm", "CAUSES", "Conv2d", "ConvTranspose2d", "Conversion",
    "DepthwiseConv2d", "Diagnosis", "Drop", "FullyConnected", "GlobalMean", "Judged", "LAYOUTS",
    "Map", "MaxPool2d", "PortComparison", "Rename", "Resize", "Row", "SlimConv2d", "Squeeze",
    "TRAINING_STATE",
    "Tap", "WEIGHT_TRANSFORMS", "compare", "convert", "diagnose", "ema_rules", "error_stats",
    "glob", "load", "matches", "module_path", "rel_error", "target_of", "taps_for", "tf_leaves",
]

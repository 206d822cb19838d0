"""TF checkpoint variable names -> SRN parameters, as a short set of named rules.

Every variable of a checkpoint is either *mapped* (a model weight) or *dropped* by a
named rule (optimizer slot, optimizer bookkeeping, global step, EMA shadow). Anything
else is an error: a silent partial load is how hand ports go wrong.

The model rule is a string rewrite, because the module names mirror the TF scopes:
``g_net/enc1_2/conv1/weights`` -> ``enc1_2.conv1.weight``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .network import VARIANTS, SRNConfig
from .errors import ConversionError
from .layouts import LAYOUTS
from .tfnames import BETA_POWER, EMA_SUFFIX, GLOBAL_STEP, OPTIMIZER_SLOT_NAMES

SCOPE = "g_net"
_MODEL_VAR = re.compile(rf"^{SCOPE}/(?P<path>.+)/(?P<kind>weights|biases)$")


_SLOT = re.compile(rf"^{SCOPE}/.+/(weights|biases)/(?P<opt>{'|'.join(OPTIMIZER_SLOT_NAMES)})(_\d+)?$")
_EMA = re.compile(rf"^(?P<var>{SCOPE}/.+/(weights|biases))/{EMA_SUFFIX}$")

#: (rule name, pattern, why it is safe to drop).
DROP_RULES: Tuple[Tuple[str, "re.Pattern[str]", str], ...] = (
    ("optimizer slot", _SLOT, "optimizer state (/Adam, /Adam_1, /Momentum, ...), not a weight"),
    ("adam beta power", re.compile(rf"^({BETA_POWER})$"),
     "Adam's bias-correction accumulators"),
    ("global step", re.compile(rf"^({GLOBAL_STEP})$"),
     "training step counter (SRN-Deblur's unnamed tf.Variable is saved as 'Variable')"),
    ("EMA shadow", _EMA, "moving-average copy of a weight; used instead with --ema"),
)


def tf_to_torch_name(tf_name: str) -> Optional[str]:
    """``g_net/<scope path>/weights|biases`` -> ``<dotted path>.weight|bias``; None otherwise."""
    m = _MODEL_VAR.match(tf_name)
    if m is None:
        return None
    suffix = "weight" if m.group("kind") == "weights" else "bias"
    return m.group("path").replace("/", ".") + "." + suffix


def torch_to_tf_name(param: str) -> str:
    path, _, kind = param.rpartition(".")
    return f"{SCOPE}/{path.replace('.', '/')}/{'weights' if kind == 'weight' else 'biases'}"


def tf_to_torch_tensor(array: np.ndarray) -> np.ndarray:
    """TF kernels are [kh, kw, in, out] (conv) or [kh, kw, out, in] (conv2d_transpose);
    PyTorch's are [out, in, kh, kw] and [in, out, kh, kw]: the same permutation (3, 2, 0, 1)
    for both, and no spatial flip. Biases are unchanged."""
    if array.ndim == 4:
        return LAYOUTS["conv"](array)
    return array


def torch_to_tf_tensor(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    return array


@dataclass(frozen=True)
class Classified:
    """Where each checkpoint variable goes."""

    mapped: Dict[str, str]  # tf name -> torch parameter name
    dropped: Dict[str, str]  # tf name -> rule name
    unknown: List[str]


def classify(names: Iterable[str], ema: bool = False) -> Classified:
    """Sort checkpoint variables into mapped / dropped (with rule) / unknown.

    With ``ema``, each weight's ``/ExponentialMovingAverage`` shadow is mapped instead of
    the raw variable, and the raw variable is dropped by the rule "replaced by EMA".
    """
    names = sorted(names)
    mapped: Dict[str, str] = {}
    dropped: Dict[str, str] = {}
    unknown: List[str] = []
    present = set(names)
    for name in names:
        ema_match = _EMA.match(name)
        if ema and ema_match:
            mapped[name] = tf_to_torch_name(ema_match.group("var"))
            continue
        rule = next((r for r, pat, _ in DROP_RULES if pat.match(name)), None)
        if rule is not None:
            dropped[name] = rule
            continue
        torch_name = tf_to_torch_name(name)
        if torch_name is None:
            unknown.append(name)
        elif ema and f"{name}/{EMA_SUFFIX}" in present:
            dropped[name] = "replaced by EMA"
        else:
            mapped[name] = torch_name
    return Classified(mapped, dropped, unknown)


def detect_config(shapes: Mapping[str, Sequence[int]]) -> SRNConfig:
    """Variant and width from the variables' names and shapes.

    ``enc1_1/weights`` is [5, 5, 2 * channels, width]; a ConvLSTM means ``lstm``.
    """
    key = f"{SCOPE}/enc1_1/weights"
    if key not in shapes:
        raise ConversionError(
            f"This checkpoint has no variable '{key}', so it is not an SRN-Deblur generator "
            f"(no variables under '{SCOPE}/' that look like SRN). Found e.g. "
            f"{', '.join(sorted(shapes)[:5]) or 'no variables'}. Check that the path points "
            f"to an SRN-Deblur checkpoint (color, gray or lstm).")
    shape = tuple(shapes[key])
    if len(shape) != 4 or shape[:2] != (5, 5) or shape[2] not in (2, 6):
        raise ConversionError(
            f"'{key}' has shape {list(shape)}; SRN-Deblur's is [5, 5, 6, width] (color) or "
            f"[5, 5, 2, width] (gray, lstm). This is not an SRN-Deblur checkpoint.")
    channels = shape[2] // 2
    has_lstm = any(n.startswith(f"{SCOPE}/convLSTM/") for n in shapes)
    variant = next(v for v, d in VARIANTS.items()
                   if d["channels"] == channels and d["lstm"] == has_lstm)
    try:
        return SRNConfig(variant=variant, width=int(shape[3]))
    except ValueError as exc:
        raise ConversionError(
            f"'{key}' has shape {list(shape)}, which gives an SRN width of {shape[3]} ({exc}). "
            f"This is not a usable SRN-Deblur checkpoint.") from None

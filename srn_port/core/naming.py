"""TF checkpoint variable names -> SRN parameters, as a short set of named rules.

Every variable of a checkpoint is either *mapped* (a model weight) or *dropped* by a
named rule (optimizer slot, optimizer bookkeeping, global step, EMA shadow). Anything
else is an error: a silent partial load is how hand ports go wrong.

The rules are the porting toolkit's (:mod:`srn_port.core.mapping`): one :class:`Map` rule,
because the module names mirror the TF scopes (``g_net/enc1_2/conv1/weights`` ->
``enc1_2.conv1.weight``), and SRN's :data:`DROP_RULES`; :func:`srn_target` says which
weights each SRN module owns, from the level graph (no torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .network import VARIANTS, SRNConfig, level_graph, node_param_shapes, param_shapes
from .errors import ConversionError
from .layouts import LAYOUTS
from .mapping import Drop, Map, Rule, Target, ema_rules, route
from .tfnames import BETA_POWER, EMA_SUFFIX, GLOBAL_STEP, OPTIMIZER_SLOT_NAMES

SCOPE = "g_net"

_SLOT = rf"{SCOPE}/.+/(weights|biases)/({'|'.join(OPTIMIZER_SLOT_NAMES)})(_\d+)?"
_EMA = rf"{SCOPE}/.+/(weights|biases)/{EMA_SUFFIX}"

#: The named rules that drop what is not a weight (``reason``: the rule's name).
DROP_RULES: Tuple[Drop, ...] = (
    Drop(_SLOT, "optimizer slot",
         "optimizer state (/Adam, /Adam_1, /Momentum, ...), not a weight"),
    Drop(BETA_POWER, "adam beta power", "Adam's bias-correction accumulators"),
    Drop(GLOBAL_STEP, "global step",
         "training step counter (SRN-Deblur's unnamed tf.Variable is saved as 'Variable')"),
    Drop(_EMA, "EMA shadow", "moving-average copy of a weight; used instead with --ema"),
)

#: The model rule: ``g_net/<scope>`` is the module ``<scope>`` (``/`` as ``.``).
MODEL_RULE = Map(re.escape(SCOPE), "")

#: SRN's TF leaves: every SRN module is a convolution (or the ConvLSTM's) with both.
_LEAVES = {"weights": "weight", "biases": "bias"}


def rules(names: Iterable[str] = (), ema: bool = False) -> Tuple[Rule, ...]:
    """SRN's mapping rules; with ``ema``, each weight's ``/ExponentialMovingAverage``
    shadow in place of the weight (read from ``names``: which weights have one)."""
    own = (*DROP_RULES, MODEL_RULE)
    if not ema:
        return own
    present = set(names)
    shadows = [n for n in present if re.fullmatch(_EMA, n)]  # of SRN's weights only
    weights = [n.rpartition("/")[0] for n in shadows if n.rpartition("/")[0] in present]
    return (*ema_rules(shadows + weights), *own)


def srn_target(config: SRNConfig) -> Target:
    """What an SRN model of ``config`` asks of a checkpoint (module -> its weights and
    biases, their layouts; parameter -> PyTorch shape), from the level graph."""
    owners: Dict[str, Dict[str, Tuple[str, str]]] = {}
    for node in level_graph(config):
        for key, shape in node_param_shapes(node).items():
            path, _, attr = key.rpartition(".")
            leaf = next(tf for tf, pt in _LEAVES.items() if pt == attr)
            layout = ("vector" if len(shape) != 4 else
                      "conv_transpose" if node.op == "deconv" else "conv")
            owners.setdefault(path, {})[leaf] = (attr, layout)
    return Target(owners=owners, params=param_shapes(config))


def tf_to_torch_name(tf_name: str) -> Optional[str]:
    """``g_net/<scope path>/weights|biases`` -> ``<dotted path>.weight|bias``; None otherwise."""
    where = route(tf_name, (MODEL_RULE,))
    if not where.path or where.leaf not in _LEAVES:
        return None
    return Target.key(where.path, _LEAVES[where.leaf])


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
    """Sort checkpoint variables into mapped / dropped (with rule) / unknown by SRN's
    :func:`rules`, from their names alone (no model: ``inspect``).

    With ``ema``, each weight's ``/ExponentialMovingAverage`` shadow is mapped instead of
    the raw variable, and the raw variable is dropped by the rule "replaced by EMA".
    """
    names = sorted(names)
    mapped: Dict[str, str] = {}
    dropped: Dict[str, str] = {}
    unknown: List[str] = []
    srn_rules = rules(names, ema)
    for name in names:
        where = route(name, srn_rules)
        if where.dropped is not None:
            dropped[name] = where.dropped
        elif where.path and where.leaf in _LEAVES:
            mapped[name] = Target.key(where.path, _LEAVES[where.leaf])
        else:
            unknown.append(name)
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

"""TF variables -> model parameters by a few declarative rules, strictly: the one mechanism
behind ``srn-port convert`` (SRN, :mod:`srn_port.core.convert`) and the porting toolkit
(:mod:`srn_port.port.mapping`, any tf-slim network). No torch, no TensorFlow.

A :class:`Map` rule maps a TF *scope* to a *module path*; the model's :class:`Target` says
which TF leaves (``weights``, ``biases``, ``beta`` ...) each module owns, under which
parameter name and in which layout (:data:`srn_port.core.layouts.LAYOUTS`). For the variable
``net/block1/conv1/weights`` the scope is everything before the last ``/``; the first Map
rule (in order) whose pattern matches the whole scope or a prefix of it ending at a ``/``
(the longest such prefix) gives the module path, the rest of the scope is appended with
``/`` as ``.``, and the module's leaf names the parameter it fills.

Before that, :class:`Drop` and :class:`Rename` rules are tried in their order, the first
that matches the whole name winning: a Drop takes the variable out of the model with its
reason (optimizer slots, the global step, EMA shadows: :data:`TRAINING_STATE`); a Rename
reads the variable as another name (an EMA shadow in place of its variable:
:func:`ema_rules`).

The ledger (:class:`Plan`) is strict: every variable is mapped or dropped by a named rule,
and every parameter filled exactly once with a tensor of its shape, in floating point;
anything else is listed by kind, so that each front end words one error with all problems.
:func:`plan` reads only names, shapes and dtypes; :func:`read` then reads the data,
verifying every stored tensor (dropped ones too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .layouts import LAYOUT_SHAPES, LAYOUTS
from .tfnames import BETA_POWER, EMA_SUFFIX, GLOBAL_STEP, OPTIMIZER_SLOT_NAMES

#: A module's TF leaves: leaf -> (parameter attribute, layout key of LAYOUTS).
Leaves = Mapping[str, Tuple[str, str]]


def glob(pattern: str) -> str:
    """A scope glob as a regular expression: ``*`` one scope component (a group),
    ``**`` any number of them (a group); the rest literal."""
    out = []
    for part in re.split(r"(\*\*|\*)", pattern):
        out.append("(.+)" if part == "**" else "([^/]+)" if part == "*" else re.escape(part))
    return "".join(out)


@dataclass(frozen=True)
class Map:
    """TF scope (a regular expression, matched against a whole scope prefix) -> module path
    (a ``re`` template: ``\\1`` ... the groups; ``""`` is the root module)."""

    scope: str
    module: str

    def match(self, scope: str) -> Optional[str]:
        """The module path for ``scope`` (this rule on its longest matching prefix), or None."""
        parts = scope.split("/") if scope else []
        for n in range(len(parts), -1, -1):
            prefix = "/".join(parts[:n])
            m = re.fullmatch(self.scope, prefix)
            if m:
                base = m.expand(self.module)
                rest = ".".join(parts[n:])
                return ".".join(p for p in (base, rest) if p)
        return None


@dataclass(frozen=True)
class Drop:
    """Variables (a regular expression, matched against the whole name) that are not part
    of the model, and why (``reason``: a short name of the rule; ``detail``: more words)."""

    pattern: str
    reason: str
    detail: str = ""

    def match(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


@dataclass(frozen=True)
class Rename:
    """A variable (``pattern``, matched against the whole name) read as another name (the
    ``re`` template ``replacement``), which is then mapped; ``reason`` says why."""

    pattern: str
    replacement: str
    reason: str = ""

    def apply(self, name: str) -> Optional[str]:
        m = re.fullmatch(self.pattern, name)
        return None if m is None else m.expand(self.replacement)


Rule = Union[Map, Drop, Rename]

#: What training adds to a checkpoint: drop it (append to a model's own rules).
TRAINING_STATE: Tuple[Drop, ...] = (
    Drop(GLOBAL_STEP, "the global step"),
    Drop(rf".+/({'|'.join(OPTIMIZER_SLOT_NAMES)}|AdamW|LARS)(_\d+)?", "an optimizer slot"),
    Drop(rf"(.+/)?{BETA_POWER}", "Adam's beta powers"),
    Drop(rf".+/{EMA_SUFFIX}(_\d+)?", "an exponential-moving-average shadow"),
)


def ema_rules(names: Sequence[str], suffix: str = EMA_SUFFIX) -> Tuple[Rule, ...]:
    """Rules that read each variable's moving average (``<var>/<suffix>``, written by
    ``tf.train.ExponentialMovingAverage``) in its place: the shadow is renamed to the
    variable, and the variable itself, where it has a shadow, dropped as "replaced by EMA".
    Put them before the model's other rules (which drop shadows)."""
    present = set(names)
    raw = sorted(n[:-len(suffix) - 1] for n in present if n.endswith("/" + suffix))
    return (Rename(rf"(.+)/{re.escape(suffix)}", r"\1", "its moving average"),
            *(Drop(re.escape(n), "replaced by EMA") for n in raw if n in present))


def module_path(name: str, rules: Sequence[Rule]) -> Optional[str]:
    """The module path a TF scope (or an end_point name) maps to under ``rules``."""
    for rule in rules:
        if isinstance(rule, Map):
            path = rule.match(name)
            if path is not None:
                return path
    return None


@dataclass(frozen=True)
class Route:
    """Where the rules send one variable: dropped (``dropped``: the reason), or read as
    ``as_name`` into the ``leaf`` of the module at ``path`` (None: no rule maps its scope)."""

    dropped: Optional[str] = None
    as_name: str = ""
    path: Optional[str] = None
    leaf: str = ""


def route(name: str, rules: Sequence[Rule]) -> Route:
    """Where ``rules`` send the variable ``name`` (see the module's doc)."""
    as_name = name
    for rule in rules:
        if isinstance(rule, Drop) and rule.match(name):
            return Route(dropped=rule.reason)
        if isinstance(rule, Rename):
            renamed = rule.apply(name)
            if renamed is not None:
                as_name = renamed
                break
    scope, _, leaf = as_name.rpartition("/")
    return Route(as_name=as_name, path=module_path(scope, rules), leaf=leaf)


@dataclass
class Target:
    """What a mapping fills: ``owners`` module path -> its :data:`Leaves` (every module of
    the model, containers with ``{}``), ``params`` parameter key -> PyTorch shape, in the
    model's order (what TF fills: no counters)."""

    owners: Mapping[str, Leaves]
    params: Mapping[str, Tuple[int, ...]]

    @staticmethod
    def key(path: str, attr: str) -> str:
        return f"{path}.{attr}" if path else attr


@dataclass
class Plan:
    """The ledger of one mapping. ``mapped`` TF name -> parameter key, ``layouts`` key ->
    layout, ``dropped`` TF name -> reason; the problems by kind (empty lists: none)."""

    mapped: Dict[str, str] = field(default_factory=dict)
    layouts: Dict[str, str] = field(default_factory=dict)
    dropped: Dict[str, str] = field(default_factory=dict)
    unknown: List[str] = field(default_factory=list)  # no rule maps or drops them
    no_module: List[Tuple[str, str, str]] = field(default_factory=list)  # (name, path, leaf)
    no_leaf: List[Tuple[str, str, str]] = field(default_factory=list)  # (name, path, leaf)
    twice: List[Tuple[str, str, str]] = field(default_factory=list)  # (key, first, second)
    wrong_shape: List[Tuple[str, str]] = field(default_factory=list)  # (name, key)
    not_float: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # parameter keys nothing fills

    @property
    def ok(self) -> bool:
        return not (self.unknown or self.no_module or self.no_leaf or self.twice
                    or self.wrong_shape or self.not_float or self.missing)


def plan(names: Sequence[str], shapes: Mapping[str, Tuple[int, ...]],
         floating: Callable[[str], bool], rules: Sequence[Rule], target: Target) -> Plan:
    """The ledger of mapping the variables ``names`` (their ``shapes``; ``floating(name)``:
    stored in a floating-point type) onto ``target`` by ``rules``, from names, shapes and
    dtypes only."""
    p = Plan()
    for name in names:
        where = route(name, rules)
        if where.dropped is not None:
            p.dropped[name] = where.dropped
            continue
        if where.path is None:
            p.unknown.append(name)
            continue
        leaves = target.owners.get(where.path)
        if leaves is None:
            p.no_module.append((name, where.path, where.leaf))
            continue
        if where.leaf not in leaves:
            p.no_leaf.append((name, where.path, where.leaf))
            continue
        attr, layout = leaves[where.leaf]
        key = Target.key(where.path, attr)
        if key in p.layouts:
            p.twice.append((key, next(t for t, k in p.mapped.items() if k == key), name))
            continue
        p.mapped[name], p.layouts[key] = key, layout
        if layout_shape(layout, shapes[name]) != tuple(target.params[key]):
            p.wrong_shape.append((name, key))
        if not floating(name):
            p.not_float.append(name)
    filled = set(p.mapped.values())
    p.missing = [k for k in target.params if k not in filled]
    return p


def layout_shape(layout: str, shape: Sequence[int]) -> Optional[Tuple[int, ...]]:
    """The PyTorch shape of a TF tensor of ``shape`` in ``layout``, or None where the layout
    does not apply to that rank (computed from the shape: nothing is allocated)."""
    shape = tuple(int(d) for d in shape)
    rank = {"conv": 4, "conv_transpose": 4, "depthwise": 4, "fc": 2}.get(layout)
    if rank is not None and len(shape) != rank:
        return None
    return LAYOUT_SHAPES[layout](shape)


def read(p: Plan, target: Target, get: Callable[[str], np.ndarray]
         ) -> Tuple[Dict[str, np.ndarray], List[Tuple[str, int, int]]]:
    """The mapped tensors as float32 numpy arrays in PyTorch layout, keyed and ordered as
    ``target.params``, and the variables holding NaN or infinite values ``(name, how many,
    of how many)``. Every dropped variable is read too (``get`` verifies each stored
    tensor's checksum): a damaged checkpoint is reported, not half-trusted."""
    arrays: Dict[str, np.ndarray] = {}
    not_finite: List[Tuple[str, int, int]] = []
    for name, key in p.mapped.items():
        arr = np.ascontiguousarray(LAYOUTS[p.layouts[key]](get(name)).astype(np.float32,
                                                                               copy=False))
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            not_finite.append((name, bad, int(arr.size)))
        arrays[key] = arr
    for name in p.dropped:
        get(name)
    return {k: arrays[k] for k in target.params if k in arrays}, not_finite

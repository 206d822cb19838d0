"""TF variables -> a PyTorch module tree, by a few declarative scope rules, strictly.

A rule maps a TF *scope* to a *module path*; the module found there says which variables
it owns (its ``TF_LEAVES``: ``weights``, ``biases``, ``beta`` ...) and how each is laid
out, so no table of names is written by hand::

    RULES = (
        Map(r"resnet_v1_50/block(\\d)/unit_(\\d+)/bottleneck_v1", r"block\\1.unit_\\2"),
        Map(r"resnet_v1_50", ""),
    ) + TRAINING_STATE

For the variable ``resnet_v1_50/block1/unit_2/bottleneck_v1/conv1/BatchNorm/beta`` the
scope is everything before the last ``/``; the first rule (in order) whose pattern
matches the whole scope or a prefix of it ending at a ``/`` (the longest such prefix)
gives the module path ``block1.unit_2``, the rest of the scope is appended with ``/`` as
``.`` (``block1.unit_2.conv1.BatchNorm``), and that module's ``TF_LEAVES['beta']`` names
the tensor it fills. Patterns are regular expressions, or globs through :func:`glob`.

The ledger is strict, like ``srn-port convert``'s: every variable is mapped or dropped by a
named :class:`Drop` rule (optimizer slots, the global step, EMA shadows), and every
parameter and buffer of the module is filled exactly once with a tensor of its shape;
anything else is one :class:`~srn_port.core.errors.ConversionError` listing all problems.
The checkpoint is read without TensorFlow (:mod:`srn_port.core.checkpoint`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..core.checkpoint import CheckpointReader
from ..core.errors import ConversionError
from ..core.layouts import LAYOUTS as _LAYOUTS
from ..core.tfnames import BETA_POWER, EMA_SUFFIX, GLOBAL_STEP, OPTIMIZER_SLOT_NAMES
from . import layers as L

_LISTING_LIMIT = 40


#: TF layout -> PyTorch layout (numpy), shared with SRN's converter.
LAYOUTS = _LAYOUTS

#: Plain torch.nn modules: the TF leaves a slim layer of the same kind has.
_TORCH_LEAVES: Tuple[Tuple[type, L.Leaves], ...] = (
    (nn.ConvTranspose2d, {"weights": ("weight", "conv_transpose"), "biases": ("bias", "vector")}),
    (nn.Conv2d, {"weights": ("weight", "conv"), "biases": ("bias", "vector")}),
    (nn.Linear, {"weights": ("weight", "fc"), "biases": ("bias", "vector")}),
    (nn.modules.batchnorm._BatchNorm, {"gamma": ("weight", "vector"), "beta": ("bias", "vector"),
                                       "moving_mean": ("running_mean", "vector"),
                                       "moving_variance": ("running_var", "vector")}),
)
#: Buffers that hold no TF quantity (BatchNorm2d's counter).
_NOT_TF = ("num_batches_tracked",)


def tf_leaves(module: nn.Module) -> L.Leaves:
    """The TF variable leaves ``module`` owns directly (``{}`` for a container)."""
    own = getattr(type(module), "TF_LEAVES", None)
    if own is not None:
        leaves = own
    else:
        leaves = next((lv for kind, lv in _TORCH_LEAVES if isinstance(module, kind)), {})
        if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d) \
                and module.groups > 1 and module.groups == module.in_channels:
            leaves = {"depthwise_weights": ("weight", "depthwise"), "biases": ("bias", "vector")}
    return {leaf: (attr, layout) for leaf, (attr, layout) in leaves.items()
            if getattr(module, attr, None) is not None}


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
    of the model, and why."""

    pattern: str
    reason: str

    def match(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


Rule = Union[Map, Drop]

#: What training adds to a checkpoint: drop it (append to a model's own rules).
TRAINING_STATE: Tuple[Drop, ...] = (
    Drop(GLOBAL_STEP, "the global step"),
    Drop(rf".+/({'|'.join(OPTIMIZER_SLOT_NAMES)}|AdamW|LARS)(_\d+)?", "an optimizer slot"),
    Drop(rf"(.+/)?{BETA_POWER}", "Adam's beta powers"),
    Drop(rf".+/{EMA_SUFFIX}(_\d+)?", "an exponential-moving-average shadow"),
)


def module_path(name: str, rules: Sequence[Rule]) -> Optional[str]:
    """The module path a TF scope (or an end_point name) maps to under ``rules``."""
    for rule in rules:
        if isinstance(rule, Map):
            path = rule.match(name)
            if path is not None:
                return path
    return None


@dataclass
class Conversion:
    """A checkpoint converted onto a module: ``state_dict`` (tensors in PyTorch layout,
    keys in the module's order), and the ledger: ``mapped`` TF name -> state_dict key,
    ``dropped`` TF name -> the rule's reason."""

    state_dict: Dict[str, torch.Tensor]
    source: str
    mapped: Dict[str, str]
    dropped: Dict[str, str]
    notes: List[str] = field(default_factory=list)

    def tf_name(self, key: str) -> Optional[str]:
        return next((tf for tf, k in self.mapped.items() if k == key), None)


def _listing(items: List[str]) -> str:
    shown = items[:_LISTING_LIMIT]
    more = f"\n  ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "\n".join(f"  {s}" for s in shown) + more


class _ArraySource:
    def __init__(self, arrays: Mapping[str, np.ndarray], source: str = "arrays"):
        self.arrays, self.source = arrays, source

    def keys(self):
        return sorted(self.arrays)

    def shape(self, name):
        return tuple(np.shape(self.arrays[name]))

    def dtype(self, name):
        return np.asarray(self.arrays[name]).dtype

    def get(self, name):
        return np.asarray(self.arrays[name])


class _ReaderSource:
    def __init__(self, reader: CheckpointReader):
        self.reader, self.source = reader, f"checkpoint '{reader.prefix}'"

    def keys(self):
        return self.reader.keys()

    def shape(self, name):
        return tuple(self.reader.info(name).shape)

    def dtype(self, name):
        return self.reader.info(name).dtype

    def get(self, name):
        return self.reader.get_tensor(name)


def _hint(key: str, model: nn.Module) -> str:
    path, _, attr = key.rpartition(".")
    module = model.get_submodule(path) if path else model
    if attr == "gamma" and isinstance(module, L.BatchNorm):
        return (" (slim's batch_norm has scale=False by default: no gamma in the checkpoint; "
                "build BatchNorm(scale=False) unless the net's arg_scope sets "
                "batch_norm_scale=True)")
    if attr == "bias" and path and isinstance(model.get_submodule(path), nn.Conv2d):
        return " (a slim conv2d with a normalizer_fn has no biases: build it with bias=False)"
    return ""


def convert(source: Union[str, os.PathLike, Mapping[str, np.ndarray]], model: nn.Module,
            rules: Sequence[Rule], step: Optional[int] = None) -> Conversion:
    """Map the variables of ``source`` (a TF checkpoint, read without TF, or a name ->
    array mapping) onto ``model`` by ``rules``; raise ConversionError listing every
    problem. The result's ``state_dict`` loads with ``model.load_state_dict(...,
    strict=True)``; ``model`` itself is not changed."""
    if isinstance(source, Mapping):
        return _convert(_ArraySource(source), model, rules)
    with CheckpointReader(source, step=step) as reader:
        return _convert(_ReaderSource(reader), model, rules)


def _convert(src, model: nn.Module, rules: Sequence[Rule]) -> Conversion:
    expected = {k: v for k, v in model.state_dict().items()
                if k.rpartition(".")[2] not in _NOT_TF}
    modules = dict(model.named_modules())
    mapped: Dict[str, str] = {}
    dropped: Dict[str, str] = {}
    layouts: Dict[str, str] = {}
    unknown, no_module, no_leaf, twice, wrong_shape, not_float = [], [], [], [], [], []
    for name in src.keys():
        drop = next((r for r in rules if isinstance(r, Drop) and r.match(name)), None)
        if drop is not None:
            dropped[name] = drop.reason
            continue
        scope, _, leaf = name.rpartition("/")
        path = module_path(scope, rules)
        if path is None:
            unknown.append(f"{name} {list(src.shape(name))}")
            continue
        module = modules.get(path)
        if module is None:
            no_module.append(f"{name} -> module '{path}', which the model does not have")
            continue
        leaves = tf_leaves(module)
        if leaf not in leaves:
            owns = ", ".join(leaves) or "no variables"
            no_leaf.append(f"{name} -> module '{path}' ({type(module).__name__}), which owns "
                           f"{owns}")
            continue
        attr, layout = leaves[leaf]
        key = f"{path}.{attr}" if path else attr
        if key in layouts:
            twice.append(f"{key}: from {next(t for t, k in mapped.items() if k == key)} and {name}")
            continue
        mapped[name], layouts[key] = key, layout
        dtype = src.dtype(name)
        if dtype is None or not np.issubdtype(dtype, np.floating):
            not_float.append(f"{name}: {dtype}")
            continue
        want = tuple(expected[key].shape)
        got = LAYOUTS[layout](np.empty(src.shape(name), np.float32)).shape \
            if _layout_applies(layout, src.shape(name)) else None
        if got != want:
            wrong_shape.append(f"{name} {list(src.shape(name))} -> {key} {list(want)} "
                               f"({layout} layout)")
    filled = set(mapped.values())
    missing = [f"{k} {list(v.shape)}{_hint(k, model)}" for k, v in expected.items()
               if k not in filled]
    problems = []
    for title, items in (
            ("variables that no rule maps or drops", unknown),
            ("variables mapped to a module path the model does not have", no_module),
            ("variables whose module does not own them (its TF_LEAVES)", no_leaf),
            ("parameters filled twice", twice),
            ("variables whose shape does not fit their parameter", wrong_shape),
            ("variables that are not floating point", not_float),
            ("parameters and buffers of the model that no variable fills", missing)):
        if items:
            problems.append(f"{title}:\n{_listing(items)}")
    if problems:
        raise ConversionError(
            f"Cannot map {src.source} onto {type(model).__name__}: " + ";\n".join(problems)
            + "\nNothing was converted. Add a Map rule for a scope, a Drop rule (with its "
              "reason) for a variable that is not part of the model, or fix the module.")
    state = {}
    not_finite = []
    for name, key in mapped.items():
        arr = np.ascontiguousarray(LAYOUTS[layouts[key]](src.get(name)).astype(np.float32))
        if not np.isfinite(arr).all():
            not_finite.append(name)
        state[key] = torch.from_numpy(arr).to(expected[key].dtype)
    for name in dropped:  # every stored tensor's checksum is verified, dropped ones too
        src.get(name)
    if not_finite:
        raise ConversionError(f"Cannot convert {src.source}: variables hold NaN or infinite "
                              f"values:\n{_listing(not_finite)}\nThe run diverged before this "
                              f"checkpoint was saved, or the file is damaged.")
    full = model.state_dict()
    ordered = {k: state.get(k, full[k]) for k in full}  # the counters keep their value
    return Conversion(ordered, src.source, mapped, dropped)


def _layout_applies(layout: str, shape: Tuple[int, ...]) -> bool:
    return {"conv": 4, "conv_transpose": 4, "depthwise": 4, "fc": 2}.get(layout, 1) == len(shape)


def load(source, model: nn.Module, rules: Sequence[Rule], step: Optional[int] = None
         ) -> Conversion:
    """:func:`convert`, then load the result into ``model`` (strict)."""
    conv = convert(source, model, rules, step)
    model.load_state_dict(conv.state_dict, strict=True)
    return conv

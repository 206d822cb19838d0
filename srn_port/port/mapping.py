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
The checkpoint is read without TensorFlow (:mod:`srn_port.core.checkpoint`). The rules, the
ledger and the layouts are :mod:`srn_port.core.mapping`'s, the same mechanism that converts
SRN's checkpoints (``srn-port convert``); this module adds what a torch module says about
itself (its parameters and ``TF_LEAVES``) and the toolkit's wording of the problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..core.checkpoint import CheckpointReader
from ..core.errors import ConversionError
from ..core.layouts import LAYOUTS as _LAYOUTS
from ..core.mapping import (TRAINING_STATE, Drop, Map, Plan, Rename, Rule, Target, ema_rules,
                            glob, module_path, plan, read)
from . import layers as L

__all__ = ["LAYOUTS", "TRAINING_STATE", "Conversion", "Drop", "Map", "Rename", "Rule",
           "convert", "ema_rules", "glob", "load", "module_path", "target_of", "tf_leaves"]

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


def target_of(model: nn.Module) -> Target:
    """What ``model`` asks of a checkpoint: every module's TF leaves, and the shapes of its
    parameters and buffers (counters that hold no TF quantity left out)."""
    return Target(owners={path: tf_leaves(m) for path, m in model.named_modules()},
                  params={k: tuple(v.shape) for k, v in model.state_dict().items()
                          if k.rpartition(".")[2] not in _NOT_TF})


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


def _problems(p: Plan, src, model: nn.Module, target: Target) -> List[str]:
    """The ledger's problems in the toolkit's words, by kind."""
    modules = dict(model.named_modules())
    unknown = [f"{name} {list(src.shape(name))}" for name in p.unknown]
    no_module = [f"{name} -> module '{path}', which the model does not have"
                 for name, path, _ in p.no_module]
    no_leaf = [f"{name} -> module '{path}' ({type(modules[path]).__name__}), which owns "
               f"{', '.join(target.owners[path]) or 'no variables'}"
               for name, path, _ in p.no_leaf]
    twice = [f"{key}: from {first} and {second}" for key, first, second in p.twice]
    wrong_shape = [f"{name} {list(src.shape(name))} -> {key} {list(target.params[key])} "
                   f"({p.layouts[key]} layout)" for name, key in p.wrong_shape]
    not_float = [f"{name}: {src.dtype(name)}" for name in p.not_float]
    missing = [f"{k} {list(target.params[k])}{_hint(k, model)}" for k in p.missing]
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
    return problems


def _floating(src, name: str) -> bool:
    dtype = src.dtype(name)
    return dtype is not None and np.issubdtype(dtype, np.floating)


def _convert(src, model: nn.Module, rules: Sequence[Rule]) -> Conversion:
    target = target_of(model)
    names = src.keys()
    p = plan(names, {n: src.shape(n) for n in names}, lambda n: _floating(src, n), rules,
             target)
    problems = _problems(p, src, model, target)
    if problems:
        raise ConversionError(
            f"Cannot map {src.source} onto {type(model).__name__}: " + ";\n".join(problems)
            + "\nNothing was converted. Add a Map rule for a scope, a Drop rule (with its "
              "reason) for a variable that is not part of the model, or fix the module.")
    arrays, not_finite = read(p, target, src.get)
    if not_finite:
        raise ConversionError(f"Cannot convert {src.source}: variables hold NaN or infinite "
                              f"values:\n{_listing([n for n, _, _ in not_finite])}\nThe run "
                              f"diverged before this checkpoint was saved, or the file is "
                              f"damaged.")
    full = model.state_dict()
    # the counters keep their value
    ordered = {k: torch.from_numpy(arrays[k]).to(full[k].dtype) if k in arrays else full[k]
               for k in full}
    return Conversion(ordered, src.source, p.mapped, p.dropped)


def load(source, model: nn.Module, rules: Sequence[Rule], step: Optional[int] = None
         ) -> Conversion:
    """:func:`convert`, then load the result into ``model`` (strict)."""
    conv = convert(source, model, rules, step)
    model.load_state_dict(conv.state_dict, strict=True)
    return conv

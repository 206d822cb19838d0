"""Taps: a TF activation paired with the module whose output is the same quantity, and the
forward passes that capture them (forward hooks), judged against the tolerance table."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..core.tolerances import TOLERANCES, within
from .mapping import Rule, module_path


@dataclass(frozen=True)
class Tap:
    """TF activation ``name`` <-> the output of module ``module`` ("" the whole model) at
    its ``call``-th call (0: the first; a module applied several times, e.g. with shared
    weights, has one output per call)."""

    name: str
    module: str
    call: int = 0


def parse_module(spec: str) -> Tuple[str, int]:
    """``"path"`` or ``"path@N"`` (the N-th call, from 0) -> (path, call)."""
    path, sep, call = spec.rpartition("@")
    if sep and call.isdigit():
        return path, int(call)
    return spec, 0


@dataclass(kw_only=True)
class Judged:
    """An activation of a port against the reference's, judged by the tolerance table: the
    statistics and verdict of every comparison's row (:class:`Row` here, SRN's
    :class:`srn_port.parity.compare.Row`), all made by :meth:`judge`."""

    shape: Tuple[int, ...]  # the reference's
    max_abs_err: float
    max_abs_ref: float
    max_rel_err: float  # max_abs_err / max |ref|
    mean_abs_err: float
    tolerance: str  # key of TOLERANCES
    tolerance_rel: float
    passed: bool
    note: str = ""

    @classmethod
    def judge(cls, ours: Optional[torch.Tensor], ref: torch.Tensor, key: str, **names):
        """``ours`` against ``ref`` under ``TOLERANCES[key]`` (``max |ours - ref| <= rel *
        max |ref|``), as a ``cls`` whose own fields (the row's names) are ``names``. ``ours``
        None (the module never ran) or of another shape fails, with a note."""
        tol = TOLERANCES[key]
        if ours is None or tuple(ours.shape) != tuple(ref.shape):
            note = ("the module never ran" if ours is None
                    else f"shape {tuple(ours.shape)}, reference {tuple(ref.shape)}")
            scale = float(ref.abs().max()) if ref.numel() else 0.0
            return cls(shape=tuple(ref.shape), max_abs_err=math.inf, max_abs_ref=scale,
                       max_rel_err=math.inf, mean_abs_err=math.inf, tolerance=key,
                       tolerance_rel=tol.rel, passed=False, note=note, **names)
        err, scale, rel, mean = error_stats(ours, ref)
        return cls(shape=tuple(ref.shape), max_abs_err=err, max_abs_ref=scale, max_rel_err=rel,
                   mean_abs_err=mean, tolerance=key, tolerance_rel=tol.rel,
                   passed=within(err, scale, tol), **names)


@dataclass(kw_only=True)
class Row(Judged):
    """One tap: the module's output against the TF activation."""

    name: str
    module: str


@dataclass
class Diagnosis:
    """Why a first divergence diverges, as the toolkit's diagnosis
    (:func:`srn_port.port.diagnose.diagnose`) and SRN's (``srn_port.parity``) name it."""

    cause: str  # a key of srn_port.port.diagnose.CAUSES (or of SRN's own table)
    summary: str  # plain words
    module: str = ""  # the module found at fault ("" none named)
    evidence: List[str] = field(default_factory=list)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def error_stats(ours: torch.Tensor, ref: torch.Tensor) -> Tuple[float, float, float, float]:
    """(max |ours - ref|, max |ref|, max error / max |ref|, mean |ours - ref|)."""
    d = (ours.float() - ref.float()).abs()
    err = float(d.max()) if d.numel() else 0.0
    mean = float(d.sum(dtype=torch.float64)) / max(d.numel(), 1)
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
    return err, scale, rel, mean


def matches(ours: Optional[torch.Tensor], ref: torch.Tensor, key: str) -> bool:
    """``ours`` equals ``ref`` within ``TOLERANCES[key]`` (same shape required)."""
    if ours is None or tuple(ours.shape) != tuple(ref.shape):
        return False
    err, scale, _, _ = error_stats(ours, ref)
    return within(err, scale, TOLERANCES[key])


def rel_error(ours: Optional[torch.Tensor], ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref| (inf where ``ours`` is None or of another shape)."""
    if ours is None or tuple(ours.shape) != tuple(ref.shape):
        return math.inf
    return error_stats(ours, ref)[2]


def to_nchw(array) -> torch.Tensor:
    """A TF activation as the PyTorch layout: 4-D NHWC -> NCHW; other ranks unchanged."""
    t = torch.as_tensor(np.ascontiguousarray(array))
    return t.permute(0, 3, 1, 2).contiguous() if t.dim() == 4 else t


def taps_for(names: Sequence[str], model: nn.Module, rules: Sequence[Rule],
             extra: Optional[Mapping[str, str]] = None) -> Tuple[List[Tap], List[str]]:
    """Taps for the reference ``names`` (end_point keys): each mapped by ``extra`` (name ->
    module path), else by ``rules`` (the end_point's name as a scope), else by the name
    itself with ``/`` as ``.``; names whose module does not exist are returned apart."""
    modules = dict(model.named_modules())
    taps, untapped = [], []
    for name in names:
        candidates = [parse_module(extra[name])] if extra and name in extra else []
        candidates += [(module_path(name, rules), 0), (name.replace("/", "."), 0)]
        found = next(((p, c) for p, c in candidates if p is not None and p in modules), None)
        if found is None:
            untapped.append(name)
        else:
            taps.append(Tap(name, *found))
    return taps, untapped


class _Reached(Exception):
    def __init__(self, output):
        self.output = output


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


@contextmanager
def feeding(model: nn.Module, feed: Optional[Mapping[Tuple[str, int], torch.Tensor]],
            exclude: Tuple[str, int] = ("", -1)):
    """While active, each (module path, call) of ``feed`` (but ``exclude``) outputs the given
    tensor (TF's activation) instead of its own, where the shapes agree, so that every later
    module computes from TF's values: the isolation of ``compare(isolate=True)``. Hooks that
    were registered before see the module's own output."""
    handles = []
    by_path: Dict[str, Dict[int, torch.Tensor]] = {}
    for (path, call), value in (feed or {}).items():
        if path and (path, call) != tuple(exclude):
            by_path.setdefault(path, {})[call] = value
    for path, values in by_path.items():
        calls = [0]

        def hook(_m, _i, out, values=values, calls=calls):
            value = values.get(calls[0])
            calls[0] += 1
            if value is None or not isinstance(out, torch.Tensor) \
                    or tuple(out.shape) != tuple(value.shape):
                return None
            return value.to(device=out.device, dtype=out.dtype)

        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_to(model: nn.Module, x: torch.Tensor, path: str, feed=None,
           call: int = 0) -> Optional[torch.Tensor]:
    """The output of module ``path`` at its ``call``-th call in a forward pass of ``model``
    on ``x`` (stopped there), or None if it never gets there; ``feed``: see
    :func:`feeding`."""
    module = model.get_submodule(path) if path else None
    if module is None:
        with torch.no_grad(), feeding(model, feed):
            return _first_tensor(model(x))
    calls = [0]

    def hook(_m, _i, out):
        if calls[0] == call:
            raise _Reached(_first_tensor(out))
        calls[0] += 1

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad(), feeding(model, feed, exclude=(path, call)):
            model(x)
    except _Reached as reached:
        return reached.output
    finally:
        handle.remove()
    return None


@dataclass
class Trace:
    """One forward pass: the taps' outputs and the order modules ran in."""

    outputs: Dict[str, torch.Tensor]  # tap name -> output (at the tap's call)
    fired: List[str]  # tap names in the order they fired
    order: List[str]  # module paths in the order they were first called
    tap_at: Dict[str, int]  # tap name -> len(order) when it fired
    result: Optional[torch.Tensor]


def trace(model: nn.Module, x: torch.Tensor, taps: Sequence[Tap], feed=None) -> Trace:
    outputs: Dict[str, torch.Tensor] = {}
    fired: List[str] = []
    order: List[str] = []
    seen = set()
    tap_at: Dict[str, int] = {}
    handles = []
    by_module: Dict[str, List[Tap]] = {}
    for tap in taps:
        by_module.setdefault(tap.module, []).append(tap)
    for path, module in model.named_modules():
        def pre(_m, _args, path=path):
            if path and path not in seen:
                seen.add(path)
                order.append(path)

        calls = [0]

        def hook(_m, _i, out, path=path, calls=calls):
            call = calls[0]
            calls[0] += 1
            for tap in by_module.get(path, ()):
                if tap.call == call and tap.name not in outputs:
                    t = _first_tensor(out)
                    if t is not None:
                        outputs[tap.name] = t.detach().float().cpu()
                        fired.append(tap.name)
                        tap_at[tap.name] = len(order)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), feeding(model, feed):
            result = _first_tensor(model(x))
    finally:
        for h in handles:
            h.remove()
    return Trace(outputs, fired, order, tap_at, result)

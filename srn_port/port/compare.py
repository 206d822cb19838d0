"""Compare a ported module with TF's activations, tap by tap, and name the first divergence.

A :class:`Tap` pairs a TF activation (a slim ``end_points`` key or a graph tensor name)
with a module path whose forward output is the same quantity (a forward hook captures it).
:func:`taps_for` derives the taps from the end_points' names with the same :class:`Map`
rules that convert the weights. :func:`compare` runs the model once, judges every tap in
execution order against :mod:`srn_port.core.tolerances` (``max |ours - ref| <= rel * max
|ref|``) and hands the first divergent tap to :func:`srn_port.port.diagnose.diagnose`.

The TF side is plain arrays (NHWC, as TF computes them): produced by
:func:`srn_port.reference.porting.run_tf` where TF is installed, or loaded from a file
made elsewhere, so this module needs no TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .diagnose import diagnose
from .mapping import Conversion
from .taps import Diagnosis, Row, Tap, _finite, to_nchw, trace


@dataclass
class PortComparison:
    mode: str  # "chained" | "isolated"
    rows: List[Row]
    untapped: List[str]  # reference names with no module
    first_divergence: Optional[Row] = None
    diagnosis: Optional[Diagnosis] = None
    notes: List[str] = field(default_factory=list)
    #: tap name -> (ours, reference), NCHW: the taps asked for with ``keep``, and the first
    #: divergent one (not part of to_dict)
    tensors: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict,
                                                                  repr=False)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def to_dict(self) -> dict:
        tensors, self.tensors = self.tensors, {}
        try:
            d = asdict(self)
        finally:
            self.tensors = tensors
        d.pop("tensors")
        d["passed"] = self.passed
        return _finite(d)


def compare(model: nn.Module, x: torch.Tensor, reference: Mapping[str, np.ndarray],
            taps: Sequence[Tap], *, conversion: Optional[Conversion] = None,
            untapped: Sequence[str] = (), diagnose_first: bool = True, keep: Sequence[str] = (),
            isolate: bool = False, tolerance: Optional[str] = None,
            output_tolerance: Optional[str] = None) -> PortComparison:
    """Run ``model`` (put in eval mode) on the NCHW input ``x`` and compare each tap with
    ``reference[tap.name]`` (NHWC arrays as TF gives them). Intermediate taps are judged by
    ``TOLERANCES[tolerance]``, a tap that is the model's return value by
    ``TOLERANCES[output_tolerance]``. The first divergent tap, in execution order, is
    diagnosed (:func:`srn_port.port.diagnose.diagnose`); ``conversion`` (the weights the
    model was loaded with) lets the diagnosis tell changed weights apart. ``keep``: tap
    names whose two tensors are returned in ``tensors`` (the first divergent one always is).

    ``isolate``: every tapped module outputs TF's activation instead of its own to the
    modules after it (:func:`srn_port.port.taps.feeding`), so each row is the error of the
    modules since the previous taps alone, judged by 'layer' (default tolerances then)."""
    tolerance = tolerance or ("layer" if isolate else "chained")
    output_tolerance = output_tolerance or ("layer" if isolate else "output")
    missing = [t.name for t in taps if t.name not in reference]
    if missing:
        raise KeyError(f"no reference activation for tap(s) {', '.join(missing)}")
    model.eval()
    feed = None
    if isolate:
        feed = {}
        for tap in taps:
            feed.setdefault((tap.module, tap.call), to_nchw(reference[tap.name]))
    tr = trace(model, x, taps, feed)
    by_name = {t.name: t for t in taps}
    ordered = tr.fired + [t.name for t in taps if t.name not in tr.fired]
    result = PortComparison(mode="isolated" if isolate else "chained", rows=[],
                            untapped=list(untapped))
    for name in ordered:
        tap = by_name[name]
        ours = tr.outputs.get(name)
        is_output = (tr.result is not None and ours is not None
                     and tuple(ours.shape) == tuple(tr.result.shape)
                     and torch.equal(ours, tr.result.detach().float().cpu()))
        ref = to_nchw(reference[name])
        row = Row.judge(ours, ref, output_tolerance if is_output else tolerance,
                        name=name, module=tap.module)
        result.rows.append(row)
        if not row.passed and result.first_divergence is None:
            result.first_divergence = row
            if ours is not None:
                result.tensors[name] = (ours, ref)
        if name in keep and ours is not None:
            result.tensors[name] = (ours, ref)
    if result.first_divergence is not None and diagnose_first:
        row = result.first_divergence
        index = ordered.index(row.name)
        earlier = [n for n in ordered[:index]]
        start = max((tr.tap_at[n] for n in earlier if n in tr.tap_at), default=0)
        end = tr.tap_at.get(row.name, len(tr.order))
        result.diagnosis = diagnose(model, x, by_name[row.name], to_nchw(reference[row.name]),
                                    row.tolerance, tr.order[start:end],
                                    first_tap=not earlier, conversion=conversion, feed=feed)
    return result

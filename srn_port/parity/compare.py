"""Compare the PyTorch model with a reference, layer by layer and level by level.

Chained (the default): the model runs normally and every node is compared as it is
produced, so an error shows up where it enters and how it grows. Isolated: every node is
fed the reference's own inputs, so each row is that layer's own error. Tolerances come from
:mod:`srn_port.core.tolerances` (``node_tolerance_keys``). Reference tensors are fetched one level
at a time (one tensor at a time from a golden file) and dropped after use. An exported
``.onnx``/``.pt2`` file exposes only its level outputs: :func:`compare_outputs` compares those.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..core.network import N_LEVELS, level_size
from ..core.errors import SrnPortError
from ..core.network import OUTPUT_NODE, STATE_NODE, Node, level_graph
from ..nn.model import SRN
from ..core.tolerances import node_tolerance_keys
from ..port.taps import Judged, _finite  # judged as any port's rows
from .detail import LayerDetail, layer_detail
from ..nn.precision import PRECISIONS, emulate_rounding, numerics
from .diagnose import (Diagnosis, NodeCase, WeightDifference, diagnose, precision_diagnosis,
                       precision_pattern, weight_differences)
from .reference import Reference


@dataclass(kw_only=True)
class Row(Judged):
    """One node at one level, judged as every port's activations are (the toolkit's
    :class:`srn_port.port.taps.Judged`: statistics, tolerance, verdict)."""

    level: int
    layer: str
    op: str


@dataclass
class Comparison:
    mode: str  # "chained" | "isolated" | "outputs" (an exported file)
    reference: str
    model: str
    emulate: Tuple[str, ...]
    levels: Tuple[int, ...]
    rows: List[Row]
    first_divergence: Optional[Row] = None
    first_divergence_detail: Optional[LayerDetail] = None
    diagnosis: Optional[Diagnosis] = None
    details: List[LayerDetail] = field(default_factory=list)
    weight_differences: Optional[List[WeightDifference]] = None  # None: no reference weights
    notes: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def to_dict(self) -> dict:
        """Plain data for JSON (no error maps; infinities as null)."""
        d = asdict(self)
        if d["diagnosis"] is not None:  # SRN's diagnosis names the node, not a module
            del d["diagnosis"]["module"]
        for det in d["details"] + [d["first_divergence_detail"] or {}]:
            det.pop("error_map", None)
        d["passed"] = self.passed
        return _finite(d)


def judge_row(level: int, name: str, op: str, ours: torch.Tensor, ref: torch.Tensor,
              key: str) -> Row:
    """The row of one tensor against the reference's, judged by ``TOLERANCES[key]``."""
    return Row.judge(ours, ref, key, level=level, layer=name, op=op)


def reference_state_dict(reference: Reference):
    """The reference's weights as a PyTorch state_dict (converted without TF), or None."""
    if reference.checkpoint is None:
        return None
    from ..api.weights import as_state_dict
    from ..core.convert import convert_checkpoint

    return as_state_dict(convert_checkpoint(reference.checkpoint).arrays)


def check_compatible(model: SRN, reference: Reference) -> None:
    m, r = model.config, reference.config
    if (m.variant, m.width) != (r.variant, r.width):
        raise SrnPortError(
            f"The reference ({reference.description}) is an SRN {r.variant} model of width "
            f"{r.width}, but WEIGHTS is {m.variant} of width {m.width}; they cannot be compared. "
            f"Use the golden of WEIGHTS' variant and width (omit --golden to pick it), or --tf "
            f"with the checkpoint WEIGHTS was converted or exported from.")


def compare(model: SRN, reference: Reference, *, isolate: bool = False,
            levels: Optional[Sequence[int]] = None, layer: Optional[str] = None,
            diagnose_first: bool = True, model_name: str = "model",
            precision: str = "fp32") -> Comparison:
    """Compare ``model`` (as configured, emulation included) with ``reference``.

    ``levels``: the levels to compare (earlier ones still run when needed); ``layer``: a node
    name whose detail (:class:`LayerDetail`) is returned for each compared level. The first
    divergent row, in graph order, is diagnosed (:func:`srn_port.parity.diagnose.diagnose`).

    The model runs on the device of its parameters (the reference's tensors are moved
    there, and its activations back to the CPU to be judged) in ``precision``
    (:mod:`srn_port.nn.precision`): ``fp32`` is IEEE float32 (TF32 off on CUDA), ``tf32``
    TF32 convolutions (emulated on the CPU), ``fp16``/``bf16`` autocast.
    """
    check_compatible(model, reference)
    names = model.node_names()
    if layer is not None and layer not in names:
        raise SrnPortError(f"There is no layer '{layer}' in an SRN {model.config.variant} model. "
                           f"Valid names, in graph order: {', '.join(names)}.")
    levels = tuple(sorted(set(range(N_LEVELS) if levels is None else levels)))
    bad = [lv for lv in levels if not 0 <= lv < N_LEVELS]
    if bad:
        raise SrnPortError(f"Level {bad[0]} does not exist: SRN has {N_LEVELS} pyramid levels, "
                           f"0 (1/4 size), 1 (1/2 size) and 2 (full size).")
    x = reference.input()
    model.check_input(x)
    model.eval()
    if precision not in PRECISIONS:
        raise SrnPortError(f"Unknown precision '{precision}'; expected one of "
                           f"{', '.join(PRECISIONS)}.")
    device = next(model.parameters()).device
    exact_model, notes = model, []
    if precision == "tf32" and device.type != "cuda":
        model = emulate_rounding(model, "tf32")
        notes.append(f"TF32 emulated on the {device.type}: every convolution's input and "
                     f"weights rounded to 10 mantissa bits, products summed in float32")
    if precision != "fp32" or device.type != "cpu":
        notes.append(f"run on {device.type} in {precision}"
                     f"{' (TF32 off)' if precision == 'fp32' else ''}")
    x_dev = x.to(device)
    ref_sd = reference_state_dict(reference)
    base = SRN(model.config).eval()
    base.load_state_dict(ref_sd if ref_sd is not None else model.state_dict(), strict=True)
    transposed = frozenset(f"{n}.weight" for n, m in model.named_modules()
                           if isinstance(m, torch.nn.ConvTranspose2d))
    ours_sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # any device
    wdiffs = (weight_differences(ours_sd, ref_sd, transposed)
              if ref_sd is not None else None)
    result = Comparison(mode="isolated" if isolate else "chained",
                        reference=reference.description, model=model_name,
                        emulate=tuple(model.emulate), levels=levels, rows=[],
                        weight_differences=wdiffs)
    result.notes += notes
    if ref_sd is None:
        result.notes.append("the reference's checkpoint is not available: weights not compared")
    pending = []  # the first divergence, diagnosed once the run is over (outside its numerics)

    def judge(level: int, node: Node, ours: torch.Tensor, ref_level, keys: Dict[str, str],
              chained: bool) -> None:
        ref = ref_level[node.name]
        key = keys[node.name]
        ours = ours.detach().float().cpu()
        row = judge_row(level, node.name, node.op, ours, ref, key)
        result.rows.append(row)
        if node.name == layer and row.shape == tuple(ours.shape):
            result.details.append(layer_detail(level, node.name, ours, ref, key, row.passed))
        if not row.passed and result.first_divergence is None:
            result.first_divergence = row
            if row.shape == tuple(ours.shape):
                result.first_divergence_detail = (
                    result.details[-1] if node.name == layer
                    else layer_detail(level, node.name, ours, ref, key, False))
            if diagnose_first:
                feeds = reference.feeds(level)
                args = [feeds[i] if i in feeds else ref_level[i] for i in node.inputs]
                case = NodeCase(node, level, level_size(x.shape[-2], x.shape[-1], level), args,
                                ref, model, base, precision=precision, exact=exact_model)
                skipped = [lv for lv in range(level) if lv not in levels] if chained else []
                pending.append((case, row.max_rel_err if chained else None, skipped))

    with torch.no_grad(), numerics(device.type, "fp32" if model is not exact_model
                                   else precision):
        if isolate:
            for level in levels:
                ref_level = reference.level(level)
                feeds = reference.feeds(level)
                keys = node_tolerance_keys(model.graph, level, isolate=True)
                size = level_size(x.shape[-2], x.shape[-1], level)
                for node in model.graph:
                    args = [(feeds[i] if i in feeds else ref_level[i]).to(device)
                            for i in node.inputs]
                    judge(level, node, model.apply_node(node, args, size), ref_level, keys, False)
        else:
            x = x_dev
            feeds = {"input": x, "prev_output": x, "prev_state": model.initial_state(x)}
            by_name = {n.name: n for n in model.graph}
            for level in range(max(levels) + 1):
                if feeds["prev_state"] is None:
                    del feeds["prev_state"]
                capture = None
                if level in levels:
                    ref_level = reference.level(level)
                    keys = node_tolerance_keys(model.graph, level)
                    capture = (lambda lv, name, t, ref_level=ref_level, keys=keys:  # noqa: E731
                               judge(lv, by_name[name], t, ref_level, keys, True))
                out = model.run_level(level, feeds, capture)
                feeds = {"input": x, "prev_output": out[OUTPUT_NODE],
                         "prev_state": out.get(STATE_NODE)}
    if pending:
        case, chained_rel, skipped = pending[0]
        result.diagnosis = diagnose(case, chained_rel, wdiffs, skipped)
        pattern = precision_pattern(result.rows)
        if pattern is not None and result.diagnosis.cause == "reduced-precision":
            result.diagnosis.evidence.append(f"error pattern: {pattern.describe()}")
        elif pattern is not None:
            result.diagnosis = precision_diagnosis(result.diagnosis, pattern, precision)
    return result


def compare_outputs(model, reference: Reference, *, levels: Optional[Sequence[int]] = None,
                    layer: Optional[str] = None, model_name: str = "model") -> Comparison:
    """Compare an exported model with ``reference`` on what it exposes: its level outputs
    (only the finest for a ``finest_only`` export), each under 'output'.

    ``model``: an :class:`srn_port.api.deploy.OnnxModel` or ``ExportedProgram`` (``config``,
    ``finest_only``, called on the NCHW input). Its internal layers are not visible, so there
    are no layer rows, no diagnosis and no weight comparison; ``layer`` may only be the level
    output (``dec1_0``), whose detail is then returned for each compared level.
    """
    check_compatible(model, reference)
    exposed = (N_LEVELS - 1,) if model.finest_only else tuple(range(N_LEVELS))
    levels = exposed if levels is None else tuple(sorted(set(levels)))
    hidden = [lv for lv in levels if lv not in exposed]
    if hidden:
        raise SrnPortError(f"Level {hidden[0]} is not an output of the exported model, which "
                           f"outputs level(s) {', '.join(map(str, exposed))}"
                           f"{' (exported with --finest-only)' if model.finest_only else ''}.")
    if layer not in (None, OUTPUT_NODE):
        raise SrnPortError(f"An exported file exposes only its level outputs ({OUTPUT_NODE}), "
                           f"not layer '{layer}'; to see the internal layers, diff the weights "
                           f"it was exported from.")
    op = next(n.op for n in level_graph(model.config) if n.name == OUTPUT_NODE)
    x = reference.input()
    with torch.no_grad():
        outs = model(x)
    if len(outs) != len(exposed):
        raise SrnPortError(f"The exported model returned {len(outs)} output(s), not the "
                           f"{len(exposed)} its metadata announces; export it again.")
    result = Comparison(mode="outputs", reference=reference.description, model=model_name,
                        emulate=(), levels=levels, rows=[], notes=[
                            "internal layers are not visible in an exported file: they are not "
                            "compared or diagnosed, nor are its weights checked (for those, "
                            "diff the weights it was exported from)"])
    for level, ours in zip(exposed, outs):
        if level not in levels:
            continue
        ref = reference.level(level)[OUTPUT_NODE]
        row = judge_row(level, OUTPUT_NODE, op, ours, ref, "output")
        result.rows.append(row)
        same = row.shape == tuple(ours.shape)
        if layer == OUTPUT_NODE and same:
            result.details.append(layer_detail(level, OUTPUT_NODE, ours, ref, "output",
                                               row.passed))
        if not row.passed and result.first_divergence is None:
            result.first_divergence = row
            if same:
                result.first_divergence_detail = (
                    result.details[-1] if layer == OUTPUT_NODE
                    else layer_detail(level, OUTPUT_NODE, ours, ref, "output", False))
    return result

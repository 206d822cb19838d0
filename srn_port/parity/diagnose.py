"""Why the first divergent node diverges, tested rather than guessed.

The node is recomputed from the reference's own inputs three ways: as the model under test
computes it, as srn-port's TF-exact code computes it with the reference's weights (which must
reproduce the reference, else the reference itself is inconsistent), and under each known
porting mistake (:data:`MISTAKES`). A mistake is named when its recomputation reproduces the
model's wrong output and not the reference. Otherwise the weights are compared with the
reference checkpoint, and finally the isolated error separates a wrong layer from round-off
that grew along the chain. Each mistake is one entry: which ops it can affect, how to
recompute the node under it, and the explanation.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.network import FORGET_BIAS, LSTM_GATE_ORDER, Node
from ..nn.model import SRN
from ..core.naming import torch_to_tf_name
from ..nn.ops import tf_resize_bilinear
from ..nn.ops.conv import Conv2dSame, ConvTranspose2dSame
from ..nn.ops.padding import same_padding
from ..core.tolerances import EXACT_OPS, TOLERANCES, within
from ..nn.precision import UNIT_ROUNDOFF, numerics
# Ways a converter mangles a correct kernel, the causes' words, swapping a module in, and the
# judging: the porting toolkit's, shared
from ..port.diagnose import CAUSES as PORT_CAUSES, WEIGHT_TRANSFORMS, swapped
from ..port.taps import Diagnosis, matches, rel_error


#: The causes a diagnosis can name, and what each means.
CAUSES = {
    "stride2-padding": "asymmetric TF 'SAME' padding of a stride-2 (transposed) convolution",
    "resize-sampling": "the bilinear resize's sampling mode",
    "lstm-gates": "ConvLSTM gate order, forget bias or state packing",
    # the toolkit's causes, found here by recomputing the node (and the channels compared)
    "weight-layout": PORT_CAUSES["weight-layout"] + "; or its channels permuted",
    "weights-differ": PORT_CAUSES["weights-differ"],
    "round-off": "float32 round-off accumulated along the chain",
    "upstream": "the error came in from earlier levels that were not compared",
    "layer-wrong": PORT_CAUSES["layer-wrong"],
    "reference-mismatch": "the reference does not follow from its own checkpoint",
    "reduced-precision": "TF32 or half-precision (fp16/bf16) arithmetic, not a porting error",
}


@dataclass
class NodeCase:
    """Everything needed to recompute one node of one level."""

    node: Node
    level: int
    size: Tuple[int, int]
    inputs: List[torch.Tensor]  # the reference's own inputs of the node
    reference: torch.Tensor  # the reference's output of the node
    model: SRN  # the model under test (emulation included), on its device
    base: SRN  # TF-exact model with the reference's weights (or the model's if unknown)
    precision: str = "fp32"  # the arithmetic the model ran in (srn_port.nn.precision)
    exact: Optional[SRN] = None  # the model under test without reduced-precision emulation


def _activation(op: str, y: torch.Tensor) -> torch.Tensor:
    return F.relu(y) if op in ("conv", "deconv") else y


# -- the known mistakes -------------------------------------------------------------------
Variants = Iterator[Tuple[str, torch.Tensor]]


def _padding_variants(case: NodeCase) -> Variants:
    module = getattr(case.base, case.node.name)
    x = case.inputs[0]
    if isinstance(module, Conv2dSame):
        (kh, kw), (sh, sw) = module.kernel_size, module.stride
        ph, pw = same_padding(x.shape[-2], kh, sh), same_padding(x.shape[-1], kw, sw)
        if ph[0] == ph[1] and pw[0] == pw[1]:
            return
        conv = lambda xp, pad: _activation(case.node.op, F.conv2d(  # noqa: E731
            xp, module.weight, module.bias, module.stride, pad))
        yield (f"PyTorch padding={kh // 2} ({kh // 2} before, {kh // 2} after)",
               conv(x, (kh // 2, kw // 2)))
        yield ("the extra padding pixel put before instead of after",
               conv(F.pad(x, (pw[1], pw[0], ph[1], ph[0])), 0))
    elif isinstance(module, ConvTranspose2dSame):
        full = F.conv_transpose2d(x, module.weight, module.bias, module.stride)
        out = (x.shape[-2] * module.stride[0], x.shape[-1] * module.stride[1])
        before = [same_padding(out[i], module.kernel_size[i], module.stride[i])[0] for i in (0, 1)]
        total = (full.shape[-2] - out[0], full.shape[-1] - out[1])
        for top, left in {(0, 0), (total[0], total[1])} - {tuple(before)}:
            yield (f"the full transposed convolution cropped {top} before / {total[0] - top} "
                   f"after (TF: {before[0]} / {total[0] - before[0]})",
                   _activation(case.node.op, full[..., top:top + out[0], left:left + out[1]]))


def _explain_padding(case: NodeCase, label: str) -> str:
    module = getattr(case.base, case.node.name)
    h, w = case.inputs[0].shape[-2:]
    if isinstance(module, ConvTranspose2dSame):
        return (f"one-pixel shift after a stride-2 transposed convolution: TF 'SAME' crops the "
                f"full result by the forward convolution's padding; the model's {case.node.name} "
                f"equals {label}, i.e. every output sample is shifted by one pixel.")
    k, s = module.kernel_size[0], module.stride[0]
    ph, pw = same_padding(h, k, s), same_padding(w, module.kernel_size[1], module.stride[1])
    return (f"one-pixel shift after a stride-2 convolution: TF 'SAME' pads 1 before and 2 after "
            f"on even sizes (here {h}x{w}: rows {ph[0]}/{ph[1]}, columns {pw[0]}/{pw[1]}); "
            f"PyTorch padding={k // 2} pads {k // 2}/{k // 2}. The model's {case.node.name} "
            f"equals the {k}x{k} stride-{s} convolution with {label}, so every output sample is "
            f"taken one input pixel off. Pad explicitly: F.pad(x, (left, right, top, bottom)) "
            f"with TF's split, then conv2d(padding=0) (srn_port.nn.ops.Conv2dSame).")


def _resize_variants(case: NodeCase) -> Variants:
    x = case.inputs[0]
    size = case.size if case.node.op == "resize" else (case.size[0] // 4, case.size[1] // 4)
    if tuple(x.shape[-2:]) == tuple(size):
        return
    yield ("F.interpolate(mode='bilinear', align_corners=False), i.e. half-pixel centres",
           F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    yield ("F.interpolate(mode='bilinear', align_corners=True)",
           F.interpolate(x, size=size, mode="bilinear", align_corners=True))
    yield ("F.interpolate(mode='bilinear', antialias=True)",
           F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True))
    yield ("TF2 tf.image.resize (half-pixel centres)",
           tf_resize_bilinear(x, size, half_pixel_centers=True))
    yield ("TF1 resize with align_corners=True", tf_resize_bilinear(x, size, align_corners=True))
    yield ("nearest-neighbour sampling", F.interpolate(x, size=size, mode="nearest"))
    yield ("bicubic interpolation",
           F.interpolate(x, size=size, mode="bicubic", align_corners=False))


def _explain_resize(case: NodeCase, label: str) -> str:
    x = case.inputs[0]
    return (f"mismatch starts at a resize: sampling mode (TF1 legacy src = dst*in/out). The "
            f"original resizes with TF 1.4's tf.image.resize_images (bilinear, "
            f"align_corners=False, no half-pixel centres); the model's {case.node.name} "
            f"({tuple(x.shape[-2:])} -> {tuple(case.reference.shape[-2:])}) equals {label}, which "
            f"samples elsewhere. Use srn_port.tf_resize_bilinear, bit-exact with TF's kernel.")


def _lstm(case: NodeCase, order=LSTM_GATE_ORDER, forget_bias=FORGET_BIAS,
          state_order=("c", "h")) -> torch.Tensor:
    x, state = case.inputs
    cell = case.base.convLSTM
    parts = dict(zip(state_order, torch.split(state, cell.features, dim=1)))
    gates = dict(zip(order, torch.split(cell.LSTM_conv(torch.cat([x, parts["h"]], 1)),
                                        cell.features, dim=1)))
    new_c = (parts["c"] * torch.sigmoid(gates["f"] + forget_bias)
             + torch.sigmoid(gates["i"]) * torch.tanh(gates["j"]))
    new = {"c": new_c, "h": torch.tanh(new_c) * torch.sigmoid(gates["o"])}
    return torch.cat([new[k] for k in state_order], dim=1)


def _lstm_variants(case: NodeCase) -> Variants:
    for order in itertools.permutations(LSTM_GATE_ORDER):
        if order != LSTM_GATE_ORDER:
            yield (f"the gates split as ({', '.join(order)}) instead of TF's "
                   f"({', '.join(LSTM_GATE_ORDER)})", _lstm(case, order=order))
    for bias in (0.0, 2.0):
        yield f"forget bias {bias:g} instead of {FORGET_BIAS:g}", _lstm(case, forget_bias=bias)
    yield "the state packed as [h, c] instead of [c, h]", _lstm(case, state_order=("h", "c"))


def _explain_lstm(case: NodeCase, label: str) -> str:
    return (f"ConvLSTM gate order / forget bias: TF's BasicConvLSTMCell splits the 4F channels "
            f"of LSTM_conv as i, j, f, o, adds forget bias {FORGET_BIAS:g} to f inside the graph "
            f"(it is not in the checkpoint) and packs the state as [c, h]. Fed the reference's own "
            f"inputs, the model's cell computes what TF's would with {label}.")


def _layout_variants(case: NodeCase) -> Variants:
    name = case.node.name
    module = getattr(case.base, name)
    for label, transform in WEIGHT_TRANSFORMS:
        mangled = copy.deepcopy(module)
        changed = False
        with torch.no_grad():
            for pname, p in mangled.named_parameters():
                if p.dim() == 4:
                    q = transform(p).clone()
                    if q.shape == p.shape and not torch.equal(q, p):
                        p.copy_(q)
                        changed = True
        if changed:
            with swapped(case.base, name, mangled):
                yield label, case.base.apply_node(case.node, case.inputs, case.size)


def _explain_layout(case: NodeCase, label: str) -> str:
    return (f"weight layout: the model's {case.node.name} equals the reference's weights with "
            f"the {label}. A TF kernel [kh, kw, in, out] (conv2d_transpose: [kh, kw, out, in]) "
            f"becomes PyTorch's by permute(3, 2, 0, 1): no flip, no reshape.")


@dataclass(frozen=True)
class Mistake:
    cause: str
    ops: frozenset
    variants: Callable[[NodeCase], Variants]
    explain: Callable[[NodeCase, str], str]


MISTAKES: Tuple[Mistake, ...] = (
    Mistake("stride2-padding", frozenset({"conv", "conv_linear", "deconv"}),
            _padding_variants, _explain_padding),
    Mistake("resize-sampling", frozenset({"resize", "resize_state"}),
            _resize_variants, _explain_resize),
    Mistake("lstm-gates", frozenset({"lstm"}), _lstm_variants, _explain_lstm),
    Mistake("weight-layout", frozenset({"conv", "conv_linear", "deconv", "resblock", "lstm"}),
            _layout_variants, _explain_layout),
)


# -- weights and channels ------------------------------------------------------------------
@dataclass
class WeightDifference:
    param: str  # PyTorch name, e.g. dec2_2.conv1.weight
    tf_name: str
    differing: int
    numel: int
    max_abs_diff: float
    at: Tuple[int, ...]  # index of the largest difference
    layout: str = ""  # e.g. "output channels permuted [1, 0, 2, 3]"

    def describe(self) -> str:
        what = self.layout or (f"{self.differing} of {self.numel} elements differ, max |diff| "
                               f"{self.max_abs_diff:.3g} at {list(self.at)}")
        return f"{self.param} ({self.tf_name}): {what}"


def _axis_permutation(ours: torch.Tensor, ref: torch.Tensor, axis: int) -> Optional[List[int]]:
    """p with ours.select(axis, i) == ref.select(axis, p[i]) for all i, if one exists."""
    if ours.dim() == 0 or ours.shape != ref.shape:
        return None
    a = ours.movedim(axis, 0).reshape(ours.shape[axis], -1)
    b = ref.movedim(axis, 0).reshape(ref.shape[axis], -1)
    perm = []
    for row in a:
        hits = torch.nonzero((b == row).all(dim=1)).flatten().tolist()
        if not hits:
            return None
        perm.append(next((h for h in hits if h not in perm), hits[0]))
    return perm if sorted(perm) == list(range(len(perm))) else None


def _layout_of(ours: torch.Tensor, ref: torch.Tensor, transposed_conv: bool) -> str:
    for label, transform in WEIGHT_TRANSFORMS:
        q = transform(ref) if ref.dim() == 4 else ref
        if q.shape == ours.shape and not torch.equal(q, ref) and torch.equal(q, ours):
            return f"the reference's {label}"
    axes = ("input", "output") if transposed_conv else ("output", "input")
    for axis, what in ((0, f"{axes[0]} channels"), (1, f"{axes[1]} channels")):
        perm = _axis_permutation(ours, ref, axis) if ours.dim() > axis else None
        if perm is not None and perm != list(range(len(perm))):
            shown = perm if len(perm) <= 16 else perm[:16] + ["..."]
            return f"the reference's with {what} permuted {shown}"
    return ""


def weight_differences(ours: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
                       transposed: frozenset = frozenset()) -> List[WeightDifference]:
    """Parameters whose values are not the reference's (a converted model must be the
    checkpoint's weights exactly: conversion only permutes axes). ``transposed``: names of
    transposed-convolution kernels ([in, out, kh, kw])."""
    out = []
    for name, r in ref.items():
        o = ours.get(name)
        if o is None or o.shape != r.shape:
            found = None if o is None else tuple(o.shape)
            out.append(WeightDifference(name, torch_to_tf_name(name), r.numel(), r.numel(),
                                        float("inf"), (),
                                        f"shape {found}, reference {tuple(r.shape)}"))
            continue
        d = (o.float() - r.float()).abs()
        if within(float(d.max()) if d.numel() else 0.0, float(r.abs().max()) if r.numel() else 0.0,
                  TOLERANCES["exact"]):
            continue
        at = tuple(int(v) for v in np.unravel_index(int(torch.argmax(d)), d.shape))
        out.append(WeightDifference(name, torch_to_tf_name(name), int((d > 0).sum()), d.numel(),
                                    float(d.max()), at, _layout_of(o, r, name in transposed)))
    return out


def channel_permutation(ours: torch.Tensor, ref: torch.Tensor) -> Optional[List[int]]:
    """Match each output channel of ``ours`` to the reference channel it equals (within the
    'layer' tolerance); a permutation that is not the identity, or None."""
    if ours.shape != ref.shape or ours.dim() != 4 or ours.shape[1] < 2:
        return None
    scale = float(ref.abs().max())
    perm: List[int] = []
    for c in range(ours.shape[1]):
        dist = (ref - ours[:, c:c + 1]).abs().amax(dim=(0, 2, 3))
        ok = [int(i) for i in torch.argsort(dist).tolist()
              if within(float(dist[i]), scale, TOLERANCES["layer"])]
        if not ok:
            return None
        perm.append(next((i for i in ok if i not in perm), ok[0]))
    if sorted(perm) != list(range(len(perm))) or perm == list(range(len(perm))):
        return None
    return perm


def _node_params(node: Node) -> str:
    return {"lstm": "convLSTM."}.get(node.op, node.name + ".")


# -- reduced precision ---------------------------------------------------------------------
_PRECISION_WORDS = {
    "tf32": "TF32 (convolutions with a 10-bit significand, float32 accumulation)",
    "fp16": "fp16 autocast (convolutions in half precision, a 10-bit significand)",
    "bf16": "bf16 autocast (convolutions in bfloat16, a 7-bit significand)",
    "fp32": "IEEE float32",
}
#: Ops whose arithmetic reduced precision changes (the convolution-like layers).
_CONV_OPS = frozenset({"conv", "conv_linear", "resblock", "deconv", "lstm"})


def _apply(model: SRN, case: NodeCase, precision: str) -> torch.Tensor:
    """``model``'s ``case.node`` on the case's inputs, on the model's device and in
    ``precision``; the result as float32 on the CPU."""
    device = next(model.parameters()).device
    args = [a.to(device) for a in case.inputs]
    with numerics(device.type, precision):
        out = model.apply_node(case.node, args, case.size)
    return out.detach().float().cpu()


@dataclass
class PrecisionPattern:
    """The signature of reduced-precision arithmetic in a chained comparison: the error
    appears at the first convolution (everything before it exact) and stays of one size,
    that of the arithmetic's round-off, through every convolution after it."""

    median_rel: float
    low_rel: float  # 10th percentile of the convolution rows' relative errors
    high_rel: float  # 90th percentile
    first: str  # "layer at level L"
    kind: str  # "tf32/fp16" or "bf16"

    def describe(self) -> str:
        what = ("~1e-3, the round-off of a 10-bit significand: TF32 convolutions (cuDNN's "
                "fp32 default on Ampere and later GPUs) or fp16"
                if self.kind == "tf32/fp16" else
                "~1e-2, the round-off of bfloat16's 7-bit significand")
        return (f"a roughly uniform relative error from the first convolution on ({self.first}"
                f"): median {self.median_rel:.1e} of max |ref| over the convolution layers, 80% "
                f"of them between {self.low_rel:.1e} and {self.high_rel:.1e}; {what}")


def precision_pattern(rows) -> Optional[PrecisionPattern]:
    """The reduced-precision pattern in the rows of a chained comparison, or None.

    Recognised when (1) the first failing row is the first convolution-like layer of its
    level and every row before it passes (the input path is exact), (2) the convolution
    rows' median relative error lies between 1e-4 and 1e-1, and (3) 80% of them lie within
    a factor 10 of the median (uniform, not growing from one wrong layer). A porting error
    starts at one layer, is >= 1e-2, and is rarely uniform; float32 round-off is <= 1e-5."""
    first_fail = next((i for i, r in enumerate(rows) if not r.passed), None)
    if first_fail is None:
        return None
    level = rows[first_fail].level
    first_conv = next((i for i, r in enumerate(rows) if r.level == level and r.op in _CONV_OPS),
                      None)
    if first_conv != first_fail:
        return None
    rels = sorted(r.max_rel_err for r in rows[first_fail:] if r.op in _CONV_OPS
                  and np.isfinite(r.max_rel_err))
    if len(rels) < 3:
        return None
    med = float(np.median(rels))
    if not 1e-4 <= med <= 1e-1:
        return None
    near = sum(med / 10 <= v <= med * 10 for v in rels) / len(rels)
    if near < 0.8:
        return None
    r0 = rows[first_fail]
    return PrecisionPattern(med, float(np.percentile(rels, 10)), float(np.percentile(rels, 90)),
                            f"{r0.layer} at level {r0.level}",
                            "tf32/fp16" if med < 5e-3 else "bf16")


def precision_diagnosis(found: Diagnosis, pattern: PrecisionPattern,
                        precision: str) -> Diagnosis:
    """The diagnosis when the rows show :func:`precision_pattern`: the run asked for
    reduced precision (the pattern confirms it) or did not (the arithmetic was reduced
    anyway: TF32 left on, a half-precision model), unless a layer test found a cause."""
    if found.cause not in ("round-off", "layer-wrong", "reference-mismatch"):
        return found
    evidence = found.evidence + [f"error pattern: {pattern.describe()}"]
    if precision != "fp32":
        summary = (f"reduced precision, not a porting error: the run computed in "
                   f"{_PRECISION_WORDS[precision]}, and the errors have its pattern, "
                   f"{pattern.describe()}. Check parity with --precision fp32.")
    else:
        summary = (f"the error pattern of reduced-precision arithmetic, though fp32 was asked "
                   f"for: {pattern.describe()}. Something computed in TF32 or half precision "
                   f"(TF32 convolutions left on: torch.backends.cudnn.conv.fp32_precision = "
                   f"'ieee' switches them off; a model or input cast to fp16/bf16; an "
                   f"autocast context around the call).")
    return Diagnosis("reduced-precision", summary, evidence=evidence)


# -- the decision -------------------------------------------------------------------------
def diagnose(case: NodeCase, chained_rel: Optional[float],
             weight_diffs: Optional[Sequence[WeightDifference]],
             unverified_levels: Sequence[int] = ()) -> Diagnosis:
    """Name the cause of the divergence at ``case``. ``chained_rel``: the node's relative
    error in the chained run (None when comparing isolated); ``weight_diffs``: differences
    of the whole model's weights from the reference checkpoint (None if unknown);
    ``unverified_levels``: earlier levels the chained run went through without comparing."""
    node, ref = case.node, case.reference
    iso_key = "exact" if node.op in EXACT_OPS else "layer"
    emulated = case.exact is not None and case.exact is not case.model
    with torch.no_grad():
        ours = _apply(case.model, case, "fp32" if emulated else case.precision)
        correct = case.base.apply_node(node, case.inputs, case.size)
    iso_rel, correct_rel = rel_error(ours, ref), rel_error(correct, ref)
    evidence = [f"isolated (fed the reference's own inputs), the model's {node.name} is off by "
                f"{iso_rel:.2e} of max |ref| (tolerance '{iso_key}': "
                f"{TOLERANCES[iso_key].rel:g})",
                f"srn-port's TF-exact {node.name} with the reference's weights is off by "
                f"{correct_rel:.2e}"]
    if case.precision != "fp32" and not matches(ours, ref, iso_key):
        with torch.no_grad():
            exact = _apply(case.exact if case.exact is not None else case.model, case, "fp32")
        exact_rel = rel_error(exact, ref)
        if matches(exact, ref, iso_key):
            evidence.append(f"the model's own {node.name} in IEEE float32 (TF32 off), fed the "
                            f"same inputs, is off by {exact_rel:.2e}")
            return Diagnosis("reduced-precision", (
                f"reduced precision, not a porting error: the run computed in "
                f"{_PRECISION_WORDS[case.precision]}. Fed the reference's own inputs, "
                f"{node.name} is off by {iso_rel:.1e} of max |ref| in {case.precision} but "
                f"{exact_rel:.1e} in IEEE float32, so the layer is right and the difference "
                f"is its arithmetic's round-off (unit round-off {UNIT_ROUNDOFF[case.precision]:.1e})"
                f". Check parity with --precision fp32 (the default; TF32 off); use "
                f"{case.precision} where an error of this size is acceptable."),
                evidence=evidence)
    node_diffs = [d for d in (weight_diffs or ()) if d.param.startswith(_node_params(node))]
    if matches(ours, ref, iso_key) and unverified_levels:
        shown = ", ".join(str(lv) for lv in unverified_levels)
        return Diagnosis("upstream", (
            f"the error comes from upstream: {node.name} is right when fed the reference's own "
            f"inputs (isolated error {iso_rel:.2e} of max |ref|), so its inputs already differ; "
            f"they come from level(s) {shown}, which were run but not compared. Run without "
            f"--level to find where the divergence starts."), evidence=evidence)
    if matches(ours, ref, iso_key):
        chained = "" if chained_rel is None else f" ({chained_rel:.2e})"
        return Diagnosis("round-off", (
            f"round-off accumulation: {node.name} is right when fed the reference's own inputs "
            f"(isolated error {iso_rel:.2e} of max |ref|, within '{iso_key}'), so no single layer "
            f"is wrong; the chained error{chained} grew from float32 round-off in the "
            f"layers before it. Check the per-layer errors with --isolate."), evidence=evidence)
    if not matches(correct, ref, iso_key) and not node_diffs:
        known = "" if weight_diffs is not None else " (the reference checkpoint is not available)"
        return Diagnosis("reference-mismatch", (
            f"even srn-port's TF-exact {node.name}, fed the reference's own inputs, does not "
            f"reproduce the reference (off by {correct_rel:.2e}){known}: the reference was not "
            f"computed from these weights, or by a TF that behaves differently. Regenerate the "
            f"golden, or compare with --tf CHECKPOINT."), evidence=evidence)
    with torch.no_grad():
        for mistake in MISTAKES:
            if node.op not in mistake.ops:
                continue
            for label, out in mistake.variants(case):
                if matches(out, ours, "layer") and not matches(out, ref, iso_key):
                    evidence.append(f"recomputed with {label}, {node.name} reproduces the model's "
                                    f"output (off by {rel_error(out, ours):.2e} of it)")
                    return Diagnosis(mistake.cause, mistake.explain(case, label),
                                     evidence=evidence)
        perm = (channel_permutation(ours, ref)
                if node.op in ("conv", "conv_linear", "deconv") else None)
    if perm is not None:
        shown = perm if len(perm) <= 16 else perm[:16] + ["..."]
        return Diagnosis("weight-layout", (
            f"channel permutation (weight layout): every output channel of the model's "
            f"{node.name} equals another channel of the reference (model channel c = reference "
            f"channel {shown}[c]): its weights' output channels are permuted, e.g. the kernel "
            f"converted with the wrong axis order."), evidence=evidence)
    if node_diffs and all(d.layout for d in node_diffs):
        listed = "; ".join(d.describe() for d in node_diffs[:6])
        return Diagnosis("weight-layout", (
            f"weight layout: the weights of {node.name} are the reference checkpoint's, "
            f"rearranged: {listed}. A TF kernel [kh, kw, in, out] (conv2d_transpose: "
            f"[kh, kw, out, in]) becomes PyTorch's by permute(3, 2, 0, 1)."), evidence=evidence)
    if node_diffs:
        listed = "; ".join(d.describe() for d in node_diffs[:6])
        return Diagnosis("weights-differ", (
            f"the weights of {node.name} differ from the reference checkpoint: {listed}. "
            f"The layer's code is fine (with the reference's weights it matches to "
            f"{correct_rel:.1e}); convert the checkpoint again (srn-port convert)."),
            evidence=evidence)
    weights = ("are the reference's" if weight_diffs is not None
               else "could not be checked (no reference checkpoint)")
    return Diagnosis("layer-wrong", (
        f"this layer itself is wrong: fed the reference's own inputs, the model's {node.name} is "
        f"off by {iso_rel:.2e} of max |ref| (round-off would be within '{iso_key}'), its weights "
        f"{weights}, and no known porting mistake reproduces it."), evidence=evidence)


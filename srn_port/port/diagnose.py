"""Why a tap diverges, tested rather than guessed: each known porting mistake is undone in
turn, and the one whose fix makes the tap match TF is named, with the module at fault.

The candidates are the modules that ran between the last tap that matched and the
divergent one (in execution order). For each, :func:`fixes` proposes what TF would have
computed instead, from the module's kind: TF 'SAME' padding instead of PyTorch's symmetric
``padding=k // 2``, average pooling that does not count the padding, slim's batch-norm
epsilon, NHWC flatten order, each TF resize convention, a ReLU that is missing, or a
kernel whose axes were mangled in conversion. The fixed module is swapped in, the model
re-run up to the tap (a forward hook stops it there), and the fix is named when the tap
then matches TF within its tolerance. At the first tap the input itself is also tried in
BGR order and in the other usual value ranges. What no fix explains is reported as changed
weights (against the conversion) or as a layer that computes something else.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..core.tolerances import TOLERANCES
from ..nn.ops.conv import Conv2dSame
from ..nn.ops.padding import same_padding
from . import layers as L
from .taps import Diagnosis, Tap, matches, rel_error, run_to
from .mapping import Conversion

#: The causes a diagnosis can name, and what each means.
CAUSES = {
    "padding": "PyTorch's symmetric padding where TF 'SAME' puts the odd pixel after "
               "(a one-pixel shift)",
    "avgpool-count": "average pooling that counts the zero padding (TF does not)",
    "bn-epsilon": "a batch-norm epsilon other than the TF graph's",
    "bn-training": "batch norm with the batch's statistics in TF (is_training=True), the "
                   "moving ones in the port",
    "flatten-order": "features flattened in NCHW order before a fully-connected layer "
                     "(TF flattens NHWC)",
    "resize": "the resize's sampling convention (TF1 legacy, align_corners, half-pixel)",
    "missing-activation": "an activation (ReLU) that TF applies and the port does not",
    "weight-layout": "a kernel converted with the wrong axis order, a flip or a reshape",
    "channel-order": "the input's channels in the other order (RGB/BGR)",
    "value-range": "the input in another value range ([0, 1], [0, 255], [-1, 1])",
    "weights-differ": "the weights are not the checkpoint's",
    "layer-wrong": "a layer computes something else, and no known mistake explains it",
}

#: Ways a converter mangles a correct PyTorch kernel ``w`` ([out, in, kh, kw], or [in, out,
#: kh, kw] for a transposed convolution); undoing one is a candidate fix.
WEIGHT_TRANSFORMS: Tuple[Tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (
    ("kernel transposed (kh and kw swapped)", lambda w: w.transpose(-1, -2)),
    ("kernel flipped spatially", lambda w: w.flip(-1, -2)),
    ("TF kernel reshaped instead of permuted",
     lambda w: w.permute(2, 3, 1, 0).contiguous().reshape(w.shape)),
    ("input and output channel axes swapped", lambda w: w.transpose(0, 1)),
)

Fix = Tuple[str, str, nn.Module]  # (cause, words, replacement module)


def _same_words(path: str, what: str, kernel, stride, h: int, w: int, pads) -> str:
    th = same_padding(h, kernel[0], stride[0])
    tw = same_padding(w, kernel[1], stride[1])
    return (f"{path} ({what}, {kernel[0]}x{kernel[1]} stride {stride[0]}) pads "
            f"{pads[0]}/{pads[0]} rows and {pads[1]}/{pads[1]} columns, symmetrically; TF 'SAME' "
            f"pads rows {th[0]}/{th[1]} and columns {tw[0]}/{tw[1]} on this {h}x{w} input "
            f"(the odd pixel after), so every output sample is taken one pixel off. Use "
            f"srn_port.port.{'Conv2d' if 'conv' in what else what.split()[0]}(..., "
            f"padding='SAME'), which pads as TF does.")


def _pool_kind(module) -> str:
    return "MaxPool2d" if isinstance(module, (nn.MaxPool2d, L.MaxPool2d)) else "AvgPool2d"


def fixes(path: str, module: nn.Module, in_shape: Optional[Tuple[int, ...]]) -> Iterator[Fix]:
    """What TF would compute instead of ``module`` (input shape ``in_shape``, if known)."""
    h, w = (in_shape[-2], in_shape[-1]) if in_shape and len(in_shape) == 4 else (0, 0)
    # 'SAME' padding
    if isinstance(module, Conv2dSame) and module.naive_padding:
        fixed = copy.deepcopy(module)
        fixed.naive_padding = False
        pads = L.symmetric_padding(module.kernel_size, module.dilation)
        yield "padding", _same_words(path, "conv2d", module.kernel_size, module.stride, h, w,
                                     pads), fixed
    elif type(module) is nn.Conv2d and module.padding != (0, 0) and module.padding != "valid":
        fixed = L.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                         module.stride, "SAME", module.dilation, module.groups,
                         module.bias is not None)
        fixed.load_state_dict(module.state_dict())
        pads = module.padding if isinstance(module.padding, tuple) else (0, 0)
        yield "padding", _same_words(path, "conv2d", module.kernel_size, module.stride, h, w,
                                     pads), fixed
    if isinstance(module, L._Pool2d) and module.naive_padding:
        fixed = copy.deepcopy(module)
        fixed.naive_padding = False
        pads = L.symmetric_padding(module.kernel_size)
        yield "padding", _same_words(path, _pool_kind(module), module.kernel_size,
                                     module.stride, h, w, pads), fixed
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = L._pair(module.kernel_size)
        s = L._pair(module.stride if module.stride is not None else module.kernel_size)
        p = L._pair(module.padding)
        tf_cls = L.MaxPool2d if isinstance(module, nn.MaxPool2d) else L.AvgPool2d
        if p != (0, 0):
            fixed = tf_cls(k, s, "SAME")
            pad_ok = (h and (same_padding(h, k[0], s[0]) == (p[0], p[0]))
                      and same_padding(w, k[1], s[1]) == (p[1], p[1]))
            if isinstance(module, nn.AvgPool2d) and module.count_include_pad and pad_ok:
                yield "avgpool-count", _count_words(path, k, h, w), fixed
            else:
                yield "padding", _same_words(path, _pool_kind(module), k, s, h, w, p), fixed
    if isinstance(module, L.AvgPool2d) and module.count_include_pad:
        fixed = copy.deepcopy(module)
        fixed.count_include_pad = False
        yield "avgpool-count", _count_words(path, module.kernel_size, h, w), fixed
    # another padding mode than the TF op's: 'SAME', 'VALID', or explicit then 'VALID'
    yield from _mode_fixes(path, module, h, w)
    # batch norm epsilon
    if isinstance(module, (L.BatchNorm, nn.modules.batchnorm._BatchNorm)):
        for eps in (L.SLIM_BN_EPSILON, 1e-5, 1e-3 if L.SLIM_BN_EPSILON != 1e-3 else 1e-4):
            if abs(eps - module.eps) > 1e-12 * max(eps, module.eps):
                fixed = copy.deepcopy(module)
                fixed.eps = eps
                yield "bn-epsilon", (
                    f"{path} (batch norm) uses epsilon {module.eps:g}; the TF graph's is {eps:g} "
                    f"(slim.batch_norm's default is 0.001, PyTorch's 1e-5; ResNet's arg_scope "
                    f"sets 1e-5). Build it with eps={eps:g}."), fixed
        if not module.training:
            fixed = copy.deepcopy(module).train()
            yield "bn-training", (
                f"{path} (batch norm) normalises with the moving statistics, and the TF graph "
                f"with the batch's own: it was built with is_training=True (slim.batch_norm's "
                f"default; tf-slim's nets take is_training and default to True). Build the TF "
                f"graph with is_training=False for inference."), fixed
    # flatten order
    if isinstance(module, L.FullyConnected) and module.flatten_order != "NHWC":
        fixed = copy.deepcopy(module)
        fixed.flatten_order = "NHWC"
        yield "flatten-order", (
            f"{path} (fully connected) flattens its {tuple(in_shape or ())} input in NCHW order; "
            f"TF flattens NHWC features, (H, W, C) with C fastest, so the TF weights [H*W*C, out] "
            f"meet the features in another order. Flatten x.permute(0, 2, 3, 1) "
            f"(srn_port.port.FullyConnected does)."), fixed
    # resize conventions
    if isinstance(module, (L.Resize, nn.Upsample)):
        size = getattr(module, "size", None)
        for method, ac, hp, words in (
                ("bilinear", False, False, "TF1's legacy bilinear sampling (src = dst * in / out)"),
                ("bilinear", True, False, "TF1 bilinear with align_corners=True"),
                ("bilinear", False, True, "TF2's tf.image.resize (half-pixel centres)"),
                ("nearest", False, False, "TF1 nearest neighbour"),
                ("nearest", False, True, "TF2 nearest neighbour (half-pixel centres)")):
            current = (getattr(module, "method", None), getattr(module, "align_corners", None),
                       getattr(module, "half_pixel_centers", None))
            if size is None or current == (method, ac, hp):
                continue
            size2 = (size, size) if isinstance(size, int) else size
            yield "resize", (
                f"{path} (resize to {tuple(size2)}) samples another grid than TF: the TF graph "
                f"resizes with {words}. Use srn_port.port.Resize(size, method={method!r}, "
                f"align_corners={ac}, half_pixel_centers={hp}), bit-exact with TF's kernel."), \
                L.Resize(size2, method, ac, hp)
    # a missing activation
    if isinstance(module, (L.SlimConv2d, L.FullyConnected)) and module.activation is None:
        fixed = copy.deepcopy(module)
        fixed.activation = nn.ReLU()
        yield "missing-activation", (
            f"{path} has no activation, and TF applies a ReLU there (slim.conv2d and "
            f"slim.fully_connected default to activation_fn=tf.nn.relu)."), fixed
    # mangled kernels
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4:
        for label, transform in WEIGHT_TRANSFORMS:
            q = transform(weight.detach())
            if q.shape == weight.shape and not torch.equal(q, weight):
                fixed = copy.deepcopy(module)
                with torch.no_grad():
                    fixed.weight.copy_(q)
                yield "weight-layout", (
                    f"{path}'s kernel is the checkpoint's with the {label}. A TF kernel [kh, kw, "
                    f"in, out] (conv2d_transpose: [kh, kw, out, in]) becomes PyTorch's by "
                    f"permute(3, 2, 0, 1): no flip, no reshape (srn_port.port.convert does "
                    f"this)."), fixed


def _pads_text(pads) -> str:
    (t, b), (l, r) = pads
    return f"rows {t}/{b}, columns {l}/{r}"


def _mode_text(mode) -> str:
    if isinstance(mode, str):
        return {"SAME": "TF 'SAME' (the odd pixel after)", "VALID": "'VALID' (no padding)"}[mode]
    (t, b), (l, r) = mode
    return (f"explicit zero padding (rows {t}/{b}, columns {l}/{r}) then 'VALID', as tf-slim's "
            f"resnet_utils.conv2d_same does for strides > 1")


def _mode_fixes(path: str, module: nn.Module, h: int, w: int) -> Iterator[Fix]:
    """The port layer with each other TF padding mode, where it is not already emulating a
    PyTorch padding (those have their own fixes above)."""
    if isinstance(module, L.Conv2d) and not module.naive_padding:
        attr, kind, dil = "tf_padding_mode", "conv2d", module.dilation
    elif isinstance(module, L._Pool2d) and not module.naive_padding \
            and not getattr(module, "count_include_pad", False):
        attr, kind, dil = "padding", _pool_kind(module), (1, 1)
    else:
        return
    k, s = module.kernel_size, module.stride
    mode = getattr(module, attr)
    explicit = tuple((((k[i] - 1) * dil[i]) // 2, (k[i] - 1) * dil[i] - ((k[i] - 1) * dil[i]) // 2)
                     for i in (0, 1))
    alternatives = ["SAME", "VALID"] + ([explicit] if attr == "tf_padding_mode" else [])
    for alt in alternatives:
        if alt == mode:
            continue
        fixed = copy.deepcopy(module)
        setattr(fixed, attr, alt)
        ours, theirs = (L.window_padding(m, h, w, k, s, dil) for m in (mode, alt))
        yield "padding", (
            f"{path} ({kind}, {k[0]}x{k[1]} stride {s[0]}) pads with {_mode_text(mode)}, and TF's "
            f"op with {_mode_text(alt)}: on this {h}x{w} input {_pads_text(ours)} against "
            f"{_pads_text(theirs)}, so the output samples are taken off by a pixel (or the "
            f"sizes differ). Build it with padding={alt!r}."), fixed


def _count_words(path: str, kernel, h: int, w: int) -> str:
    return (f"{path} (average pooling, {kernel[0]}x{kernel[1]}, 'SAME') divides every window by "
            f"{kernel[0] * kernel[1]}, padding included (PyTorch's count_include_pad=True); TF's "
            f"average pooling divides by the number of real pixels, so on this {h}x{w} input "
            f"the border samples are too small. Use srn_port.port.AvgPool2d(..., padding='SAME') "
            f"or nn.AvgPool2d(count_include_pad=False).")


@contextmanager
def swapped(model: nn.Module, path: str, module: nn.Module):
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    setattr(parent, name, module)
    try:
        yield
    finally:
        setattr(parent, name, old)


def _input_shapes(model: nn.Module, x: torch.Tensor, paths: Sequence[str]) -> dict:
    shapes, handles = {}, []
    for path in paths:
        def pre(_m, args, path=path):
            if path not in shapes and args and isinstance(args[0], torch.Tensor):
                shapes[path] = tuple(args[0].shape)
        handles.append(model.get_submodule(path).register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _attempt(model: nn.Module, x: torch.Tensor, path: str, feed,
             call: int = 0) -> Optional[torch.Tensor]:
    """:func:`run_to` under a tried fix; a fix the model cannot run with (another size
    reaching a concatenation, say) is not the one."""
    try:
        return run_to(model, x, path, feed, call)
    except (RuntimeError, ValueError, IndexError):
        return None


def diagnose(model: nn.Module, x: torch.Tensor, tap: Tap, ref: torch.Tensor, key: str,
             candidates: Sequence[str], first_tap: bool = False,
             conversion: Optional[Conversion] = None, feed=None) -> Diagnosis:
    """Name the cause of ``tap``'s divergence from ``ref`` (NCHW) under ``TOLERANCES[key]``.
    ``candidates``: module paths called after the last matching tap, in order; ``feed``:
    the TF activations fed in place of the taps' outputs in an isolated comparison."""
    ours = run_to(model, x, tap.module, feed, tap.call)
    evidence = [f"{tap.name} ({tap.module or 'the model'}) is off by "
                f"{rel_error(ours, ref):.2e} of max |ref| (tolerance '{key}': "
                f"{TOLERANCES[key].rel:g}); the modules that ran since the last matching tap: "
                f"{', '.join(candidates[:12]) or 'none'}"
                f"{' ...' if len(candidates) > 12 else ''}"]
    if first_tap:
        for cause, label, xv in (
                ("channel-order", "with its channels reversed (RGB <-> BGR)", x.flip(1)),
                ("value-range", "scaled from [0, 1] to [0, 255]", x * 255),
                ("value-range", "scaled from [0, 255] to [0, 1]", x / 255),
                ("value-range", "mapped from [0, 1] to [-1, 1]", x * 2 - 1),
                ("value-range", "mapped from [-1, 1] to [0, 1]", (x + 1) / 2)):
            if matches(_attempt(model, xv, tap.module, feed, tap.call), ref, key):
                evidence.append(f"fed the input {label}, {tap.name} matches TF")
                return Diagnosis(cause, (
                    f"the input is not what TF's graph sees: fed the input {label}, the port "
                    f"matches TF at {tap.name}. The port (or its preprocessing) reads the "
                    f"channels or the value range differently from the TF graph; make both "
                    f"take the same input."), "", evidence)
    if ours is not None and ours.shape == ref.shape and matches(torch.relu(ours), ref, key):
        evidence.append(f"relu({tap.name}) matches TF")
        return Diagnosis("missing-activation", (
            f"a missing activation: ReLU applied to the port's {tap.name} matches TF, so the "
            f"port skips the ReLU that TF applies at the end of {tap.module or 'the model'}."),
            tap.module, evidence)
    shapes = _input_shapes(model, x, candidates)
    with torch.no_grad():
        for path in candidates:
            module = model.get_submodule(path)
            for cause, words, fixed in fixes(path, module, shapes.get(path)):
                with swapped(model, path, fixed):
                    out = _attempt(model, x, tap.module, feed, tap.call)
                if matches(out, ref, key):
                    evidence.append(f"with {path} fixed ({CAUSES[cause]}), {tap.name} matches TF "
                                    f"(off by {rel_error(out, ref):.2e})")
                    return Diagnosis(cause, words, path, evidence)
    if conversion is not None:
        changed = []
        state = model.state_dict()
        for path in candidates:
            for key_, value in conversion.state_dict.items():
                if key_.startswith(path + ".") and key_ in state \
                        and not torch.equal(state[key_].cpu(), value):
                    tf_name = conversion.tf_name(key_) or "not in the checkpoint"
                    changed.append(f"{key_} ({tf_name})")
        if changed:
            return Diagnosis("weights-differ", (
                f"the weights of {', '.join(changed[:6])} are not the checkpoint's: the modules "
                f"are loaded with other values than the conversion produced. Load the "
                f"conversion's state_dict (srn_port.port.load)."), changed[0].split(" ")[0],
                evidence)
    return Diagnosis("layer-wrong", (
        f"{tap.name} diverges and no known porting mistake explains it: one of the modules "
        f"that ran since the last matching tap ({', '.join(candidates[:12]) or 'none'}) "
        f"computes something else than TF. Tap finer (more end_points or graph tensors) to "
        f"narrow it down."), "", evidence)

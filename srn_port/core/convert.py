"""TF checkpoint -> SRN weights: detect the variant, map strictly, verify.

The pipeline: read checkpoint (:mod:`srn_port.core.checkpoint`, no TensorFlow) -> map every
variable by SRN's rules onto the model's own parameter list, strictly (the porting toolkit's
ledger, :mod:`srn_port.core.mapping`, with :func:`srn_port.core.naming.rules` and
:func:`~srn_port.core.naming.srn_target`) -> permute kernels, as numpy arrays (no torch).
Writing a file: :mod:`srn_port.api.convert`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import __version__
from .checkpoint import CheckpointReader
from .network import VARIANTS, SRNConfig, param_shapes
from .errors import ConversionError
from .mapping import plan, read
from .naming import (detect_config, rules, srn_target, tf_to_torch_tensor,
                     torch_to_tf_name)

_STEP_VARS = ("Variable", "global_step")
_FLOATS = ("DT_FLOAT", "DT_HALF", "DT_BFLOAT16", "DT_DOUBLE")
_LISTING_LIMIT = 40


@dataclass
class Conversion:
    """A converted checkpoint: ``arrays`` (numpy, PyTorch layout) and where they came from."""

    config: SRNConfig
    arrays: Dict[str, np.ndarray]
    source: str
    step: Optional[int]
    mapped: Dict[str, str]
    dropped: Dict[str, str]
    ema: bool = False
    notes: List[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {"variant": self.config.variant, "width": self.config.width,
                "source": self.source, "step": self.step, "ema": self.ema,
                "srn_port_version": __version__, "variables_mapped": len(self.mapped),
                "variables_dropped": len(self.dropped)}


def expected_shapes(config: SRNConfig) -> Dict[str, Tuple[int, ...]]:
    """Parameter name -> shape of the PyTorch model for ``config``, in model order."""
    return param_shapes(config)


def _listing(items: List[str]) -> str:
    shown = items[:_LISTING_LIMIT]
    more = f"\n  ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "\n".join(f"  {s}" for s in shown) + more


def _step(reader: CheckpointReader, names) -> Optional[int]:
    for name in _STEP_VARS:
        if name in names:
            value = reader.get_tensor(name)
            if value.shape == () and np.issubdtype(value.dtype, np.integer):
                return int(value)
    m = re.search(r"-(\d+)$", reader.prefix.name)
    return int(m.group(1)) if m else None


def convert_checkpoint(path, step: Optional[int] = None, variant: Optional[str] = None,
                       ema: bool = False) -> Conversion:
    """Read a TF checkpoint and return the SRN weights, or raise ConversionError listing
    every problem (unknown variables, missing weights, wrong shapes, variant mismatch)."""
    with CheckpointReader(path, step=step) as reader:
        names = reader.keys()
        infos = {n: reader.info(n) for n in names}
        shapes = {n: tuple(i.shape) for n, i in infos.items()}
        where = f"checkpoint '{reader.prefix}'"
        detected = detect_config(shapes)
        if variant is not None and variant != detected.variant:
            if variant not in VARIANTS:
                raise ConversionError(f"Unknown variant '{variant}'; expected one of "
                                      f"{', '.join(VARIANTS)}.")
            raise ConversionError(
                f"variant '{variant}' was requested, but {where} is an SRN '{detected.variant}' "
                f"model (enc1_1/weights has {shapes['g_net/enc1_1/weights'][2]} input channels"
                f"{', and it has a ConvLSTM' if detected.use_lstm else ', and no ConvLSTM'}). "
                f"Leave the variant unset (no --variant) to use the detected one, or point to a "
                f"{variant} checkpoint.")
        config = detected
        target = srn_target(config)
        expected = target.params
        ledger = plan(names, shapes, lambda n: infos[n].tf_dtype in _FLOATS,
                      rules(names, ema), target)
        # a variable routed to a module SRN lacks is a weight SRN does not have when it is a
        # weights/biases leaf; anything else is not an SRN weight at all
        strays = ledger.no_module + ledger.no_leaf
        weights = {n: f"{path}.{'weight' if leaf == 'weights' else 'bias'}"
                   for n, path, leaf in strays if leaf in ("weights", "biases") and path}
        unknown = sorted(ledger.unknown + [n for n, _, _ in strays if n not in weights])
        problems: List[str] = []
        if unknown:
            problems.append("variables that are neither SRN weights nor dropped by a rule "
                            "(optimizer slot, beta power, global step, EMA shadow):\n"
                            + _listing([f"{n} {list(shapes[n])}" for n in unknown]))
        if weights:
            problems.append("weights under g_net/ that SRN does not have:\n"
                            + _listing([f"{tf} -> {pt}" for tf, pt in sorted(weights.items())]))
        if ledger.twice:
            problems.append("weights filled by two variables:\n" + _listing(
                [f"{key}: {first} and {second}" for key, first, second in ledger.twice]))
        if ledger.missing:
            problems.append(f"SRN {config.variant} (width {config.width}) weights missing from "
                            f"the checkpoint:\n"
                            + _listing([f"{torch_to_tf_name(k)} (for {k})"
                                        for k in ledger.missing]))
        wrong = []
        for tf_name, pt in ledger.wrong_shape:
            want = expected[pt]
            want_tf = tuple(want[i] for i in (2, 3, 1, 0)) if len(want) == 4 else want
            wrong.append(f"{tf_name}: shape {list(shapes[tf_name])}, expected {list(want_tf)}")
        if wrong:
            problems.append("weights with the wrong shape:\n" + _listing(wrong))
        if ledger.not_float:
            problems.append("weights that are not floating point:\n"
                            + _listing([f"{n}: {infos[n].tf_dtype}" for n in ledger.not_float]))
        if problems:
            raise ConversionError(
                f"Cannot convert {where} to SRN {config.variant} (width {config.width}), "
                f"detected from its variables. Found " + ";\n".join(problems)
                + "\nNothing was written. If this is an SRN checkpoint with extra variables, "
                  "report the names above; if it is another network, srn-port cannot convert it.")
        # every stored tensor's checksum is verified, the dropped ones (optimizer slots,
        # beta powers, step) too: a damaged checkpoint is reported, not half-trusted
        arrays, not_finite = read(ledger, target, reader.get_tensor)
        if not_finite:
            raise ConversionError(
                f"Cannot convert {where}: weights hold NaN or infinite values, so the model "
                f"would output garbage (typically an all-black image): " + _listing(
                    [f"{n} ({bad:,} of {size:,} values)" for n, bad, size in not_finite])
                + "\n"
                f"The training run diverged before this checkpoint was saved, or the file is "
                f"damaged; convert an earlier checkpoint of the run.")
        conv = Conversion(config=config, arrays=arrays, source=str(reader.prefix),
                          step=_step(reader, names), mapped=dict(ledger.mapped),
                          dropped=dict(ledger.dropped), ema=ema)
        non_f32 = sorted({infos[n].tf_dtype for n in ledger.mapped} - {"DT_FLOAT"})
        if non_f32:
            conv.notes.append(f"weights stored as {', '.join(non_f32)} were converted to float32")
        return conv



def read_adam_state(path, step: Optional[int] = None) -> dict:
    """The Adam state of a TF training checkpoint, for resuming the run: ``{"m": {param:
    array}, "v": {param: array}, "beta1_power": float, "beta2_power": float, "step": int}``
    with the moments (``/Adam``, ``/Adam_1``) in PyTorch layout under the parameter names,
    the inverse of :func:`srn_port.core.export.tf_variables`. A checkpoint without the
    slots of every weight (e.g. one exported for inference) is a ConversionError."""
    conv = convert_checkpoint(path, step=step)  # strict: names, shapes, checksums, finiteness
    with CheckpointReader(path, step=step) as reader:
        names = set(reader.keys())
        missing = [f"{tf}/{slot}" for tf in conv.mapped for slot in ("Adam", "Adam_1")
                   if f"{tf}/{slot}" not in names]
        missing += [n for n in ("beta1_power", "beta2_power") if n not in names]
        if missing:
            raise ConversionError(
                f"Checkpoint '{reader.prefix}' has no Adam state to resume from: "
                f"{len(missing)} of its slots are missing (e.g. {', '.join(missing[:3])}). "
                f"Resuming a TF run needs a checkpoint saved by its training Saver (weights, "
                f"/Adam and /Adam_1 slots, beta1_power, beta2_power); start from the weights "
                f"alone instead (no resume).")
        state: dict = {"m": {}, "v": {}}
        problems: List[str] = []
        floats = ("DT_FLOAT", "DT_HALF", "DT_BFLOAT16", "DT_DOUBLE")
        # from the index first (no data read): every slot a float tensor of its weight's shape
        for tf_name in conv.mapped:
            want = tuple(reader.info(tf_name).shape)
            for slot in ("Adam", "Adam_1"):
                info = reader.info(f"{tf_name}/{slot}")
                if info.tf_dtype not in floats:
                    problems.append(f"{tf_name}/{slot} is {info.tf_dtype}, not floating point")
                elif tuple(info.shape) != want:
                    problems.append(f"{tf_name}/{slot} has shape {list(info.shape)}, its weight "
                                    f"{list(want)}")
        for key in ("beta1_power", "beta2_power"):
            info = reader.info(key)
            if info.tf_dtype not in floats or tuple(info.shape) != ():
                problems.append(f"{key} is a {info.tf_dtype} of shape {list(info.shape)}, not a "
                                f"floating-point scalar")
        step_var = next((n for n in _STEP_VARS if n in names), None)
        if step_var is not None:
            info = reader.info(step_var)
            if info.tf_dtype not in ("DT_INT32", "DT_INT64") or tuple(info.shape) != ():
                problems.append(f"the global step '{step_var}' is a {info.tf_dtype} of shape "
                                f"{list(info.shape)}, not an integer scalar")
        if not problems:  # then the values: finite moments, v >= 0, powers in [0, 1), step >= 0
            for tf_name, param in conv.mapped.items():
                for key, slot in (("m", "Adam"), ("v", "Adam_1")):
                    value = np.ascontiguousarray(tf_to_torch_tensor(
                        reader.get_tensor(f"{tf_name}/{slot}")).astype(np.float32, copy=False))
                    nan = int(np.count_nonzero(np.isnan(value)))
                    inf = int(np.count_nonzero(np.isinf(value)))
                    neg = int(np.count_nonzero(value < 0)) if key == "v" else 0
                    bad = [f"{n:,} {what}" for n, what in ((nan, "NaN"), (inf, "infinite"),
                                                            (neg, "negative")) if n]
                    if bad:
                        problems.append(f"{tf_name}/{slot} holds {' and '.join(bad)} value(s) "
                                        f"of {value.size:,}")
                    state[key][param] = value
            for key in ("beta1_power", "beta2_power"):
                value = float(np.float32(reader.get_tensor(key)))
                if not (math.isfinite(value) and 0 <= value < 1):
                    problems.append(f"{key} is {value!r}, outside [0, 1)")
                state[key] = value
            if conv.step is not None and conv.step < 0:
                problems.append(f"the global step '{step_var}' is {conv.step}, negative")
        if problems:
            raise ConversionError(
                f"Checkpoint '{reader.prefix}' holds no usable Adam state to resume from: "
                f"{'; '.join(problems[:_LISTING_LIMIT // 4])}"
                f"{f' and {len(problems) - _LISTING_LIMIT // 4} more' if len(problems) > _LISTING_LIMIT // 4 else ''}. "
                f"Adam's slots are floating-point tensors of their weight's shape, finite, the "
                f"second (/Adam_1) never negative; beta1_power and beta2_power are scalars in "
                f"[0, 1) and the global step an integer >= 0. The checkpoint is damaged or not "
                f"from Adam; start from its weights alone instead (--init), which resets the "
                f"optimizer.")
    state["step"] = conv.step
    return state

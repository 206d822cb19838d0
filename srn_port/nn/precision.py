"""Numerical precision of a forward or a training step: exact float32, TF32, fp16, bf16.

* ``fp32``: IEEE float32 everywhere, also on CUDA, where PyTorch's cuDNN convolutions
  default to TF32 (10-bit mantissa, ~1e-3 relative error per convolution on Ampere and
  later): :func:`ieee_fp32` switches TF32 off for the duration. This is the precision in
  which srn-port equals TF (the tolerance table).
* ``tf32``: TF32 convolutions on CUDA; on the CPU, which has no TF32, *emulated* by rounding
  every convolution's input and weights to TF32's 10-bit mantissa and accumulating in
  float32 (:func:`emulate_rounding`), which reproduces its error pattern for diagnostics.
* ``fp16`` / ``bf16``: ``torch.autocast`` (convolutions in half precision, accumulation
  and the ops autocast keeps in float32 as PyTorch decides).

:class:`Autocast` wraps a module so that its forward runs under autocast from inside: the
form ``torch.export`` records (an autocast context around the call is not part of the
exported graph) and ``torch.compile`` traces.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Optional

import torch
import torch.nn as nn

#: Precisions a comparison or a run can ask for.
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
#: Unit round-off (half an ulp at 1) of each precision's significand: 2^-(mantissa bits + 1).
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "tf32": 2.0 ** -11, "fp16": 2.0 ** -11,
                 "bf16": 2.0 ** -8}
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def amp_dtype(precision: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` (None for fp32 and tf32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return AMP_DTYPES.get(precision)


def autocast_enabled(device_type: str) -> bool:
    """Whether ``torch.autocast`` is on for this device type now."""
    return torch.is_autocast_enabled(device_type)


@contextlib.contextmanager
def _cudnn_conv_precision(value: str) -> Iterator[None]:
    """cuDNN convolutions in 'ieee' float32 or 'tf32' for the duration (restored after)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = value
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:  # torch before the fp32_precision API
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = value == "tf32"
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def _cuda_matmul_precision(value: str) -> Iterator[None]:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        old = matmul.fp32_precision
        matmul.fp32_precision = value
        try:
            yield
        finally:
            matmul.fp32_precision = old
    else:
        old = matmul.allow_tf32
        matmul.allow_tf32 = value == "tf32"
        try:
            yield
        finally:
            matmul.allow_tf32 = old


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls (a no-op on the CPU's kernels)."""
    with _cudnn_conv_precision("ieee"), _cuda_matmul_precision("ieee"):
        yield


@contextlib.contextmanager
def tf32() -> Iterator[None]:
    with _cudnn_conv_precision("tf32"), _cuda_matmul_precision("tf32"):
        yield


@contextlib.contextmanager
def numerics(device_type: str, precision: str = "fp32") -> Iterator[None]:
    """The arithmetic of ``precision`` on ``device_type`` for the duration: fp32 with TF32
    off, TF32 on (CUDA), or autocast to fp16/bf16 (with TF32 off for what stays float32)."""
    dtype = amp_dtype(precision)
    with contextlib.ExitStack() as stack:
        stack.enter_context(tf32() if precision == "tf32" else ieee_fp32())
        if dtype is not None:
            stack.enter_context(torch.autocast(device_type, dtype=dtype))
        yield


class Autocast(nn.Module):
    """``module`` with its forward under ``torch.autocast(device_type, dtype)``, entered
    inside the call: exported (``torch.export``) and compiled graphs keep the casts."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, x: torch.Tensor):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(x)


# -- emulation of reduced precision (diagnostics and tests on machines without it) -------

def round_mantissa(t: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 ``t`` rounded (to nearest, ties to even) to ``bits`` explicit mantissa bits:
    10 is TF32's and fp16's significand (fp16's narrower range aside), 7 bfloat16's."""
    if t.dtype != torch.float32:
        raise TypeError(f"round_mantissa takes float32, got {t.dtype}")
    drop = 23 - bits
    i = t.contiguous().view(torch.int32)
    lsb = (i >> drop) & 1
    rounded = ((i + (1 << (drop - 1)) - 1 + lsb) >> drop) << drop
    finite = torch.isfinite(t)
    return torch.where(finite, rounded.view(torch.float32), t).view_as(t)


MANTISSA_BITS = {"tf32": 10, "fp16": 10, "bf16": 7}



def emulate_rounding(model: nn.Module, precision: str) -> nn.Module:
    """A copy of ``model`` whose convolutions (plain and transposed) compute with their
    input and weights rounded to ``precision``'s significand and the products summed in
    float32, as TF32 convolutions do (fp16 and bf16 also round the output): the error
    pattern of reduced precision, for diagnostics and tests on a CPU, which has no TF32.
    The stored weights stay exact (rounded only for the duration of each call)."""
    bits = MANTISSA_BITS[precision]
    out = copy.deepcopy(model)

    def before(mod, args):
        mod._exact_weight = mod.weight.data
        mod.weight.data = round_mantissa(mod.weight.data, bits)
        return (round_mantissa(args[0], bits),) + tuple(args[1:])

    def after(mod, args, y):
        mod.weight.data = mod._exact_weight
        del mod._exact_weight
        # TF32 outputs are float32; fp16/bf16 convolutions return their own format
        return y if precision == "tf32" else round_mantissa(y, bits)

    for m in out.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_pre_hook(before)
            m.register_forward_hook(after)
    if hasattr(out, "reuse_buffers"):
        out.reuse_buffers = False  # the pool's fused kernels would bypass the hooks
    return out

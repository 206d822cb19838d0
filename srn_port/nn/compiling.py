"""``torch.compile`` of the model (TorchInductor), and whether it can run here.

Inductor generates C++ (CPU) or Triton (CUDA) kernels at run time; a machine without a C++
compiler, or a torch build without Triton for its GPU, cannot compile. That is found out by
compiling a trivial function once per device kind, never assumed from the platform.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch

#: torch.compile modes offered: "default", and "reduce-overhead" (CUDA graphs: the launch
#: overhead of ~100 kernels per level goes away where the input size repeats; CUDA only).
COMPILE_MODES = ("default", "reduce-overhead")


@lru_cache(maxsize=None)
def inductor_unavailable(device_type: str = "cpu") -> str:
    """Why torch.compile (Inductor) cannot run on ``device_type`` here, found by compiling
    and running a trivial function, or '' when it can."""
    try:
        f = torch.compile(lambda t: t * 2 + 1)
        t = torch.ones(3, device=device_type)
        if not torch.equal(f(t).cpu(), torch.full((3,), 3.0)):
            return "torch.compile ran but computed a wrong result on a trivial function"
    except Exception as exc:  # noqa: BLE001 - the reason is reported
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:300]}"
    return ""


def quiet_dynamo() -> None:
    """Dynamo warns that it traces through functools.lru_cache wrappers: the resize's
    cached sampling weights (srn_port/nn/ops/resize.py) are a pure function of the sizes,
    so tracing through the cache computes the same values."""
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a "
                                              "`functools.lru_cache`-wrapped function")

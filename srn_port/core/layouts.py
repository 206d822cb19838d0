"""TF weight layouts -> PyTorch's, as numpy functions (no torch): the one definition used by
SRN's converter (:mod:`srn_port.core.naming`) and the porting toolkit
(:mod:`srn_port.port.mapping`). No flips anywhere (docs/tf-numerics.md §1)."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np


def _conv(a: np.ndarray) -> np.ndarray:
    # conv2d [kh, kw, in, out] -> [out, in, kh, kw]; conv2d_transpose [kh, kw, out, in] ->
    # [in, out, kh, kw]: the same permutation
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))


def _depthwise(a: np.ndarray) -> np.ndarray:
    # depthwise [kh, kw, in, multiplier] -> [in * multiplier, 1, kh, kw] (channel c*m + j)
    kh, kw, cin, mult = a.shape
    return np.ascontiguousarray(a.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw))


LAYOUTS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": _conv,
    "conv_transpose": _conv,
    "depthwise": _depthwise,
    "fc": lambda a: np.ascontiguousarray(a.T),  # fully_connected [in, out] -> [out, in]
    "vector": lambda a: a,
}

#: The same layouts on shapes alone (a ledger checks shapes before any data is read).
LAYOUT_SHAPES: Dict[str, Callable[[tuple], tuple]] = {
    "conv": lambda s: (s[3], s[2], s[0], s[1]),
    "conv_transpose": lambda s: (s[3], s[2], s[0], s[1]),
    "depthwise": lambda s: (s[2] * s[3], 1, s[0], s[1]),
    "fc": lambda s: (s[1], s[0]),
    "vector": lambda s: tuple(s),
}

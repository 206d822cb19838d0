"""Dead layers found by their gradient (the static check: :mod:`srn_port.core.liveness`)."""

from __future__ import annotations

from typing import List

import torch

from .loss import srn_loss
from .model import SRN


def dead_variables(model: SRN, blur: torch.Tensor, sharp: torch.Tensor) -> List[str]:
    """Names of ``model``'s parameters whose gradient of the original training loss
    (:func:`srn_port.nn.loss.srn_loss`; the model detaches each level's prediction as TF's
    stop_gradient does) on (``blur``, ``sharp``) is exactly 0 in every element (or absent),
    in model order. The parameters' ``.grad`` are left as they were."""
    params = list(model.named_parameters())
    grads = torch.autograd.grad(srn_loss(model(blur), sharp), [p for _, p in params],
                                allow_unused=True)
    return [name for (name, _), g in zip(params, grads)
            if g is None or not bool(torch.any(g != 0))]

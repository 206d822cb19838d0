"""The original training loss (docs/original-srn.md §4.2)."""

from __future__ import annotations

from typing import Sequence

import torch

from .ops import tf_resize_images


def srn_loss(outputs: Sequence[torch.Tensor], sharp: torch.Tensor) -> torch.Tensor:
    """``sum over levels of mean((gt_i - output_i) ** 2)``: the model's three outputs (coarse
    to fine) against the full-size sharp batch (NCHW, [0, 1]) resized to each level's size
    with TF1's legacy bilinear resize (skipped at the same size, as TF skips it, so a float64
    sharp batch stays float64 there). A scalar.

    The previous level's prediction reaches the next level through ``tf.stop_gradient`` in
    the original; :class:`srn_port.nn.model.SRN` detaches it the same way.
    """
    if len(outputs) == 0:
        raise ValueError("srn_loss needs the model's level outputs, got none")
    total = None
    for out in outputs:
        if out.shape[0] != sharp.shape[0] or out.shape[1] != sharp.shape[1]:
            raise ValueError(f"an output of shape {tuple(out.shape)} does not match the sharp "
                             f"batch of shape {tuple(sharp.shape)} (batch and channels)")
        gt = tf_resize_images(sharp, tuple(out.shape[-2:])).to(out.dtype)
        term = torch.mean((gt - out) ** 2)
        total = term if total is None else total + term
    return total

"""The model's FLOPs per forward (srn_port.core.flops, used by tools/bench.py for the
ratio to a GPU's peak) against PyTorch's FlopCounterMode on the actual forward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from srn_port.core.flops import forward_flops, frame_flops, level_flops
from srn_port.core.network import SRNConfig
from srn_port.nn.model import SRN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("variant", ["color", "gray", "lstm"])
@pytest.mark.parametrize("size, batch", [((32, 48), 1), ((48, 80), 2), ((16, 16), 3)])
def test_flops_equal_pytorchs_count(variant, size, batch):
    model = SRN(SRNConfig(variant, 4)).eval()
    x = torch.rand(batch, model.config.channels, *size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    assert forward_flops(model.config, *size, batch) == counter.get_total_flops()


def test_flops_of_the_released_models_at_720p():
    """Width 32 at 720x1280: the full-resolution level holds 4^2/(4^2+2^2+1) of the work
    (levels 1/4, 1/2, 1 scale the pixels by 1/16, 1/4, 1)."""
    color = SRNConfig("color", 32)
    per_level = [sum(level_flops(color, 720, 1280, lv).values()) for lv in range(3)]
    assert per_level[2] == 4 * per_level[1] == 16 * per_level[0]
    assert frame_flops(SRNConfig("gray", 32), 720, 1280) == 3 * forward_flops(
        SRNConfig("gray", 32), 720, 1280)
    assert frame_flops(color, 720, 1280) == forward_flops(color, 720, 1280)

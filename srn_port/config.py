"""What distinguishes the released SRN-Deblur models, as one frozen config."""

from __future__ import annotations

from dataclasses import dataclass

#: The three released checkpoints: image channels in/out, and whether a ConvLSTM sits
#: between encoder and decoder. ``gray`` and ``lstm`` run each colour plane on its own.
VARIANTS = {
    "color": {"channels": 3, "lstm": False},
    "gray": {"channels": 1, "lstm": False},
    "lstm": {"channels": 1, "lstm": True},
}

#: Released width: channels of the first encoder stage (the stages use w, 2w, 4w).
RELEASED_WIDTH = 32
#: Scale pyramid of the original: 3 levels, each half the size of the next.
N_LEVELS = 3
LEVEL_SCALE = 0.5
#: H and W must be multiples of this: level 0 is 1/4 size and is halved twice more.
SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class SRNConfig:
    variant: str = "color"  # "color" | "gray" | "lstm" (the released checkpoints)
    width: int = RELEASED_WIDTH  # first-stage channels; 32 = released, smaller for tests

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown SRN variant {self.variant!r}; expected one of "
                             f"{', '.join(VARIANTS)}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive integer, got {self.width!r}")

    @property
    def channels(self) -> int:
        """Image channels in and out (3 for color, 1 for gray and lstm)."""
        return VARIANTS[self.variant]["channels"]

    @property
    def use_lstm(self) -> bool:
        return VARIANTS[self.variant]["lstm"]

    @property
    def lstm_features(self) -> int:
        """ConvLSTM hidden channels: the third stage's width (128 when released)."""
        return 4 * self.width


def level_size(height: int, width: int, level: int) -> tuple:
    """Spatial size of pyramid level ``level`` (0 = coarsest), as the original computes it:
    ``int(round(H * 0.5 ** (2 - level)))``. For multiples of 16 the product is exact."""
    s = LEVEL_SCALE ** (N_LEVELS - 1 - level)
    return int(round(height * s)), int(round(width * s))


def param_shapes(config: SRNConfig) -> dict:
    """PyTorch parameter name -> shape for ``config``, in the model's order, computed without
    building the model (so converting a checkpoint need not import torch). The model tests
    check that this equals ``SRN(config).state_dict()``."""
    w, c = config.width, config.channels
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def resblock(name, dim):
        conv(f"{name}.conv1", dim, dim, 5)
        conv(f"{name}.conv2", dim, dim, 5)

    conv("enc1_1", 2 * c, w, 5)
    for stage, dim in ((1, w), (2, 2 * w), (3, 4 * w)):
        if stage > 1:
            conv(f"enc{stage}_1", dim // 2, dim, 5)
        for k in (2, 3, 4):
            resblock(f"enc{stage}_{k}", dim)
    if config.use_lstm:
        f = config.lstm_features
        conv("convLSTM.LSTM_conv", 4 * w + f, 4 * f, 3)
    for name in ("dec3_3", "dec3_2", "dec3_1"):
        resblock(name, 4 * w)
    shapes["dec2_4.weight"] = (4 * w, 2 * w, 4, 4)  # ConvTranspose2d: [in, out, kh, kw]
    shapes["dec2_4.bias"] = (2 * w,)
    for k in (3, 2, 1):
        resblock(f"dec2_{k}", 2 * w)
    shapes["dec1_4.weight"] = (2 * w, w, 4, 4)
    shapes["dec1_4.bias"] = (w,)
    for k in (3, 2, 1):
        resblock(f"dec1_{k}", w)
    conv("dec1_0", w, c, 5)
    return shapes

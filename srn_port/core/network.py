"""The SRN-Deblur generator (``g_net``), described once, without torch.

Everything else is derived from this module: the PyTorch modules
(:class:`srn_port.nn.model.SRN` builds one module per parametric node), the parameter shapes
a checkpoint must have (:func:`param_shapes`, used by the converter without torch), and the
graph that both the model and the parity tools walk (:func:`level_graph`).

One pyramid level is a small graph of named nodes, in the order the original computes them.
Every node's name is the TF scope (or tensor) name it reproduces: ``inp_blur``/``inp_pred``/
``rnn_state`` for the resizes, ``inp`` for the concat, slim scopes for the layers, ``cat2``/
``cat1`` for the skip sums, ``convLSTM_state`` for the ConvLSTM's packed state and
``convLSTM`` for its output h. The facts are in docs/original-srn.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

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
#: A sanity bound on the width read from a file (the released one is 32); a larger claim is
#: refused before anything is allocated (width 4096 would be 15 GB of weights).
MAX_WIDTH = 256

KSIZE = 5  # every conv in g_net is 5x5 except the 4x4 transposed convs and the 3x3 LSTM conv
LSTM_KSIZE = 3
DECONV_KSIZE = 4

#: BasicConvLSTMCell adds this to the forget gate inside the graph; it is not a weight.
FORGET_BIAS = 1.0
#: Order in which TF's cell splits the 4*F gate channels: input, new input, forget, output.
LSTM_GATE_ORDER = ("i", "j", "f", "o")
#: The cell's state is one tensor, concat([c, h]) on the channel axis, not a tuple.
LSTM_STATE_ORDER = ("c", "h")

#: Naive choices of a hand port that the model can emulate, only to show their effect.
EMULATIONS = ("torch-padding", "torch-resize")

#: Tensors a level receives from outside its graph.
LEVEL_FEEDS = ("input", "prev_output", "prev_state")
#: The level output (and next level's ``prev_output``), and the state carried to the next level.
OUTPUT_NODE = "dec1_0"
STATE_NODE = "convLSTM_state"


@dataclass(frozen=True)
class SRNConfig:
    variant: str = "color"  # "color" | "gray" | "lstm" (the released checkpoints)
    width: int = RELEASED_WIDTH  # first-stage channels; 32 = released, smaller for tests

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown SRN variant {self.variant!r}; expected one of "
                             f"{', '.join(VARIANTS)}")
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive integer, got {self.width!r}")
        if self.width > MAX_WIDTH:
            raise ValueError(f"width {self.width} is beyond any SRN model (the released one is "
                             f"{RELEASED_WIDTH}; at most {MAX_WIDTH} is accepted)")

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
    k = 2 ** (N_LEVELS - 1 - level)  # LEVEL_SCALE = 1/2
    if height % k == 0 and width % k == 0:  # exact in integers (also for symbolic sizes)
        return height // k, width // k
    s = LEVEL_SCALE ** (N_LEVELS - 1 - level)
    return int(round(height * s)), int(round(width * s))


#: What each op of the graph computes. Parametric ops own a module named ``Node.module``.
OPS = {
    "resize": "TF1 legacy bilinear resize of a feed to the level's size",
    "resize_state": "the same resize of the ConvLSTM state, to 1/4 of the level's size",
    "concat": "channel concatenation",
    "conv": "TF-'SAME' convolution, then ReLU (slim.conv2d's default activation)",
    "conv_linear": "TF-'SAME' convolution without activation",
    "resblock": "ResnetBlock: conv (ReLU), conv (linear), plus the block's input",
    "deconv": "conv2d_transpose 'SAME' (output = input * stride), then ReLU",
    "add": "elementwise sum (the skip connections)",
    "lstm": "one BasicConvLSTMCell step on (input, packed state [c, h])",
    "lstm_h": "the h half of the packed ConvLSTM state",
}
PARAMETRIC_OPS = frozenset({"conv", "conv_linear", "resblock", "deconv", "lstm"})


@dataclass(frozen=True)
class Node:
    """One named tensor of a pyramid level: ``op`` applied to the tensors ``inputs``.

    Parametric nodes also say their layer: ``cin`` -> ``cout`` channels, ``ksize``, ``stride``,
    and ``module``, the PyTorch attribute (and TF scope) that holds its weights.
    """

    name: str
    op: str
    inputs: Tuple[str, ...]
    cin: int = 0
    cout: int = 0
    ksize: int = 0
    stride: int = 1
    module: Optional[str] = None

    @property
    def parametric(self) -> bool:
        return self.op in PARAMETRIC_OPS


def _layer(name, op, inputs, cin, cout, ksize=KSIZE, stride=1, module=None) -> Node:
    return Node(name, op, tuple(inputs), cin, cout, ksize, stride, module or name)


def level_graph(config: SRNConfig) -> Tuple[Node, ...]:
    """The nodes of one pyramid level in the order the original graph computes them."""
    w, c = config.width, config.channels
    nodes = [
        Node("inp_blur", "resize", ("input",)),
        Node("inp_pred", "resize", ("prev_output",)),
        Node("inp", "concat", ("inp_blur", "inp_pred")),
    ]
    if config.use_lstm:
        nodes.append(Node("rnn_state", "resize_state", ("prev_state",)))
    prev, dim = "inp", 2 * c
    for stage, width in ((1, w), (2, 2 * w), (3, 4 * w)):
        name = f"enc{stage}_1"
        nodes.append(_layer(name, "conv", [prev], dim, width, stride=1 if stage == 1 else 2))
        prev, dim = name, width
        for k in (2, 3, 4):
            nodes.append(_layer(f"enc{stage}_{k}", "resblock", [prev], dim, dim))
            prev = f"enc{stage}_{k}"
    if config.use_lstm:
        f = config.lstm_features
        nodes.append(_layer(STATE_NODE, "lstm", [prev, "rnn_state"], dim, f,
                            ksize=LSTM_KSIZE, module="convLSTM"))
        nodes.append(Node("convLSTM", "lstm_h", (STATE_NODE,)))
        prev, dim = "convLSTM", f
    for name in ("dec3_3", "dec3_2", "dec3_1"):
        nodes.append(_layer(name, "resblock", [prev], dim, dim))
        prev = name
    for stage, skip, cat in ((2, "enc2_4", "cat2"), (1, "enc1_4", "cat1")):
        name = f"dec{stage}_4"
        nodes.append(_layer(name, "deconv", [prev], dim, dim // 2, ksize=DECONV_KSIZE, stride=2))
        nodes.append(Node(cat, "add", (name, skip)))
        prev, dim = cat, dim // 2
        for k in (3, 2, 1):
            nodes.append(_layer(f"dec{stage}_{k}", "resblock", [prev], dim, dim))
            prev = f"dec{stage}_{k}"
    nodes.append(_layer(OUTPUT_NODE, "conv_linear", [prev], dim, c))
    return tuple(nodes)


def node_param_shapes(node: Node) -> Dict[str, Tuple[int, ...]]:
    """PyTorch parameter name -> shape of one parametric node (PyTorch layouts: convs
    ``[out, in, kh, kw]``, transposed convs ``[in, out, kh, kw]``)."""
    k, m = node.ksize, node.module
    if node.op in ("conv", "conv_linear"):
        return {f"{m}.weight": (node.cout, node.cin, k, k), f"{m}.bias": (node.cout,)}
    if node.op == "resblock":
        return {f"{m}.{conv}.{p}": s for conv in ("conv1", "conv2")
                for p, s in (("weight", (node.cout, node.cin, k, k)), ("bias", (node.cout,)))}
    if node.op == "deconv":
        return {f"{m}.weight": (node.cin, node.cout, k, k), f"{m}.bias": (node.cout,)}
    if node.op == "lstm":  # one conv over concat([x, h]) gives the four gates
        f = node.cout
        return {f"{m}.LSTM_conv.weight": (4 * f, node.cin + f, k, k),
                f"{m}.LSTM_conv.bias": (4 * f,)}
    return {}


def param_shapes(config: SRNConfig) -> Dict[str, Tuple[int, ...]]:
    """PyTorch parameter name -> shape for ``config``, in the model's order, from the graph
    (so converting a checkpoint need not import torch). The model tests check that this
    equals ``SRN(config).state_dict()``."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for node in level_graph(config):
        shapes.update(node_param_shapes(node))
    return shapes

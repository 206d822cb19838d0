"""The SRN-Deblur generator (``g_net``) in PyTorch.

Module attributes mirror the TF variable scopes (``enc2_1``, ``enc1_2.conv1``,
``convLSTM.LSTM_conv``, ``dec2_4``...), so a checkpoint variable ``g_net/enc1_2/conv1/weights``
is the parameter ``enc1_2.conv1.weight``: the name map is a string rewrite.

One pyramid level is a small graph of named nodes (:func:`level_graph`), evaluated in
graph order. Every node's name is the TF scope (or tensor) name it reproduces, which gives
two things for free: capturing any activation by name without changing the arithmetic,
and running one node on given inputs (the parity tools feed TF's activations to measure a
layer's own error without upstream accumulation).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import SrnPortError
from ..core.network import (EMULATIONS, FORGET_BIAS, KSIZE, LSTM_KSIZE, N_LEVELS,
                            OUTPUT_NODE, SIZE_MULTIPLE, STATE_NODE, Node, SRNConfig,
                            level_graph, level_size)
from .hub import HubMixin
from .ops import ConvTranspose2dSame, create_conv2d_same, tf_resize_images
from .ops.conv import Conv2dSame
from .pool import ActivationPool, conv_into, fused_conv_available

#: Ops whose output is a new tensor that no other tensor shares (so a later node may write
#: into it once it is dead). resize may return its input, lstm_h is a view of the state.
_FRESH_OPS = frozenset({"conv", "conv_linear", "resblock", "deconv", "add", "concat"})

class InputShapeError(SrnPortError, ValueError):
    """The input tensor does not have a shape the network accepts."""


class ResnetBlock(nn.Module):
    """``ResnetBlock`` of the original util.py: conv1 (ReLU), conv2 (linear), plus the input.
    No activation after the addition."""

    def __init__(self, dim: int, ksize: int = KSIZE):
        super().__init__()
        self.conv1 = create_conv2d_same(dim, dim, ksize)
        self.conv2 = create_conv2d_same(dim, dim, ksize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x), inplace=True))
        out += x  # in place on conv2's fresh output: one allocation less per block
        return out

    def forward_pooled(self, pool: ActivationPool, x: torch.Tensor,
                       overwrite_input: bool) -> torch.Tensor:
        """The same block with its activations in ``pool``: conv2's sum with the input is
        done by the convolution, into the input's buffer when it may be overwritten."""
        h = conv_into(pool, self.conv1, x, relu=True)
        into = x if overwrite_input else pool.take(tuple(x.shape)).copy_(x)
        out = conv_into(pool, self.conv2, h, relu=False, into=into)
        pool.give(h)
        return out


class ConvLSTMCell(nn.Module):
    """``BasicConvLSTMCell`` (state packed as [c, h], gates i, j, f, o, forget bias 1.0).

    One 3x3 conv ``LSTM_conv`` over concat([x, h]) gives all four gates; the call returns
    the new packed state. The cell's output h is the second half of that state.
    """

    def __init__(self, in_channels: int, features: int, ksize: int = LSTM_KSIZE):
        super().__init__()
        self.features = features
        self.LSTM_conv = create_conv2d_same(in_channels + features, 4 * features, ksize)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        c, h = torch.split(state, self.features, dim=1)
        i, j, f, o = torch.split(self.LSTM_conv(torch.cat([x, h], dim=1)), self.features, dim=1)
        new_c = c * torch.sigmoid(f + FORGET_BIAS) + torch.sigmoid(i) * torch.tanh(j)
        new_h = torch.tanh(new_c) * torch.sigmoid(o)
        return torch.cat([new_c, new_h], dim=1)

    def forward_pooled(self, pool: ActivationPool, x: torch.Tensor,
                       state: torch.Tensor) -> torch.Tensor:
        """The same step with the gates and temporaries in ``pool``: the same elementwise
        operations in the same order, written into pooled buffers; the new state is a
        tensor of its own (it is returned and fed to the next level)."""
        c, h = torch.split(state, self.features, dim=1)
        xh = torch.cat([x, h], dim=1)
        gates = conv_into(pool, self.LSTM_conv, xh, relu=False)
        del xh
        i, j, f, o = torch.split(gates, self.features, dim=1)
        a, b, t = (pool.take(tuple(c.shape)) for _ in range(3))
        torch.sigmoid(torch.add(f, FORGET_BIAS, out=a), out=a)
        torch.mul(c, a, out=a)                                  # c * sigmoid(f + 1)
        torch.mul(torch.sigmoid(i, out=b), torch.tanh(j, out=t), out=b)
        new_c = torch.add(a, b, out=a)
        new_h = torch.mul(torch.tanh(new_c, out=t), torch.sigmoid(o, out=b), out=t)
        out = torch.cat([new_c, new_h], dim=1)
        for buf in (a, b, t, gates):
            pool.give(buf)
        return out


Capture = Callable[[int, str, torch.Tensor], None]


class SRN(nn.Module, HubMixin):
    """SRN-Deblur generator for one of the released variants (see :class:`SRNConfig`).

    ``forward(x)`` takes NCHW float32 in [0, 1] with H, W multiples of 16 and returns the
    three level outputs, coarse to fine (1/4, 1/2, full size), unclipped, as the original.

    ``SRN.from_pretrained(folder_or_repo_id)`` / ``save_pretrained(folder)`` /
    ``push_to_hub``: Hugging Face Hub folders (:mod:`srn_port.nn.hub`, the 'hub' extra).
    """

    def __init__(self, config: SRNConfig = SRNConfig(), emulate: Sequence[str] = ()):
        super().__init__()
        self.config = config
        self.graph = level_graph(config)
        for node in self.graph:
            if node.parametric:
                setattr(self, node.module, _make_layer(node))
        self._free_after = _liveness(self.graph)
        self._overwritable = _overwritable_first_input(self.graph, self._free_after)
        self.memory_format = torch.contiguous_format
        #: Reuse activation memory in inference where oneDNN allows (see ``nn.pool``).
        self.reuse_buffers = True
        self.emulate: Tuple[str, ...] = ()
        self.set_emulation(emulate)

    def to_channels_last(self) -> "SRN":
        """Keep weights and activations in NHWC layout (``torch.channels_last``).

        oneDNN's CPU convolutions run NHWC natively; in NCHW every conv reorders its input
        and output. Same arithmetic up to summation order (within the 'layer' tolerance).
        """
        self.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        return self

    # -- emulation of naive ports (diagnostics only) ---------------------------------
    def set_emulation(self, emulate: Sequence[str]) -> None:
        """Switch on naive PyTorch choices (``torch-padding``, ``torch-resize``) or, with an
        empty sequence, back to TF-exact behaviour."""
        unknown = [e for e in emulate if e not in EMULATIONS]
        if unknown:
            raise ValueError(f"unknown emulation {unknown}; expected some of {list(EMULATIONS)}")
        self.emulate = tuple(emulate)
        for m in self.modules():
            if isinstance(m, Conv2dSame):
                m.naive_padding = "torch-padding" in self.emulate

    def _resize(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if "torch-resize" in self.emulate:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        # TF's kernel computes in float32; a reduced-precision model gets its dtype back, and
        # a same-size resize is skipped (a float64 model keeps its input's float64 values).
        return tf_resize_images(x, size)

    # -- graph evaluation --------------------------------------------------------------
    def node_names(self) -> Tuple[str, ...]:
        """Names of the nodes of one level, in graph order."""
        return tuple(n.name for n in self.graph)

    def apply_node(self, node: Node, args: Sequence[torch.Tensor],
                   size: Tuple[int, int]) -> torch.Tensor:
        """Compute one node from its input tensors; ``size`` is the level's (H, W)."""
        op = node.op
        if op == "resize":
            return self._resize(args[0], size)
        if op == "resize_state":
            return self._resize(args[0], (size[0] // 4, size[1] // 4))
        if op == "concat":
            return torch.cat(args, dim=1)
        if op == "add":
            return args[0] + args[1]
        if op == "lstm":
            return self.convLSTM(args[0], args[1])
        if op == "lstm_h":
            return args[0][:, self.config.lstm_features:]
        module = getattr(self, node.module)
        if op in ("conv", "deconv"):
            return F.relu(module(args[0]), inplace=True)
        if op in ("conv_linear", "resblock"):
            return module(args[0])
        raise AssertionError(f"unknown op {op!r}")

    def _apply_pooled(self, node: Node, args: Sequence[torch.Tensor], size: Tuple[int, int],
                      pool: ActivationPool, overwrite: bool) -> torch.Tensor:
        """``apply_node`` with the convolutions' outputs in ``pool`` (same arithmetic).
        ``overwrite``: the first input dies here and nothing else shares its memory."""
        op = node.op
        if op in ("conv", "conv_linear") and node.name != OUTPUT_NODE:
            return conv_into(pool, getattr(self, node.module), args[0], relu=op == "conv")
        if op == "resblock":
            return getattr(self, node.module).forward_pooled(pool, args[0], overwrite)
        if op == "add" and overwrite:
            return args[0].add_(args[1])
        if op == "lstm":
            # Its concat and state are new tensors beside the gates: without the free
            # buffers of the encoder held meanwhile, peak memory stays the plain forward's.
            pool.release()
            return self.convLSTM.forward_pooled(pool, args[0], args[1])
        if op == "deconv":  # a new tensor of the largest size so far in the decoder
            pool.release()
        # The level's output stays outside the pool: it is returned to the caller.
        return self.apply_node(node, args, size)

    def use_pool(self, x: torch.Tensor, capture: Optional[Capture] = None) -> bool:
        """Whether a forward on ``x`` reuses activation memory (see ``nn.pool``)."""
        return (self.reuse_buffers and capture is None and not self.emulate
                and not torch.is_grad_enabled() and type(x) is torch.Tensor
                and x.device.type == "cpu" and x.dtype == torch.float32
                and self.memory_format == torch.channels_last
                and not torch.jit.is_tracing() and not torch.jit.is_scripting()
                and not torch.compiler.is_compiling() and not _autocast_on(x)
                and fused_conv_available())

    def run_level(self, level: int, feeds: Mapping[str, torch.Tensor],
                  capture: Optional[Capture] = None,
                  pool: Optional[ActivationPool] = None) -> Dict[str, torch.Tensor]:
        """Evaluate one pyramid level from its feeds; returns the output and the state.

        Tensors are dropped as soon as no later node needs them, so peak memory is that of
        the live activations only; with ``pool`` their memory goes to the next convolution.
        ``capture(level, name, tensor)`` sees every node.
        """
        size = level_size(feeds["input"].shape[-2], feeds["input"].shape[-1], level)
        env: Dict[str, torch.Tensor] = dict(feeds)
        for node, free, overwrite in zip(self.graph, self._free_after, self._overwritable):
            args = [env[i] for i in node.inputs]
            if pool is None:
                out = self.apply_node(node, args, size)
            else:
                out = self._apply_pooled(node, args, size, pool, overwrite)
            del args
            env[node.name] = out
            if capture is not None:
                capture(level, node.name, out)
            for name in free:
                dead = env.pop(name, None)
                if pool is not None and dead is not None:
                    pool.give(dead, live=env.values())
        return {k: env[k] for k in (OUTPUT_NODE, STATE_NODE) if k in env}

    def initial_state(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The ConvLSTM's zero state, at the size level 0 resizes it to (zeros stay zeros)."""
        if not self.config.use_lstm:
            return None
        h, w = level_size(x.shape[-2], x.shape[-1], 0)
        return x.new_zeros(x.shape[0], 2 * self.config.lstm_features, h // 4, w // 4)

    def check_input(self, x: torch.Tensor) -> None:
        c = self.config.channels
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != c:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputShapeError(
                f"SRN ({self.config.variant}) expects an NCHW tensor with {c} channel(s), "
                f"got shape {shape}.")
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
            raise InputShapeError(
                f"SRN needs height and width that are positive multiples of {SIZE_MULTIPLE} "
                f"(three pyramid levels, two stride-2 stages each); got {h}x{w}. Pad the image "
                f"first, e.g. to {-(-h // 16) * 16}x{-(-w // 16) * 16}; `srn-port deblur` does "
                f"this for you.")

    def forward(self, x: torch.Tensor, capture: Optional[Capture] = None) -> List[torch.Tensor]:
        self.check_input(x)
        x = x.contiguous(memory_format=self.memory_format)
        outputs: List[torch.Tensor] = []
        feeds = {"input": x, "prev_output": x, "prev_state": self.initial_state(x)}
        pool = ActivationPool() if self.use_pool(x, capture) else None
        for level in range(N_LEVELS):
            if feeds["prev_state"] is None:
                del feeds["prev_state"]
            result = self.run_level(level, feeds, capture, pool)
            outputs.append(result[OUTPUT_NODE])
            # The original feeds the previous prediction through tf.stop_gradient: in
            # training no gradient flows from a level into the ones before it that way.
            feeds = {"input": x, "prev_output": result[OUTPUT_NODE].detach(),
                     "prev_state": result.get(STATE_NODE)}
        return outputs


def _autocast_on(x: torch.Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``x``'s device: then the convolutions run in
    the autocast dtype, which the pool's float32 fused kernel cannot honour, so the plain
    forward runs instead."""
    return torch.is_autocast_enabled(x.device.type)


def _make_layer(node: Node) -> nn.Module:
    """The PyTorch module of one parametric node of the graph."""
    if node.op in ("conv", "conv_linear"):
        return create_conv2d_same(node.cin, node.cout, node.ksize, stride=node.stride)
    if node.op == "resblock":
        return ResnetBlock(node.cout, node.ksize)
    if node.op == "deconv":
        return ConvTranspose2dSame(node.cin, node.cout, node.ksize, stride=node.stride)
    if node.op == "lstm":
        return ConvLSTMCell(node.cin, node.cout, node.ksize)
    raise AssertionError(f"no module for op {node.op!r}")


def _liveness(graph: Sequence[Node]) -> List[Tuple[str, ...]]:
    """For each node, the tensors whose last use it is (feeds included)."""
    last_use: Dict[str, int] = {}
    for idx, node in enumerate(graph):
        for name in node.inputs:
            last_use[name] = idx
    keep = {OUTPUT_NODE, STATE_NODE}
    free: List[List[str]] = [[] for _ in graph]
    for name, idx in last_use.items():
        if name not in keep:
            free[idx].append(name)
    # A node nobody reads (e.g. a captured-only tensor) is dropped right after it is made.
    for idx, node in enumerate(graph):
        if node.name not in last_use and node.name not in keep:
            free[idx].append(node.name)
    return [tuple(f) for f in free]


def _overwritable_first_input(graph: Sequence[Node],
                               free_after: Sequence[Tuple[str, ...]]) -> List[bool]:
    """For each node, whether its first input may be overwritten by it: made by a node of
    the graph as a new tensor (not a feed, not a view) and dead after this node."""
    fresh = {n.name for n in graph if n.op in _FRESH_OPS}
    return [bool(node.inputs) and node.inputs[0] in fresh and node.inputs[0] in free
            and node.inputs[0] not in node.inputs[1:]
            for node, free in zip(graph, free_after)]


def capture_activations(model: SRN, x: torch.Tensor,
                        names: Optional[Sequence[str]] = None) -> Dict[Tuple[int, str], torch.Tensor]:
    """Run ``model`` on ``x`` and return {(level, node name): activation} (all nodes, or
    ``names``), plus the outputs under ``(level, "dec1_0")``. The arithmetic is the same
    as a plain forward."""
    wanted = None if names is None else set(names)
    acts: Dict[Tuple[int, str], torch.Tensor] = {}

    def keep(level: int, name: str, t: torch.Tensor) -> None:
        if wanted is None or name in wanted:
            acts[(level, name)] = t

    model(x, capture=keep)
    return acts

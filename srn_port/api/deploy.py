"""Export an SRN model for deployment: ONNX (``.onnx``, for ONNX Runtime, TensorRT, ...) or
``torch.export`` (``.pt2``), with dynamic batch, height and width (multiples of 16) in one
file and TF's semantics kept symbolic: the level sizes, the 'SAME' padding split from the
actual size, TF1's legacy bilinear resize (the same float32 index arithmetic as
:func:`srn_port.nn.ops.tf_resize_bilinear`, traced as tensor operations) and the ConvLSTM.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from torch.export import Dim

from ..core.errors import SrnPortError
from ..core.fileio import atomic_write, check_new_file
from ..core.network import SIZE_MULTIPLE
from ..nn.model import SRN
from .weights import load_model

FORMATS = (".onnx", ".pt2")
#: The export's example input: any size works; the file accepts every multiple of 16.
EXAMPLE_SIZE = (64, 96)
MAX_SIDE = 16 * 1024
#: ONNX names of the graph's input and outputs (coarse to fine).
INPUT_NAME = "input"
OUTPUT_NAMES = ("level0", "level1", "level2")


class Outputs(nn.Module):
    """The model returning its three level outputs (coarse to fine), or only the finest."""

    def __init__(self, model: SRN, finest_only: bool = False):
        super().__init__()
        self.model, self.finest_only = model, finest_only

    def forward(self, x: torch.Tensor):
        outs = self.model(x)
        return outs[-1] if self.finest_only else tuple(outs)


def _dynamic_shapes():
    h = Dim("height_div16", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
    w = Dim("width_div16", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
    return {"x": {0: Dim("batch", min=1, max=1024), 2: SIZE_MULTIPLE * h,
                  3: SIZE_MULTIPLE * w}}


def export_model(weights, out, finest_only: bool = False, force: bool = False) -> Path:
    """Write the model of ``weights`` (a converted file or TF checkpoint) to ``out``:
    ``.onnx`` (the dynamo exporter, opset 18+, checked with ``onnx.checker``) or ``.pt2``
    (``torch.export.save``). Dynamic batch, height and width (multiples of 16)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise SrnPortError(f"'{out}': srn-port exports {' or '.join(FORMATS)} files; choose a "
                           f"name ending in one of them.")
    check_new_file(out, "export file", [weights], force)
    model = load_model(weights, channels_last=False)
    config = model.config
    wrapper = Outputs(model, finest_only).eval()
    x = torch.rand(2, config.channels, *EXAMPLE_SIZE)  # batch 2: 1 would be specialised
    names = OUTPUT_NAMES[-1:] if finest_only else OUTPUT_NAMES
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if suffix == ".pt2":
            program = torch.export.export(wrapper, (x,), dynamic_shapes=_dynamic_shapes())
            atomic_write(out, lambda tmp: torch.export.save(program, tmp), keep_suffix=True)
        else:
            try:
                import onnx
            except ImportError:
                raise SrnPortError("Exporting to ONNX needs the onnx extra: pip install "
                                   "'srn-port[onnx]'.") from None
            program = torch.onnx.export(wrapper, (x,), dynamo=True, verbose=False,
                                        dynamic_shapes=_dynamic_shapes(),
                                        input_names=[INPUT_NAME], output_names=list(names))
            proto = program.model_proto
            proto.metadata_props.add(key="srn_port", value=f"{config.variant}:{config.width}")
            onnx.checker.check_model(proto)
            atomic_write(out, lambda tmp: onnx.save(proto, tmp))
    return out


class OnnxModel:
    """An exported ``.onnx`` file run by ONNX Runtime, called like :class:`SRN` (NCHW float32
    in, list of level outputs as tensors)."""

    def __init__(self, path, threads: Optional[int] = None):
        path = Path(path)
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise SrnPortError("Running an .onnx model needs the onnx extra: pip install "
                               "'srn-port[onnx]'.") from None
        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                    .metadata_props}
        except Exception as exc:
            raise SrnPortError(f"'{path}' is not a readable ONNX file ({exc}).") from None
        if "srn_port" not in meta:
            raise SrnPortError(f"'{path}' is an ONNX file but not one exported by srn-port "
                               f"(no srn_port metadata); export one with: srn-port export "
                               f"WEIGHTS model.onnx")
        from ..core.network import SRNConfig

        variant, width = meta["srn_port"].split(":")
        self.config = SRNConfig(variant, int(width))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor):
        outs = self.session.run(None, {INPUT_NAME: x.detach().cpu().contiguous().numpy()})
        return [torch.from_numpy(o) for o in outs]

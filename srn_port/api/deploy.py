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

from ..core.errors import ModelFileError, SrnPortError
from ..core.fileio import atomic_write, check_new_file, regular_file_size
from ..core.limits import MODEL_BYTES
from ..core.network import SIZE_MULTIPLE
from ..core.options import BACKENDS
from ..core.pt2check import check_pt2_archive
from ..nn.model import SRN
from .weights import load_model

FORMATS = (".onnx", ".pt2")
#: The export's example input: any size works; the file accepts every multiple of 16.
EXAMPLE_SIZE = (64, 96)
MAX_SIDE = 16 * 1024
#: ONNX names of the graph's input and outputs (coarse to fine).
INPUT_NAME = "input"
OUTPUT_NAMES = ("level0", "level1", "level2")
#: What an export says about itself: ONNX metadata key, and the .pt2 archive's extra file.
METADATA_KEY = "srn_port"
METADATA_FILE = "srn_port.txt"


def _metadata(config, finest_only: bool) -> str:
    """``variant:width``, plus ``:finest`` when only the finest level is output."""
    return f"{config.variant}:{config.width}" + (":finest" if finest_only else "")


def _parse_metadata(text: str, path: Path):
    from ..core.network import VARIANTS, SRNConfig

    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or parts[0] not in VARIANTS or (
                len(parts) == 3 and parts[2] != "finest"):
            raise ValueError(text)
        return SRNConfig(parts[0], int(parts[1])), len(parts) == 3
    except ValueError:
        raise SrnPortError(f"'{path}': its srn_port metadata '{text[:80]}' is not "
                           f"'variant:width[:finest]'; the file was not written by srn-port "
                           f"export, or was altered. Export it again.") from None


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
            extra = {METADATA_FILE: _metadata(config, finest_only)}
            # saved to memory, then written by atomic_write: torch's zip writer, when the
            # disk fills, throws from its destructor and aborts the process (torch 2.13)
            import io

            buf = io.BytesIO()
            torch.export.save(program, buf, extra_files=extra)
            atomic_write(out, lambda tmp: Path(tmp).write_bytes(buf.getvalue()),
                         keep_suffix=True)
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
            proto.metadata_props.add(key=METADATA_KEY, value=_metadata(config, finest_only))
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
            raise ModelFileError(f"'{path}' is not a readable ONNX file ({exc}).") from None
        if METADATA_KEY not in meta:
            raise SrnPortError(f"'{path}' is an ONNX file but not one exported by srn-port "
                               f"(no srn_port metadata); export one with: srn-port export "
                               f"WEIGHTS model.onnx")
        self.config, self.finest_only = _parse_metadata(meta[METADATA_KEY], path)
        self.path = path
        self.metadata = {"source": str(path), "backend": "onnxruntime"}
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelFileError(f"ONNX Runtime cannot load '{path}' ({exc}). Export it again "
                               f"with srn-port export.") from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    #: ONNX Runtime runs here on the CPU; deblur_image asks where the model is.
    device = torch.device("cpu")

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise SrnPortError(f"'{self.path}': srn-port runs .onnx files with ONNX Runtime's "
                               f"CPU provider; use --device cpu, or the converted weights "
                               f"(.pt/.safetensors) for {torch.device(device).type}.")
        return self

    def __call__(self, x: torch.Tensor):
        outs = self.session.run(None, {INPUT_NAME: x.detach().cpu().float().contiguous()
                                       .numpy()})
        return [torch.from_numpy(o) for o in outs]


def load_program_safely(path, extra_files: Optional[dict] = None):
    """``torch.export.load`` of ``path``, but only after :func:`srn_port.core.pt2check.
    check_pt2_archive` found nothing in it that would run code (pickles, compiled code,
    code in guards or symbolic shapes, operators outside the allow-list) and its sample
    inputs loaded with ``weights_only=True``. The file is read once into memory (bounded
    by :data:`srn_port.core.limits.MODEL_BYTES`), so what was checked is what is loaded."""
    import io
    import zipfile

    path = Path(path)
    size = regular_file_size(path, "exported model")
    limit = MODEL_BYTES.value()
    if size > limit:
        raise ModelFileError(f"'{path}' is {size:,} bytes, more than the {limit:,} that "
                             f"srn-port reads for an exported model ({MODEL_BYTES.env} "
                             f"raises the limit).")
    data = path.read_bytes()
    unreadable = (f"'{path}' is not a readable torch.export program ({{}}). Export it again "
                  f"with srn-port export.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = reader.get_all_records()
    except (zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise ModelFileError(unreadable.format(str(exc).splitlines()[0][:200])) from None

    def read(name: str) -> bytes:
        try:
            return bytes(reader.get_record(name))
        except RuntimeError as exc:
            raise ModelFileError(unreadable.format(str(exc).splitlines()[0][:200])) from None

    sample = check_pt2_archive(
        path, records, read, [i.filename for i in infos],
        [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(sample), map_location="cpu", weights_only=True)
    except Exception:
        # torch.export.load would retry it with weights_only=False: never for a stranger's file
        raise ModelFileError(
            f"'{path}' is refused: its sample inputs (data/sample_inputs/model.pt) do not "
            f"load safely (weights_only: tensors and plain containers only), and torch would "
            f"load them again with weights_only=False, which can run code from the file. A "
            f".pt2 written by srn-port export does not have this; export the model again "
            f"(srn-port export WEIGHTS model.pt2).") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(io.BytesIO(data), extra_files=extra_files)
    except Exception as exc:
        raise ModelFileError(unreadable.format(str(exc).splitlines()[0][:200]
                                               if str(exc) else type(exc).__name__)) from None


class ExportedProgram(nn.Module):
    """A ``.pt2`` file written by :func:`export_model` (``torch.export.load``), called like
    :class:`SRN`: NCHW float32 in, the list of its level outputs (coarse to fine; only the
    finest if it was exported with ``finest_only``)."""

    def __init__(self, path):
        super().__init__()
        path = Path(path)
        extra = {METADATA_FILE: ""}
        program = load_program_safely(path, extra)
        if not extra[METADATA_FILE]:
            raise SrnPortError(f"'{path}' is a torch.export program but not one exported by "
                               f"srn-port (no {METADATA_FILE}); export one with: srn-port "
                               f"export WEIGHTS model.pt2")
        self.config, self.finest_only = _parse_metadata(extra[METADATA_FILE], path)
        self.path = path
        self.metadata = {"source": str(path), "backend": "torch.export"}
        self.module_ = program.module()

    def forward(self, x: torch.Tensor):
        out = self.module_(x)
        return [out] if isinstance(out, torch.Tensor) else list(out)


def load_exported(path, threads: Optional[int] = None):
    """The model of an exported ``.onnx`` (:class:`OnnxModel`) or ``.pt2``
    (:class:`ExportedProgram`) file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxModel(path, threads=threads)
    if path.suffix.lower() == ".pt2":
        return ExportedProgram(path)
    raise SrnPortError(f"'{path}': exported models are {' or '.join(FORMATS)} files.")




def load_inference_model(weights, backend: str = "auto", device="cpu",
                         threads: Optional[int] = None):
    """A model for :func:`srn_port.api.deblur.deblur_image`: an :class:`SRN` (converted
    file or TF checkpoint), an :class:`ExportedProgram` (``.pt2``) or an :class:`OnnxModel`
    (``.onnx``, ONNX Runtime with ``threads`` intra-op threads)."""
    weights = Path(weights)
    suffix = weights.suffix.lower()
    if backend not in BACKENDS:
        raise SrnPortError(f"Unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}.")
    if backend == "onnxruntime" and suffix != ".onnx":
        raise SrnPortError(f"backend 'onnxruntime' runs an exported .onnx file, and "
                           f"'{weights}' is not one; make one with: srn-port export "
                           f"'{weights}' model.onnx")
    if suffix == ".onnx":
        if backend == "torch":
            raise SrnPortError(f"'{weights}' is an ONNX file, which ONNX Runtime runs: use "
                               f"backend 'onnxruntime' (or 'auto'), or give the converted "
                               f"weights for backend 'torch'.")
        return OnnxModel(weights, threads=threads).to(device)
    if suffix == ".pt2":
        return ExportedProgram(weights).to(device)
    return load_model(weights, device=device)

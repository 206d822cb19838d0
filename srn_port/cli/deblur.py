"""``srn-port deblur``: deblur image files and folders with a converted (or TF) model."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import click

from .weights_arg import WeightsPath

from ..core.errors import SrnPortError
from ..core.folderlock import FolderBusyError, FolderLock
from ..core.options import (BACKENDS, DEFAULT_OVERLAP, DEVICES, IMAGE_EXTENSIONS, MODES,
                            ORIGINAL_CANVAS, PRECISIONS, VIDEO_EXTENSIONS)

COMPARE_SUFFIX = "_compare.png"
#: What deblur reads: images and videos.
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
_LISTING_LIMIT = 10


@dataclass
class Job:
    source: Path
    output: Optional[Path] = None
    compare: Optional[Path] = None
    problem: Optional[str] = None  # known before running: reported and skipped


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _listing(paths) -> str:
    paths = [str(p) for p in paths]
    shown = ", ".join(f"'{p}'" for p in paths[:_LISTING_LIMIT])
    return shown + (f" and {len(paths) - _LISTING_LIMIT} more" if len(paths) > _LISTING_LIMIT
                    else "")


def suffix_of(path: Path) -> str:
    return Path(path).suffix.lower()


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def plan_jobs(inputs: List[Path], outdir: Path, compare: bool, force: bool):
    """Expand folders, name the outputs and refuse unsafe runs before any work.

    Returns (jobs, notes). Raises click.UsageError for a run that would overwrite an
    input, write two images to one name, or overwrite existing outputs without --force.
    """
    jobs: List[Job] = []
    notes: List[str] = []
    seen = set()
    for inp in inputs:
        if inp.is_dir():
            if _same_file(inp, outdir):
                raise click.UsageError(
                    f"The output folder '{outdir}' is the input folder '{inp}': the results "
                    f"would replace the photos. Choose another -o/--outdir.")
            files = sorted(p for p in inp.iterdir()
                           if p.is_file() and not p.name.startswith("."))
            images = [p for p in files if p.suffix.lower() in MEDIA_EXTENSIONS]
            others = [p.name for p in files if p.suffix.lower() not in MEDIA_EXTENSIONS]
            if others:
                notes.append(f"note: ignoring {len(others)} file(s) in '{inp}' without an image "
                             f"extension: {_listing(others)}")
            if not images:
                notes.append(f"note: no image or video files ({', '.join(MEDIA_EXTENSIONS)}) directly "
                             f"inside '{inp}'")
        else:
            images = [inp]  # a missing or unreadable file is reported (and skipped) by name
        for src in images:
            key = src.resolve()
            if key in seen:
                continue
            seen.add(key)
            job = Job(src)
            if src.suffix.lower() not in MEDIA_EXTENSIONS:
                job.problem = (f"'{src}': not an image or video file name (extension "
                               f"'{src.suffix or '(none)'}'); srn-port deblur reads and writes "
                               f"{', '.join(MEDIA_EXTENSIONS)}. Skipped.")
            else:
                job.output = outdir / src.name
                if compare:
                    job.compare = outdir / (src.stem + (
                        f"_compare{src.suffix}" if is_video(src) else COMPARE_SUFFIX))
            jobs.append(job)

    sources = [j.source for j in jobs]
    by_output = {}
    for job in jobs:
        for out in (job.output, job.compare):
            if out is None:
                continue
            clash = [s for s in sources if _same_file(s, out)]
            if clash:
                raise click.UsageError(
                    f"Writing '{out}' would overwrite the input '{clash[0]}'. Inputs are never "
                    f"modified: choose another -o/--outdir.")
            key = out.resolve()
            if key in by_output:
                raise click.UsageError(
                    f"'{by_output[key]}' and '{job.source}' would both be written to '{out}' "
                    f"(same file name). Deblur them into different output folders.")
            by_output[key] = job.source
    if outdir.exists() and not outdir.is_dir():
        raise click.UsageError(f"-o/--outdir '{outdir}' exists and is not a folder.")
    if not force:
        paths = [o for j in jobs for o in (j.output, j.compare) if o is not None and o.exists()]
        if paths:
            raise click.UsageError(
                f"{len(paths)} output file(s) exist already: {_listing(paths)}. Nothing was "
                f"written; pass --force to overwrite them, or choose another -o/--outdir.")
    return jobs, notes


def _given(ctx, name: str) -> bool:
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


#: The deblurring pipeline's options, shared by deblur and evaluate.
_PIPELINE_OPTIONS = [
    click.option("--mode", type=click.Choice(MODES), default="full",
                 help="full: full resolution, any size, rounded output. original: replay the "
                      "authors' test() (fixed canvas, downscale of larger images, truncation), "
                      "equal to the TF original; 8-bit only."),
    click.option("--height", type=int, default=ORIGINAL_CANVAS[0],
                 help="Canvas height of --mode original (a multiple of 16)."),
    click.option("--width", type=int, default=ORIGINAL_CANVAS[1],
                 help="Canvas width of --mode original (a multiple of 16)."),
    click.option("--tile", type=int, default=None,
                 help="--mode full: process in overlapping tiles of N x N pixels (a multiple of "
                      "16) to bound memory on large images.  [default: no tiling]"),
    click.option("--overlap", type=int, default=None,
                 help="With --tile: minimum overlap of neighbouring tiles in pixels (a multiple "
                      f"of 16, at most half the tile).  [default: {DEFAULT_OVERLAP}, or half a "
                      f"tile under {2 * DEFAULT_OVERLAP}]"),
    click.option("--device", type=click.Choice(DEVICES), default="auto",
                 help="auto: cuda, else mps, else cpu."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
                 help="fp16 on cuda/mps only; bf16 on cuda and on CPUs with bfloat16 "
                      "instructions (AVX512-BF16 or AMX). The TF-equality of --mode original "
                      "holds for fp32."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                 help="Skip (and report) images whose header declares more pixels than this, "
                      "before decoding them.  [default: $SRN_PORT_MAX_PIXELS or 40000000]"),
    click.option("--compile", "compile_", is_flag=True,
                 help="torch.compile the model (TorchInductor; the first image of each size "
                      "compiles, which takes a while). Needs a C++ compiler on the CPU, Triton "
                      "on CUDA; refused with the reason where it cannot run."),
    click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead"]),
                 default="default",
                 help="With --compile: reduce-overhead records CUDA graphs (cuda only), "
                      "for inputs of one size (video frames, tiles, a dataset of one size)."),
    click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                 help="auto: ONNX Runtime for an .onnx WEIGHTS file (written by srn-port export), "
                      "torch for anything else (a .pt2 runs as its torch.export program). "
                      "onnxruntime needs the onnx extra."),
]


def pipeline_options(command):
    for option in reversed(_PIPELINE_OPTIONS):
        command = option(command)
    return command


def check_pipeline(ctx, mode, height, width, tile, overlap, device, precision):
    """Refuse option combinations of the deblurring pipeline that cannot work, before any
    work; returns (torch device, overlap) with the overlap defaulted for --tile."""
    from ..api.deblur import (autocast_dtype, check_canvas, check_tiling, default_overlap,
                              resolve_device)

    if mode == "full":
        for name in ("height", "width"):
            if _given(ctx, name):
                raise click.UsageError(f"--{name} sets the canvas of --mode original; the "
                                       f"default --mode full runs at the image's own size.")
    else:
        if tile is not None:
            raise click.UsageError("--tile works with --mode full; --mode original runs its "
                                   "fixed canvas in one piece, as the original does.")
        try:
            check_canvas(height, width)
        except SrnPortError as exc:
            raise click.BadParameter(str(exc), param_hint="--height/--width") from None
    if tile is None and overlap is not None:
        raise click.UsageError("--overlap only applies with --tile N.")
    if tile is not None and overlap is None:
        overlap = default_overlap(tile)
    try:
        check_tiling(tile, overlap)
    except SrnPortError as exc:
        raise click.BadParameter(str(exc), param_hint="--tile/--overlap") from None
    try:
        dev = resolve_device(device)
    except SrnPortError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None
    try:
        autocast_dtype(precision, dev)  # refuses unsupported combinations before loading
    except SrnPortError as exc:
        raise click.BadParameter(str(exc), param_hint="'--precision'") from None
    return dev, overlap


def check_compile(ctx, compile_, compile_mode, dev) -> None:
    """Refuse --compile-mode without --compile, and CUDA graphs off CUDA, before any work."""
    if _given(ctx, "compile_mode") and not compile_:
        raise click.UsageError("--compile-mode applies with --compile.")
    if compile_mode == "reduce-overhead" and dev.type != "cuda":
        raise click.BadParameter(f"reduce-overhead records CUDA graphs: it needs --device cuda "
                                 f"(here {dev.type}).", param_hint="'--compile-mode'")


@click.command(short_help="Deblur image files and folders (full resolution, or the original's "
                        "pipeline).")
@click.argument("weights", type=WeightsPath(exists=True))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("-o", "--outdir", required=True, type=click.Path(path_type=Path),
              help="Folder for the results (created if missing); each keeps its input's file "
                   "name and format.")
@pipeline_options
@click.option("--compare", is_flag=True,
              help="Also write NAME_compare.png: input | output side by side.")
@click.option("--batch", type=click.IntRange(min=1), default=4,
              help="Video frames per network call (--mode full without --tile).")
@click.option("--codec", default=None,
              help="Videos: the FFmpeg encoder (PyAV, the video extra), e.g. libx265, "
                   "libvpx-vp9, ffv1.  [default: libx264, H.264 yuv420p]")
@click.option("--crf", type=int, default=None,
              help="Videos: the encoder's constant rate factor (0 lossless; lower is better "
                   "and larger).  [default: 18]")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.pass_context
def deblur(ctx, weights, inputs, outdir, mode, height, width, tile, overlap, device, precision,
           compare, max_pixels, compile_, compile_mode, backend, batch, codec, crf, force):
    """Deblur the images INPUT... (files and/or folders) with WEIGHTS into OUTDIR.

    WEIGHTS is a file written by `srn-port convert` or a TF checkpoint (folder or prefix),
    a Hub folder (convert --hub) or a Hugging Face Hub id hf://ORG/NAME.
    A folder contributes the image files directly inside it, sorted. A file that is not a
    readable image is reported and skipped; the exit code is then 1. Nothing is written if
    an output would overwrite an input or (without --force) an existing file.

    \b
    Examples:
      srn-port deblur color.pt examples/photos -o deblurred
      srn-port deblur color.pt big.tif --tile 512 --precision bf16 -o out
      srn-port deblur color.pt photo.jpg --mode original --compare -o out
      srn-port deblur color.onnx examples/photos -o deblurred   # ONNX Runtime
    """
    dev, overlap = check_pipeline(ctx, mode, height, width, tile, overlap, device, precision)
    check_compile(ctx, compile_, compile_mode, dev)
    jobs, notes = plan_jobs(list(inputs), outdir, compare, force)
    if not jobs:
        raise click.UsageError("No images to deblur in " + _listing(inputs) + ".")
    video = _check_video_options(jobs, codec, crf)
    from ..core.fileio import input_clash

    for out in (o for j in jobs for o in (j.output, j.compare) if o is not None):
        if input_clash(out, [weights]) is not None:  # WEIGHTS, its folder or prefix files
            raise click.UsageError(
                f"Writing '{out}' would write over or inside WEIGHTS '{weights}', which this "
                f"run reads; inputs are never modified (even with --force). Choose another "
                f"-o/--outdir.")

    from ..api.deblur import compile_model
    from ..api.deploy import load_inference_model
    from ..api.distributed import distributed, finish_distributed, gather

    # Under torchrun, process r of N deblurs inputs r, r + N, ... (on GPU r where there are
    # GPUs); rank 0 prints the notes and the merged summary.
    rank, world = distributed(dev.type)
    if world > 1 and dev.type == "cuda":
        import torch

        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    if rank == 0:
        for note in notes:
            click.echo(note, err=True)
    model = load_inference_model(weights, backend, device=dev)
    if compile_:
        model = compile_model(model, compile_mode, precision)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SrnPortError(f"Cannot create the output folder '{outdir}': "
                           f"{exc.strerror or exc}. Choose an -o/--outdir you can write to.") from None
    lock = FolderLock(outdir)  # one run per output folder; rank 0 holds it for all
    try:
        busy = None
        if rank == 0:
            try:
                lock.acquire()
            except FolderBusyError as exc:
                busy = str(exc)
        busy = gather(busy, world)[0]
        if busy is not None:
            if rank != 0:  # rank 0 says why
                ctx.exit(1)
            raise FolderBusyError(busy)
        mine = _run_jobs(model, jobs[rank::world], mode, height, width, tile, overlap, dev,
                         precision, compare, max_pixels, batch, video)
        parts = gather(mine, world)
    finally:
        lock.release()
        finish_distributed()
    failures = [f for part in parts for f in part[0]]
    megapixels = sum(part[1] for part in parts)
    elapsed = max(part[2] for part in parts)
    if rank != 0:
        ctx.exit(1 if failures else 0)
    done = len(jobs) - len(failures)
    rate = f"{elapsed / megapixels:.2f} s/megapixel" if megapixels else "no pixels"
    cfg = model.config
    procs = f", {world} processes" if world > 1 else ""
    runtime = "onnxruntime" if suffix_of(weights) == ".onnx" else dev.type
    click.echo(f"{done} file(s) deblurred, {len(failures)} failed, in {elapsed:.1f} s "
               f"({rate}; {cfg.variant} width {cfg.width}, {runtime}, {precision}, "
               f"--mode {mode}{procs}) -> {outdir}")
    if failures:
        click.echo(f"Error: {len(failures)} of {len(jobs)} input(s) failed: "
                   f"{_listing(failures)}", err=True)
        ctx.exit(1)


def _check_video_options(jobs, codec, crf) -> dict:
    """The video writer's options ({} for OpenCV), checked before any work: --codec/--crf
    need PyAV and an encoder it has; SRN_PORT_VIDEO_BACKEND must be a known value."""
    from ..data.video import check_encoder, video_backend

    if not any(j.output is not None and is_video(j.source) for j in jobs):
        return {}
    backend = video_backend()  # an unknown SRN_PORT_VIDEO_BACKEND is an error here
    try:
        if backend == "opencv":
            if codec is not None or crf is not None:
                if _pyav_missing():
                    check_encoder(codec, crf)  # says that PyAV is not installed
                raise SrnPortError("--codec and --crf choose PyAV's encoder, and videos are "
                                   "written by OpenCV here (SRN_PORT_VIDEO_BACKEND=opencv); "
                                   "unset it, or leave out --codec/--crf.")
            return {}
        codec, crf = check_encoder(codec, crf)
    except SrnPortError as exc:
        raise click.BadParameter(str(exc), param_hint="'--codec'/'--crf'") from None
    return {"codec": codec, "crf": crf}


def _pyav_missing() -> bool:
    from ..data.video import _import_av

    return _import_av() is None


def _run_jobs(model, jobs, mode, height, width, tile, overlap, dev, precision, compare,
              max_pixels=None, batch=1, video=None):
    import torch
    from tqdm import tqdm

    from ..api.deblur import (cpu_has_native_bf16, deblur_batch, deblur_image, read_image,
                              side_by_side, write_image)

    _quiet_opencv()
    failures: List[Path] = []
    megapixels = 0.0
    start = time.perf_counter()
    bar = tqdm(jobs, unit="img", desc="deblur", disable=None, file=sys.stderr)
    for job in bar:
        bar.set_postfix_str(job.source.name)
        tiles = {}

        def progress(n_done, total):
            if total > 1 and "bar" not in tiles:
                tiles["bar"] = tqdm(total=total, unit="tile", leave=False, disable=None,
                                    file=sys.stderr)
            if "bar" in tiles:
                tiles["bar"].update(n_done - tiles["bar"].n)

        try:
            if job.problem:
                raise SrnPortError(job.problem)
            if is_video(job.source):
                if mode == "full" and tile is None:  # frames batched: one network call each
                    def run(frames):
                        return deblur_batch(model, frames, precision=precision)
                else:
                    def run(frames):
                        return [deblur_image(model, f, mode=mode, height=height, width=width,
                                             tile=tile, overlap=overlap, precision=precision)
                                for f in frames]
                megapixels += _deblur_video(job, compare, max_pixels, run, batch, video)
                continue
            image = read_image(job.source, max_pixels=max_pixels)
            result = deblur_image(model, image, mode=mode, height=height, width=width,
                                  tile=tile, overlap=overlap, precision=precision,
                                  progress=progress)
            write_image(job.output, result)
            if compare:
                write_image(job.compare, side_by_side(image, result))
            megapixels += image.shape[0] * image.shape[1] / 1e6
        except SrnPortError as exc:
            failures.append(job.source)
            msg = str(exc)
            if str(job.source) not in msg:
                msg = f"'{job.source}': {msg}"
            tqdm.write(f"error: {msg}", file=sys.stderr)
        except torch.OutOfMemoryError:
            failures.append(job.source)
            lower = ("fp16" if dev.type != "cpu" else "bf16" if cpu_has_native_bf16() else None)
            tqdm.write(f"error: '{job.source}': out of memory on {dev.type}; try --tile 512 "
                       f"(or smaller){f', or --precision {lower}' if lower else ''}.",
                       file=sys.stderr)
        finally:
            if "bar" in tiles:
                tiles["bar"].close()
    bar.close()
    return failures, megapixels, time.perf_counter() - start


def _deblur_video(job, compare: bool, max_pixels, deblur, batch: int = 1,
                  options=None) -> float:
    """Deblur a video into ``job.output`` (same frame times, size, audio with PyAV), ``batch``
    frames per call of ``deblur`` (a list of frames in, their results out), then, with
    ``compare``, write input | output side by side; returns the megapixels processed.
    ``options``: the writer's ``codec`` and ``crf`` (PyAV)."""
    from tqdm import tqdm

    from ..data.images import side_by_side
    from ..data.video import Video, write_video

    options = options or {}
    with Video(job.source, max_pixels=max_pixels) as video:
        tqdm.write(f"note: '{job.source}': {video.frames} frame(s) at {video.fps:g} fps; "
                   f"{_video_note(video, options)}", file=sys.stderr)
        bar = tqdm(total=video.frames or None, unit="frame", leave=False, disable=None,
                   file=sys.stderr)

        def frames():
            chunk = []
            for frame in video:
                chunk.append(frame)
                if len(chunk) == batch:
                    yield from deblur(chunk)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                yield from deblur(chunk)
                bar.update(len(chunk))

        try:
            n = write_video(job.output, frames(), video.fps, video.width, video.height,
                            source=video, **options)
        finally:
            bar.close()
        fps, w, h = video.fps, video.width, video.height
    if compare:
        with Video(job.source) as left, Video(job.output) as right:
            write_video(job.compare, (side_by_side(a, b) for a, b in zip(left, right)), fps,
                        2 * w, h, source=left, **options)
    return n * w * h / 1e6


def _video_note(video, options) -> str:
    if video.backend == "opencv":
        why = ("pip install 'srn-port[video]' to keep it" if _pyav_missing() else
               "SRN_PORT_VIDEO_BACKEND=opencv; unset it to keep it")
        return f"audio is not carried over (OpenCV reads and writes frames only; {why})"
    audio = (f"{len(video.audio)} audio stream(s) copied" if video.audio else "no audio")
    dropped = (f", {len(video.dropped)} other stream(s) ({', '.join(video.dropped)}) not "
               f"carried over" if video.dropped else "")
    crf = f", crf {options['crf']}" if options.get("crf") is not None else ""
    return f"{audio}{dropped}; written with {options.get('codec')}{crf} (PyAV)"


def _quiet_opencv():
    # srn-port reports unreadable files itself; OpenCV's own log lines would repeat it.
    try:
        import cv2.utils.logging as cv_log

        cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):  # pragma: no cover - older OpenCV builds
        pass

"""The GPU side of tools/bench.py (``--device cuda``): what srn-port does on one CUDA GPU.

Measured (each after warm-up, median of ``--gpu-reps`` timed calls, CUDA-synchronised):

* inference, eager NHWC (channels_last) width-32 models with slim-initialised weights (the
  speed does not depend on the values), per variant, size (256x256, 720x1280) and batch
  (frames: a gray/lstm frame is its 3 planes), in fp32 with TF32 off (the TF-exact path),
  TF32, fp16 autocast and bf16 autocast; and compiled (torch.compile, default mode, fp16);
  milliseconds per call and per frame, frames/s, peak GPU memory
  (``torch.cuda.max_memory_allocated``), the model's FLOPs per frame
  (:mod:`srn_port.core.flops`), the achieved TFLOP/s and its ratio to the GPU's dense peak
  for that arithmetic (datasheet figures of known GPUs, or ``--peak-tflops``);
* training: one step (forward, the original loss, backward, TFAdam) at the paper's setting,
  batch 16 of 256x256 crops, color and lstm, fp32 (TF32 off) and bf16 autocast; and what
  the paper's 523k steps take at that speed against the paper's 72 hours (data loading not
  included: the step alone);
* fidelity of TF32 / fp16 / bf16 against fp32 with the trained example model
  (examples/trained/color) on the four photos of examples/photos: share of identical
  8-bit values, max difference, PSNR against the fp32 output; on the synthetic held-out
  set: PSNR/SSIM against the sharp images, fp32 and each reduced precision.

Nothing here has been run by the session that wrote it (no GPU was available); run it
where one is (tools/gpu_check.sh runs a short version), and read its JSON.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER_STEPS, PAPER_HOURS = 523_000, 72.0
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
#: Dense (no sparsity) datasheet peaks in TFLOP/s, by a pattern of the device name (SXM
#: parts; the H200 NVL and H100 PCIe are slower and not listed: pass --peak-tflops).
#: fp32 is the CUDA cores' rate; tf32/fp16/bf16 the tensor cores' (fp32 accumulation).
KNOWN_PEAKS = {
    r"\bH200\b(?!.*NVL)": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    r"\bH100 80GB HBM3\b": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    r"\bA100\b": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    r"\bL4\b": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
}


def add_arguments(p) -> None:
    g = p.add_argument_group("GPU bench (--device cuda)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: srn-port against TF on this CPU (the default bench); cuda: the "
                        "GPU bench (no TF needed)")
    g.add_argument("--batches", default="1,8", help="frames per call (cuda)")
    g.add_argument("--gpu-precisions", default=",".join(PRECISIONS),
                   help="fp32 (TF32 off), tf32, fp16, bf16 (cuda)")
    g.add_argument("--gpu-reps", type=int, default=10, help="timed calls per measurement")
    g.add_argument("--gpu-warmup", type=int, default=3)
    g.add_argument("--no-compile", action="store_true", help="skip the compiled column")
    g.add_argument("--compile-variants", default=None,
                   help="variants to compile (default: all measured; compiling takes minutes)")
    g.add_argument("--train-steps", type=int, default=10,
                   help="timed training steps per variant (0: no training figures)")
    g.add_argument("--train-precisions", default="fp32,bf16")
    g.add_argument("--no-fidelity", action="store_true")
    g.add_argument("--peak-tflops", default=None,
                   help="the GPU's dense peaks, e.g. fp32=67,tf32=494.7,fp16=989.4,bf16=989.4 "
                        "(default: a datasheet table of known GPUs)")
    g.add_argument("--plan", action="store_true",
                   help="print what would be measured and exit (checks the options)")
    g.add_argument("--gpu-width", type=int, default=32, help=argparse_suppress())
    g.add_argument("--gpu-bench-on-cpu", action="store_true", help=argparse_suppress())
    g.add_argument("--fidelity-limit", type=int, default=None, help=argparse_suppress())


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _csv(text: str):
    return [t for t in (text or "").split(",") if t]


def plan(args) -> dict:
    """The measurements the options ask for (validated)."""
    variants = _csv(args.variants)
    bad = [v for v in variants if v not in ("color", "gray", "lstm")]
    precisions = _csv(args.gpu_precisions)
    bad += [q for q in precisions if q not in PRECISIONS]
    bad += [q for q in _csv(args.train_precisions) if q not in PRECISIONS]
    if bad:
        raise SystemExit(f"Error: unknown variant/precision {bad}; variants are color, gray, "
                         f"lstm and precisions {', '.join(PRECISIONS)}.")
    try:
        sizes = [tuple(int(s) for s in hw.split("x")) for hw in _csv(args.sizes)]
        batches = [int(b) for b in _csv(args.batches)]
    except ValueError:
        raise SystemExit("Error: --sizes are HxW (e.g. 256x256,720x1280) and --batches "
                         "integers (e.g. 1,8).") from None
    if any(len(s) != 2 or min(s) < 16 or s[0] % 16 or s[1] % 16 for s in sizes) or \
            any(b < 1 for b in batches):
        raise SystemExit("Error: sizes must be HxW multiples of 16, batches >= 1.")
    compiled = [] if args.no_compile else (_csv(args.compile_variants)
                                           if args.compile_variants is not None else variants)
    return {"variants": variants, "sizes": sizes, "batches": batches,
            "precisions": precisions, "compiled": compiled,
            "train": {"variants": [v for v in ("color", "lstm")],
                      "precisions": _csv(args.train_precisions),
                      "steps": args.train_steps, "batch": 16, "crop": 256},
            "fidelity": not args.no_fidelity, "fidelity_limit": args.fidelity_limit,
            "width": args.gpu_width}


def _peaks(name: str, override):
    if override:
        try:
            return {k: float(v) for k, v in (kv.split("=") for kv in override.split(","))}, \
                "--peak-tflops"
        except ValueError:
            raise SystemExit("Error: --peak-tflops is e.g. fp32=67,fp16=989.4") from None
    for pattern, peaks in KNOWN_PEAKS.items():
        if re.search(pattern, name):
            return peaks, f"datasheet dense peaks for {name}"
    return {}, "unknown GPU: pass --peak-tflops for the ratio to the peak"


def machine(torch, device) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None}
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(gpu=prop.name, capability=f"{prop.major}.{prop.minor}",
                    memory_gib=round(prop.total_memory / 2**30, 1))
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info["gpu"] = "none (CPU smoke run of the GPU bench)"
    return info


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(torch, variant, width, device):
    from srn_port.api.train import slim_init
    from srn_port.core.network import SRNConfig
    from srn_port.nn.model import SRN

    model = SRN(SRNConfig(variant, width)).eval()
    slim_init(model, 0)
    return model.to_channels_last().to(device)


def _timed(torch, device, call, warmup, reps) -> dict:
    for _ in range(warmup):
        call()
    _sync(torch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        _sync(torch, device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mib": peak}


def inference(torch, args, p, device, peaks, rows: list, save) -> list:
    """Eager columns of every variant first, then the compiled ones (compiling takes
    minutes: a time limit cuts those, not the eager table); ``save()`` after each row."""
    from srn_port.core.flops import frame_flops
    from srn_port.nn.precision import numerics

    eager = [(v, q, False) for v in p["variants"] for q in p["precisions"]]
    compiled_runs = [(v, "fp16" if device.type == "cuda" else "fp32", True)
                     for v in p["compiled"]]
    for variant, precision, compiled in eager + compiled_runs:
        model = _model(torch, variant, p["width"], device)
        planes = 1 if variant == "color" else 3
        channels = model.config.channels
        net = model
        if compiled:
            net.compile()  # in place (nn.Module.compile); a fresh model per column
        for h, w in p["sizes"]:
            for batch in p["batches"]:
                x = torch.rand(batch * planes, channels, h, w, device=device)

                def call():
                    with torch.inference_mode(), numerics(device.type, precision):
                        net(x)
                try:
                    t = _timed(torch, device, call, args.gpu_warmup, args.gpu_reps)
                except torch.cuda.OutOfMemoryError:
                    rows.append({"variant": variant, "precision": precision,
                                 "compiled": compiled, "size": f"{h}x{w}", "batch": batch,
                                 "error": "out of GPU memory"})
                    torch.cuda.empty_cache()
                    continue
                flops = frame_flops(model.config, h, w) * batch
                tflops = flops / t["median_s"] / 1e12
                peak = peaks.get(precision)
                rows.append({"variant": variant, "precision": precision,
                             "compiled": compiled, "size": f"{h}x{w}", "batch": batch,
                             "ms_per_call": 1e3 * t["median_s"],
                             "ms_per_frame": 1e3 * t["median_s"] / batch,
                             "frames_per_s": batch / t["median_s"],
                             "peak_mib": t["peak_mib"],
                             "tflop_per_frame": frame_flops(model.config, h, w) / 1e12,
                             "tflops": tflops,
                             "share_of_peak": tflops / peak if peak else None})
                print(_row_text(rows[-1]), flush=True)
                save()
                del x
        del net
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _row_text(r) -> str:
    name = f"{r['variant']:<6} {r['precision'] + (' compiled' if r['compiled'] else ''):<14} " \
           f"{r['size']:>9} b{r['batch']:<3}"
    if "error" in r:
        return f"{name} {r['error']}"
    share = f"{100 * r['share_of_peak']:.1f}% of peak" if r["share_of_peak"] else "peak ?"
    mem = f"{r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else "-"
    return (f"{name} {r['ms_per_frame']:9.2f} ms/frame {r['frames_per_s']:8.1f} frames/s "
            f"{mem:>10} {r['tflops']:7.1f} TFLOP/s ({share})")


def training(torch, args, p, device) -> list:
    from srn_port.core.network import SRNConfig
    from srn_port.nn.loss import srn_loss
    from srn_port.nn.model import SRN
    from srn_port.nn.optim import TFAdam
    from srn_port.nn.precision import amp_dtype, ieee_fp32

    t = p["train"]
    rows = []
    if t["steps"] <= 0:
        return rows
    crop = t["crop"] if device.type == "cuda" else 32
    batch = t["batch"] if device.type == "cuda" else 2
    for variant in t["variants"]:
        for precision in t["precisions"]:
            if precision == "tf32":
                continue
            model = SRN(SRNConfig(variant, p["width"])).train().to(device)
            opt = TFAdam(model.parameters())
            c = model.config.channels
            blur = torch.rand(batch, c, crop, crop, device=device)
            sharp = torch.rand(batch, c, crop, crop, device=device)
            dtype = amp_dtype(precision)

            def step():
                opt.zero_grad(set_to_none=True)
                with ieee_fp32():
                    if dtype is None:
                        loss = srn_loss(model(blur), sharp)
                    else:
                        with torch.autocast(device.type, dtype=dtype):
                            outs = model(blur)
                        loss = srn_loss([o.float() for o in outs], sharp)
                    loss.backward()
                opt.step()
            timed = _timed(torch, device, step, 2, t["steps"])
            hours = timed["median_s"] * PAPER_STEPS / 3600
            rows.append({"variant": variant, "precision": precision, "batch": batch,
                         "crop": crop, "s_per_step": timed["median_s"],
                         "peak_mib": timed["peak_mib"], "paper_steps": PAPER_STEPS,
                         "hours_for_paper_steps": hours, "paper_hours": PAPER_HOURS})
            print(f"train {variant:<6} {precision:<5} batch {batch} {crop}x{crop}: "
                  f"{1e3 * timed['median_s']:.1f} ms/step -> {PAPER_STEPS} steps in "
                  f"{hours:.1f} h (paper: {PAPER_HOURS:.0f} h)", flush=True)
            del model, opt
    return rows


def fidelity(torch, p, device) -> dict:
    """Reduced precision against fp32 with the trained example model."""
    import numpy as np

    from srn_port.api.deblur import deblur_image, read_image
    from srn_port.api.weights import load_model
    from srn_port.data import synthetic
    from srn_port.data.metrics import psnr, ssim
    from srn_port.nn.precision import numerics

    model = load_model(REPO / "examples" / "trained" / "color", device=device)
    reduced = [q for q in ("tf32", "fp16", "bf16") if q in p["precisions"]]

    def run(image, precision):
        # deblur_image's own precisions are fp32 (TF32 off), fp16 and bf16; TF32 is the
        # fp32 path with TF32 switched on around it
        if precision == "tf32":
            with numerics(device.type, "tf32"):
                return _deblur_tf32(deblur_image, model, image)
        return deblur_image(model, image, precision=precision)

    limit = p["fidelity_limit"]
    photos = {}
    for path in sorted((REPO / "examples" / "photos").glob("*.png"))[:limit]:
        image = read_image(path)
        ref = run(image, "fp32").astype(np.int64)
        photos[path.name] = {}
        for q in reduced:
            out = run(image, q).astype(np.int64)
            photos[path.name][q] = {"identical_share": float((out == ref).mean()),
                                    "max_diff": int(np.abs(out - ref).max()),
                                    # None: identical (infinite PSNR)
                                    "psnr_vs_fp32": _finite(psnr(out.astype(np.uint8),
                                                                 ref.astype(np.uint8)))}
    held = {}
    try:
        pairs = synthetic.held_out_set(24 if limit is None else limit, 256, seed=2018)
    except ImportError as exc:
        held["skipped"] = f"needs scikit-image for the held-out photos ({exc})"
        pairs = []
    for q in ["fp32"] + reduced:
        if not pairs:
            break
        outs = [run(blur, q) for blur, _ in pairs]
        held[q] = {"psnr": float(np.mean([psnr(o, s) for o, (_, s) in zip(outs, pairs)])),
                   "ssim": float(np.mean([ssim(o, s) for o, (_, s) in zip(outs, pairs)]))}
    return {"model": "examples/trained/color (width 8)", "photos": photos, "held_out": held}


def _finite(v: float):
    return v if v != float("inf") else None


def _deblur_tf32(deblur_image, model, image):
    """deblur_image in fp32 with TF32 left on: its fp32 path switches TF32 off itself, so the
    switch is bypassed here for the duration."""
    import contextlib

    import srn_port.api.deblur as d

    saved = d.ieee_fp32
    d.ieee_fp32 = contextlib.nullcontext
    try:
        return deblur_image(model, image, precision="fp32")
    finally:
        d.ieee_fp32 = saved


def run(args) -> int:
    p = plan(args)
    if args.plan:
        print(json.dumps(p, indent=1))
        return 0
    import torch

    if args.gpu_bench_on_cpu:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(f"Error: --device cuda: CUDA is not available here (torch {torch.__version__}, "
              f"CUDA build: {torch.version.cuda or 'no'}, GPUs visible: "
              f"{torch.cuda.device_count()}). Run the GPU bench on a machine with an NVIDIA "
              f"GPU and a CUDA build of torch (tools/gpu_check.sh runs a short one).",
              file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda", 0)
    info = machine(torch, device)
    peaks, peak_source = _peaks(info.get("gpu", ""), args.peak_tflops)
    info.update(peaks_tflops=peaks, peaks_source=peak_source)
    print(f"machine: {info}", flush=True)
    out = args.json or (Path(os.environ["OUT"]) / "bench_gpu.json" if os.environ.get("OUT")
                        else None)
    result = {"machine": info, "plan": p, "inference": [], "training": [], "complete": False}

    def save():
        # after every measurement: a run cut short by a time limit keeps what it measured
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(out) + ".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            os.replace(tmp, out)

    # the cheap sections first, the compiled columns (minutes of compiling) last
    result["training"] = training(torch, args, p, device)
    save()
    if p["fidelity"]:
        result["fidelity"] = fidelity(torch, p, device)
        print(f"fidelity: {json.dumps(result['fidelity'], indent=1)}", flush=True)
        save()
    inference(torch, args, p, device, peaks, result["inference"], save)
    result["complete"] = True
    save()
    if out is not None:
        print(f"written: {out}")
    return 0

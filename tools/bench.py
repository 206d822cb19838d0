#!/usr/bin/env python
"""Benchmark srn-port against the TF original, in one run on one machine.

Every measurement runs in its own child process (so one framework's memory does not
inflate the other's peak RSS), with the same thread count on every side:

* inference: the TF reference graph (steady-state ``session.run`` after warm-up) and
  srn-port (eager PyTorch, steady state) on the same full-width checkpoint and the same
  input, per variant and size (gray/lstm run the three-plane batch, as in use);
  minimum and median seconds, ratio TF/srn-port, megapixels per second, peak RSS, and
  per timed forward the minor page faults and system CPU seconds (fresh memory the kernel
  maps and zeroes); whether TF ran its oneDNN kernels and pool (TF decides from the CPU
  kind; ``--tf-onednn on|off`` forces it); ``--compare-reuse`` adds srn-port with
  activation-buffer reuse off (``srn_port/nn/pool.py``) as a further side;
  and ONNX Runtime on the model exported once to ``<work-dir>/<variant>.onnx``
  (``intra_op_num_threads`` = ``--threads``, sequential execution), ratio TF/ONNX Runtime;
  skipped with a note when onnxruntime (the [onnx] extra) is not installed;
* conversion: ``srn-port convert`` of a full training checkpoint (Adam slots included)
  as a whole process, against loading the same checkpoint through TensorFlow, also as a
  whole process;
* training: one step of the original training op (TF: AdamOptimizer, polynomial decay,
  ``sess.run([train_op, loss])``) against srn-port's (srn_loss, backward, TFAdam) on the
  same full-width checkpoint and the same batch, steady state after warm-up, peak RSS;
* reduced precision: bf16 (and fp16 where the device supports it) speed, and the PSNR of
  the reduced-precision output against fp32.

Prints a table and writes JSON. Needs the [tf] extra. Example::

    python tools/bench.py --threads 2 --json out/bench/bench.json

``--device cuda`` runs the GPU bench instead (tools/bench_gpu.py: fp32/TF32/fp16/bf16 and
compiled inference, training steps at the paper's setting, half-precision fidelity; no TF
needed); it fails with a clear message where CUDA is missing. ``--plan`` prints what it
would measure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu  # noqa: E402  (the --device cuda side, tools/bench_gpu.py)
VARIANTS = ("color", "gray", "lstm")
SIZES = ((256, 256), (720, 1280))


def _batch(variant: str) -> int:
    return 1 if variant == "color" else 3


def _peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: the latter survives
    fork+exec, so a child would report its parent's peak if that was higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _input(variant: str, h: int, w: int):
    import numpy as np

    channels = 3 if variant == "color" else 1
    return np.random.default_rng(0).random((_batch(variant), h, w, channels), dtype=np.float32)


# -- child processes ---------------------------------------------------------------------


def _timed(run, warmup: int, reps: int) -> dict:
    """Steady-state timings of ``run()`` after ``warmup`` calls, with each timed call's
    minor page faults and system CPU seconds (getrusage of this process): fresh memory
    that the kernel maps and zeroes shows up there, not in the kernels' own time."""
    out, times, faults, sys_s = None, [], [], []
    for i in range(warmup + reps):
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = run()
        dt, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
        if i >= warmup:
            times.append(dt)
            faults.append(r1.ru_minflt - r0.ru_minflt)
            sys_s.append(r1.ru_stime - r0.ru_stime)
    return {"out": out, "times": times, "faults": faults, "sys_s": sys_s,
            "peak_rss_mb": _peak_rss_mb()}


def _result(timed: dict, **extra) -> dict:
    return {k: v for k, v in timed.items() if k != "out"} | extra


def child_tf(args) -> dict:
    import numpy as np

    from srn_port.core.network import SRNConfig
    from srn_port.reference.graph import ReferenceModel

    x = _input(args.variant, args.height, args.width)
    cfg = SRNConfig(args.variant, 32)
    ref = ReferenceModel(args.checkpoint, cfg, x.shape, threads=args.threads, record=False)
    timed = _timed(lambda: ref.sess.run(ref.outputs[-1], feed_dict={ref.inputs: x}),
                   args.warmup, args.reps)
    if args.save_output:
        np.save(args.save_output, timed["out"])
    return _result(timed, onednn=_tf_onednn())


def _tf_onednn() -> bool:
    """Whether TF runs its oneDNN kernels (and allocator); TF decides from the CPU kind
    unless TF_ENABLE_ONEDNN_OPTS says."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


def child_torch(args) -> dict:
    import numpy as np
    import torch

    import contextlib

    from srn_port import load_model

    torch.set_num_threads(args.threads)
    x_np = _input(args.variant, args.height, args.width)
    model = load_model(args.weights, channels_last=bool(args.channels_last))
    model.reuse_buffers = bool(args.reuse_buffers)
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2)
    amp = None
    if args.precision == "bf16":  # as `srn-port deblur --precision bf16`: a bf16 model
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    elif args.precision == "fp16":  # as deblur: autocast (fp16 lacks bf16's range)
        amp = torch.float16
    with torch.inference_mode(), (torch.autocast("cpu", dtype=amp) if amp
                                  else contextlib.nullcontext()):
        timed = _timed(lambda: model(x)[-1], args.warmup, args.reps)
        pooled = model.use_pool(x.contiguous(memory_format=model.memory_format))
    if args.save_output:
        np.save(args.save_output,
                timed["out"].float().permute(0, 2, 3, 1).contiguous().numpy())
    return _result(timed, reuse_buffers=pooled)


def child_onnxruntime(args) -> dict:
    """ONNX Runtime alone (numpy, no torch in this process), on the exported .onnx."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.weights, options, providers=["CPUExecutionProvider"])
    finest = session.get_outputs()[-1].name
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(
        _input(args.variant, args.height, args.width).transpose(0, 3, 1, 2))}
    timed = _timed(lambda: session.run([finest], feed)[0], args.warmup, args.reps)
    if args.save_output:
        np.save(args.save_output, np.ascontiguousarray(timed["out"].transpose(0, 2, 3, 1)))
    return _result(timed)


def child_tf_load(args) -> dict:
    from srn_port.reference.graph import import_tf

    tf, _ = import_tf()
    reader = tf.train.load_checkpoint(str(args.checkpoint))
    n = sum(reader.get_tensor(k).size for k in reader.get_variable_to_shape_map())
    return {"elements": int(n), "peak_rss_mb": _peak_rss_mb()}


def _train_batch(args):
    import numpy as np

    channels = 3 if args.variant == "color" else 1
    rng = np.random.default_rng(0)
    sharp = rng.random((args.batch, args.height, args.width, channels), dtype=np.float32)
    blur = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1).astype(np.float32)
    return blur, sharp


def child_tf_train(args) -> dict:
    from srn_port.core.network import SRNConfig
    from srn_port.reference.training import tf_train_steps

    times = []
    batch = _train_batch(args)
    tf_train_steps(args.checkpoint, SRNConfig(args.variant, 32), [batch] * (args.warmup + args.reps),
                   total_steps=10**6, threads=args.threads, times=times)
    return {"times": times[args.warmup:], "peak_rss_mb": _peak_rss_mb()}


def child_torch_train(args) -> dict:
    import torch

    from srn_port import TFAdam, load_model, srn_loss

    torch.set_num_threads(args.threads)
    blur, sharp = (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
                   for a in _train_batch(args))
    model = load_model(args.weights, channels_last=bool(args.channels_last)).train()
    blur, sharp = (t.contiguous(memory_format=model.memory_format) for t in (blur, sharp))
    opt = TFAdam(model.parameters(), lr=1e-4)
    times = []
    for i in range(args.warmup + args.reps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        srn_loss(model(blur), sharp).backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    return {"times": times, "peak_rss_mb": _peak_rss_mb()}


CHILDREN = {"tf": child_tf, "torch": child_torch, "onnxruntime": child_onnxruntime,
            "tf-load": child_tf_load, "tf-train": child_tf_train,
            "torch-train": child_torch_train}


def run_child(kind: str, env_extra=None, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", kind]
    for key, value in kw.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def time_process(cmd, reps: int) -> list:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        times.append(time.perf_counter() - t)
    return times


# -- the benchmark -----------------------------------------------------------------------


def onnx_exports(variants, ckpts, work: Path):
    """(variant -> .onnx exported once into ``work``, or None; why ONNX Runtime is skipped)."""
    import importlib.util

    missing = [m for m in ("onnxruntime", "onnx", "onnxscript")
               if importlib.util.find_spec(m) is None]
    if missing:
        return None, (f"{', '.join(missing)} not installed (pip install 'srn-port[onnx]')")
    from srn_port.api.deploy import export_model

    files = {}
    for variant in variants:
        out = work / f"{variant}.onnx"
        if not out.exists():
            print(f"exporting {ckpts[variant][1]} to {out} (once)", flush=True)
            export_model(ckpts[variant][1], out)
        files[variant] = out
    return files, None


def psnr(test, ref) -> float:
    """PSNR of ``test`` against ``ref`` with the reference's own dynamic range as the peak
    (the random full-width checkpoints do not produce [0, 1] images; for an image model's
    [0, 1] output this is the usual PSNR)."""
    from srn_port.data.synthetic import psnr as psnr_db

    return psnr_db(test, ref, peak=float(ref.max()) - float(ref.min()))


def trained_bf16_psnr(threads: int) -> dict:
    """bf16 against fp32 on what deblurring really sees: the trained example checkpoint
    (examples/trained/color) on a photo of examples/photos, through `deblur_image`."""
    import numpy as np
    import torch

    from srn_port import deblur_image, load_model
    from srn_port.data.images import read_image
    from srn_port.data.synthetic import psnr as psnr_db

    torch.set_num_threads(threads)
    photo = REPO / "examples" / "photos" / "07.png"
    ckpt = REPO / "examples" / "trained" / "color"
    if not photo.exists() or not (ckpt / "checkpoint").exists():
        return {"skipped": f"needs {photo} and {ckpt}"}
    model = load_model(ckpt)
    image = read_image(photo)
    ref = deblur_image(model, image, precision="fp32").astype(np.float64)
    out = deblur_image(model, image, precision="bf16").astype(np.float64)
    return {"image": photo.name, "checkpoint": str(ckpt.relative_to(REPO)),
            "psnr_8bit_db": psnr_db(out, ref), "max_abs_levels": float(np.abs(out - ref).max())}


def machine_info(threads: int) -> dict:
    import torch

    from srn_port.api.deblur import cpu_has_native_bf16

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads,
            # the vector ISA PyTorch's CPU kernels dispatch to, and bf16 in hardware: the
            # figures hold for CPUs of this kind
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_native_bf16()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import tensorflow as tf  # noqa: F401  (version only)
        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    try:
        import onnxruntime  # version only
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def summarize(times) -> dict:
    return {"min_s": min(times), "median_s": statistics.median(times), "reps": len(times)}


def summarize_side(res: dict) -> dict:
    """Times, and per timed forward the median minor page faults and system CPU seconds."""
    return {**summarize(res["times"]), "peak_rss_mb": res["peak_rss_mb"],
            "faults": statistics.median(res["faults"]), "sys_s": statistics.median(res["sys_s"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=3, help="timed runs per child process")
    p.add_argument("--rounds", type=int, default=2,
                   help="child processes per side, alternating TF and srn-port")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES))
    p.add_argument("--precisions", default="bf16", help="reduced precisions to measure")
    p.add_argument("--work-dir", type=Path, default=REPO / "out" / "bench")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip-conversion", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--tf-onednn", choices=("default", "on", "off"), default="default",
                   help="TF side: TF's own choice for this CPU (default; on for CPUs with "
                        "AVX-512 VNNI/BF16 or AMX, off elsewhere), or forced through "
                        "TF_ENABLE_ONEDNN_OPTS")
    p.add_argument("--no-onnxruntime", action="store_true", help="skip the ONNX Runtime column")
    p.add_argument("--compare-reuse", action="store_true",
                   help="also run srn-port with activation-buffer reuse off (fp32)")
    p.add_argument("--train", default="",
                   help="also time training steps at BATCHxSIZE, e.g. 4x128 (default: off)")
    # child-process options
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--height", type=int, help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--save-output", help=argparse.SUPPRESS)
    p.add_argument("--reuse-buffers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--channels-last", type=int, default=1,
                   help="srn-port side: NHWC layout (1, default) or NCHW (0)")
    bench_gpu.add_arguments(p)
    args = p.parse_args(argv)

    if args.device == "cuda" or args.gpu_bench_on_cpu:
        return bench_gpu.run(args)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    from srn_port.core.network import SRNConfig
    from srn_port.api.convert import convert
    from srn_port.reference.graph import make_checkpoint

    variants = [v for v in args.variants.split(",") if v]
    sizes = [tuple(int(s) for s in hw.split("x")) for hw in args.sizes.split(",") if hw]
    precisions = [q for q in args.precisions.split(",") if q]
    if "bf16" in precisions and not machine_info(args.threads)["native_bf16"]:
        print("bf16: skipped, this CPU has no bfloat16 instructions (srn-port refuses it here)")
        precisions.remove("bf16")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    result = {"machine": {**machine_info(args.threads), "tf_onednn": args.tf_onednn},
              "inference": [], "precision": [], "conversion": None}
    print(f"machine: {result['machine']}")

    ckpts = {}
    for variant in variants:
        folder = work / f"ckpt_{variant}"
        if not (folder / "checkpoint").exists():
            make_checkpoint(folder, SRNConfig(variant, 32), seed=0)
        weights = work / f"{variant}.pt"
        if not weights.exists():
            convert(folder, weights)
        ckpts[variant] = (folder / "deblur.model-523000", weights)

    onnx_files = None
    if not (args.skip_inference or args.no_onnxruntime):
        onnx_files, why = onnx_exports(variants, ckpts, work)
        if why:
            result["onnxruntime_skipped"] = why
            print(f"ONNX Runtime: skipped, {why}")

    common = dict(threads=args.threads, reps=args.reps, warmup=args.warmup)
    pt_common = dict(common, channels_last=args.channels_last)
    tf_env = {} if args.tf_onednn == "default" else {
        "TF_ENABLE_ONEDNN_OPTS": "1" if args.tf_onednn == "on" else "0"}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in (() if args.skip_inference else variants):
            prefix, weights = ckpts[variant]
            for h, w in sizes:
                ref_out = Path(tmp) / f"tf_{variant}_{h}x{w}.npy"
                pt_out = Path(tmp) / f"pt_{variant}_{h}x{w}.npy"
                ort_out = Path(tmp) / f"ort_{variant}_{h}x{w}.npy"
                # Alternate the sides over rounds, so that a slow spell of the machine
                # (shared VMs vary by tens of percent) does not land on one side only.
                def fresh():
                    return {"times": [], "faults": [], "sys_s": [], "peak_rss_mb": 0.0}

                sides = [(fresh(), "tf", dict(checkpoint=prefix, save_output=ref_out,
                                              env_extra=tf_env, **common)),
                         (fresh(), "torch", dict(weights=weights, save_output=pt_out,
                                                 **pt_common))]
                if onnx_files:
                    sides.append((fresh(), "onnxruntime",
                                  dict(weights=onnx_files[variant], save_output=ort_out,
                                       **common)))
                if args.compare_reuse:
                    sides.append((fresh(), "torch", dict(weights=weights, reuse_buffers=0,
                                                         **pt_common)))
                for _ in range(args.rounds):
                    for res, kind, kw in sides:
                        one = run_child(kind, variant=variant, height=h, width=w, **kw)
                        for key in ("times", "faults", "sys_s"):
                            res[key] += one[key]
                        res["peak_rss_mb"] = max(res["peak_rss_mb"], one["peak_rss_mb"])
                        for key in ("onednn", "reuse_buffers"):
                            if key in one:
                                res[key] = one[key]
                tf_res, pt_res = sides[0][0], sides[1][0]
                mp = h * w / 1e6  # one RGB image (gray/lstm: its three planes)
                import numpy as np
                ref_arr, pt_arr = np.load(ref_out), np.load(pt_out)
                row = {"variant": variant, "size": f"{h}x{w}", "batch": _batch(variant),
                       "tf": {**summarize_side(tf_res), "onednn": tf_res.get("onednn")},
                       "srn_port": {**summarize_side(pt_res),
                                    "reuse_buffers": pt_res.get("reuse_buffers")},
                       "max_abs_err_vs_tf": float(np.abs(ref_arr - pt_arr).max())}
                if args.compare_reuse:
                    row["srn_port_no_reuse"] = summarize_side(sides[-1][0])
                row["speedup_tf_over_srn_port"] = row["tf"]["median_s"] / row["srn_port"]["median_s"]
                row["tf"]["megapixels_per_s"] = mp / row["tf"]["median_s"]
                row["srn_port"]["megapixels_per_s"] = mp / row["srn_port"]["median_s"]
                ort_text = ""
                if onnx_files:
                    ort_res = sides[2][0]
                    row["onnxruntime"] = {
                        **summarize_side(ort_res),
                        "megapixels_per_s": mp / statistics.median(ort_res["times"]),
                        "max_abs_err_vs_tf": float(np.abs(ref_arr - np.load(ort_out)).max())}
                    row["speedup_tf_over_onnxruntime"] = (row["tf"]["median_s"]
                                                          / row["onnxruntime"]["median_s"])
                    ort_text = (f"ONNX Runtime {row['onnxruntime']['median_s']:.3f}s ratio "
                                f"{row['speedup_tf_over_onnxruntime']:.2f} ")
                result["inference"].append(row)
                print(f"{variant:5} {h}x{w}: TF {row['tf']['median_s']:.3f}s "
                      f"srn-port {row['srn_port']['median_s']:.3f}s "
                      f"ratio {row['speedup_tf_over_srn_port']:.2f} {ort_text}"
                      f"RSS TF {row['tf']['peak_rss_mb']:.0f} MB / srn-port "
                      f"{row['srn_port']['peak_rss_mb']:.0f} MB"
                      + (f" / ONNX Runtime {row['onnxruntime']['peak_rss_mb']:.0f} MB"
                         if onnx_files else "")
                      + f"; faults per forward TF {row['tf']['faults']:.0f} / srn-port "
                        f"{row['srn_port']['faults']:.0f}"
                      + (f"; no reuse {row['srn_port_no_reuse']['median_s']:.3f}s, "
                         f"{row['srn_port_no_reuse']['faults']:.0f} faults, RSS "
                         f"{row['srn_port_no_reuse']['peak_rss_mb']:.0f} MB"
                         if args.compare_reuse else ""), flush=True)
                for precision in precisions:
                    q_out = Path(tmp) / f"{precision}_{variant}_{h}x{w}.npy"
                    try:
                        q_res = run_child("torch", variant=variant, height=h, width=w,
                                          weights=weights, precision=precision,
                                          save_output=q_out, **pt_common)
                    except RuntimeError as exc:
                        result["precision"].append({"variant": variant, "size": f"{h}x{w}",
                                                    "precision": precision,
                                                    "error": str(exc).splitlines()[-1]})
                        continue
                    q_row = {"variant": variant, "size": f"{h}x{w}", "precision": precision,
                             **summarize(q_res["times"]), "peak_rss_mb": q_res["peak_rss_mb"],
                             "psnr_vs_fp32_db": psnr(np.load(q_out), pt_arr),
                             "speedup_tf_over_it": row["tf"]["median_s"] / statistics.median(q_res["times"])}
                    result["precision"].append(q_row)
                    print(f"      {precision}: {q_row['median_s']:.3f}s ratio TF/{precision} "
                          f"{q_row['speedup_tf_over_it']:.2f} PSNR vs fp32 "
                          f"{q_row['psnr_vs_fp32_db']:.1f} dB", flush=True)

    result["training"] = []
    if args.train:
        batch, size = (int(v) for v in args.train.split("x"))
        for variant in variants:
            prefix, weights = ckpts[variant]
            kw = dict(common, variant=variant, batch=batch, height=size, width=size)
            runs = {"tf": [], "pt": []}
            for _ in range(args.rounds):  # alternating, as above
                runs["tf"].append(run_child("tf-train", checkpoint=prefix, **kw))
                runs["pt"].append(run_child("torch-train", weights=weights,
                                            channels_last=args.channels_last, **kw))
            row = {"variant": variant, "batch": batch, "size": f"{size}x{size}"}
            for side, rs in runs.items():
                row[side] = {**summarize([t for r in rs for t in r["times"]]),
                             "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
            row["speedup_tf_over_srn_port"] = row["tf"]["median_s"] / row["pt"]["median_s"]
            result["training"].append(row)
            print(f"training step {variant} {batch}x{size}x{size}: TF {row['tf']['median_s']:.3f}s, "
                  f"srn-port {row['pt']['median_s']:.3f}s, TF/srn-port "
                  f"{row['speedup_tf_over_srn_port']:.2f}x")

    if "bf16" in precisions:
        result["bf16_trained_photo"] = trained_bf16_psnr(args.threads)
        print(f"bf16 vs fp32 on a photo, trained example: {result['bf16_trained_photo']}")

    if not args.skip_conversion:
        prefix, _ = ckpts[variants[0]]
        tmp_out = Path(tempfile.mkdtemp())
        cmds = {"tf": [sys.executable, __file__, "--child", "tf-load", "--checkpoint",
                       str(prefix)]}
        for fmt in ("safetensors", "pt"):
            cmds[fmt] = [sys.executable, "-m", "srn_port", "convert", str(prefix),
                         str(tmp_out / f"m.{fmt}"), "--force", "-q"]
        times = {k: [] for k in cmds}
        for _ in range(max(args.reps * args.rounds, 3)):  # interleaved, as above
            for k, cmd in cmds.items():
                times[k] += time_process(cmd, 1)
        tf_t = times.pop("tf")
        result["conversion"] = {"checkpoint": str(prefix), "variant": variants[0],
                                "tf_load_checkpoint": summarize(tf_t), "srn_port_convert": {}}
        for fmt, conv_t in times.items():
            result["conversion"]["srn_port_convert"][fmt] = {
                **summarize(conv_t), "speedup": statistics.median(tf_t) / statistics.median(conv_t)}
            print(f"conversion ({variants[0]}, full checkpoint with Adam slots) to .{fmt}: "
                  f"srn-port convert {statistics.median(conv_t):.2f}s, TF load "
                  f"{statistics.median(tf_t):.2f}s, ratio "
                  f"{statistics.median(tf_t) / statistics.median(conv_t):.1f}x")
        import_t = time_process([sys.executable, "-c", "import torch"], 3)
        result["conversion"]["python_import_torch_s"] = summarize(import_t)

    print()
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _faults(side: dict) -> str:
    return f"{side['faults']:.0f} / {side['sys_s']:.2f}" if "faults" in side else "?"


def format_table(result: dict) -> str:
    m = result["machine"]
    ort = any("onnxruntime" in r for r in result["inference"])  # all rows or none
    head = ["variant", "size", "batch", "TF median s", "srn-port median s", "TF/srn-port"]
    head += ["ONNX Runtime median s", "TF/ONNX Runtime"] if ort else []
    head += ["srn-port MP/s", "TF peak RSS MB", "srn-port peak RSS MB"]
    head += ["ONNX Runtime peak RSS MB"] if ort else []
    head += ["max abs err"] + (["ONNX Runtime max abs err"] if ort else [])
    head += ["page faults / sys s per forward, TF", "srn-port"]
    nr = any("srn_port_no_reuse" in r for r in result["inference"])
    head += ["srn-port without buffer reuse: median s / faults / peak RSS MB"] if nr else []
    lines = [f"Machine: {m.get('cpu')} ({m.get('cpu_capability')}, bf16 instructions: "
             f"{'yes' if m.get('native_bf16') else 'no'}), {m.get('cores')} cores, "
             f"threads={m['threads']} (every side); torch {m.get('torch')}, "
             f"TF {m.get('tensorflow', '?')}"
             + (f", ONNX Runtime {m.get('onnxruntime', '?')}" if ort else ""), "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in result["inference"]:
        o = r.get("onnxruntime")
        cells = [r["variant"], r["size"], r["batch"], f"{r['tf']['median_s']:.3f}",
                 f"{r['srn_port']['median_s']:.3f}", f"{r['speedup_tf_over_srn_port']:.2f}x"]
        cells += [f"{o['median_s']:.3f}", f"{r['speedup_tf_over_onnxruntime']:.2f}x"] if o else []
        cells += [f"{r['srn_port']['megapixels_per_s']:.2f}", f"{r['tf']['peak_rss_mb']:.0f}",
                  f"{r['srn_port']['peak_rss_mb']:.0f}"]
        cells += [f"{o['peak_rss_mb']:.0f}"] if o else []
        cells += [f"{r['max_abs_err_vs_tf']:.1e}"] + ([f"{o['max_abs_err_vs_tf']:.1e}"] if o else [])
        cells += [f"{_faults(r['tf'])}", f"{_faults(r['srn_port'])}"]
        n = r.get("srn_port_no_reuse")
        cells += [f"{n['median_s']:.3f} / {n['faults']:.0f} / {n['peak_rss_mb']:.0f}"] if n else []
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if result["inference"]:
        tf_dnn = {r["tf"].get("onednn") for r in result["inference"]}
        reuse = {r["srn_port"].get("reuse_buffers") for r in result["inference"]}
        lines += ["", f"TF ran with oneDNN (and its buffer pool): "
                      f"{'/'.join('yes' if v else 'no' for v in sorted(tf_dnn, key=str))}"
                      f"{' (forced: ' + m['tf_onednn'] + ')' if m.get('tf_onednn', 'default') != 'default' else ''}; "
                      f"srn-port reused activation buffers: "
                      f"{'/'.join('yes' if v else 'no' for v in sorted(reuse, key=str))}."]
    if result.get("onnxruntime_skipped"):
        lines += ["", f"ONNX Runtime: skipped, {result['onnxruntime_skipped']}."]
    if result["precision"]:
        lines += ["", "| variant | size | precision | median s | TF/it | PSNR vs fp32 dB (peak = output range) |",
                  "|---|---|---|---|---|---|"]
        for r in result["precision"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | {r['size']} | {r['precision']} | "
                             f"unsupported: {r['error']} | | |")
            else:
                lines.append(f"| {r['variant']} | {r['size']} | {r['precision']} | "
                             f"{r['median_s']:.3f} | {r['speedup_tf_over_it']:.2f}x | "
                             f"{r['psnr_vs_fp32_db']:.1f} |")
    if result.get("training"):
        lines += ["", "| training step | batch | crop | TF median s | srn-port median s | "
                      "TF/srn-port | TF peak RSS MB | srn-port peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["training"]:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['size']} | "
                         f"{r['tf']['median_s']:.3f} | {r['pt']['median_s']:.3f} | "
                         f"{r['speedup_tf_over_srn_port']:.2f}x | {r['tf']['peak_rss_mb']:.0f} | "
                         f"{r['pt']['peak_rss_mb']:.0f} |")
    t = result.get("bf16_trained_photo")
    if t and "psnr_8bit_db" in t:
        lines += ["", f"bf16 against fp32 through `srn-port deblur` on {t['image']} (720x1280) "
                      f"with the trained example: PSNR {t['psnr_8bit_db']:.1f} dB, max "
                      f"difference {t['max_abs_levels']:.0f} levels (8-bit)."]
    c = result.get("conversion")
    if c:
        lines += ["", f"Conversion of a full training checkpoint ({c['variant']}, width 32, with "
                      f"Adam slots), whole processes, median of {c['tf_load_checkpoint']['reps']}:",
                  "", "| process | median s | min s | TF / it |", "|---|---|---|---|",
                  f"| TensorFlow `tf.train.load_checkpoint` + read all | "
                  f"{c['tf_load_checkpoint']['median_s']:.2f} | "
                  f"{c['tf_load_checkpoint']['min_s']:.2f} | 1.0x |"]
        for fmt, r in c["srn_port_convert"].items():
            lines.append(f"| `srn-port convert` to .{fmt} | {r['median_s']:.2f} | "
                         f"{r['min_s']:.2f} | {r['speedup']:.1f}x |")
        t = c.get("python_import_torch_s")
        if t:
            lines.append(f"| (for scale: `python -c 'import torch'`) | {t['median_s']:.2f} | "
                         f"{t['min_s']:.2f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

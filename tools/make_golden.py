#!/usr/bin/env python
"""Write the golden files: the original TF graph's tensors for srn-port's TF-free regression.

    python tools/make_golden.py                      # golden/{color,gray,lstm}.h5 + golden/ckpt/*
    python tools/make_golden.py --variant lstm       # one of them
    python tools/make_golden.py --checkpoint examples/trained/color --name trained-color

For a variant, a released-like checkpoint is made with the TF reference
(``srn_port.reference.graph.make_checkpoint``: seeded weights, one Adam step, Adam slots,
global step) at a small width, kept in ``golden/ckpt/<variant>/`` (index, data and a
``checkpoint`` file with a relative path; no ``.meta``), and the TF graph restored from that
folder is run on a seeded random input. With ``--checkpoint``, an existing checkpoint is used
where it lies (its path relative to the golden folder is recorded). Either way the file holds
the input, every node of every level and the level outputs (layout NCHW), and the provenance
(see ``srn_port.parity.golden``). Needs TensorFlow and tf-slim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from srn_port import __version__  # noqa: E402
from srn_port.core.network import N_LEVELS, SRNConfig  # noqa: E402
from srn_port.core.network import OUTPUT_NODE, level_graph  # noqa: E402
from srn_port.parity import golden as G  # noqa: E402
from srn_port.core.fileio import atomic_write  # noqa: E402

#: Small so that golden/ stays a few MB (width 32 would be ~27 MB per checkpoint alone); the
#: released width is covered by the live-TF tests.
DEFAULT_WIDTH = 4
#: Non-square, and every level even in both directions (16x24, 32x48, 64x96), so the
#: stride-2 convolutions pad asymmetrically at every level: the case naive ports get wrong.
DEFAULT_SIZE = (64, 96)
#: Checkpoint seed per variant (make_checkpoint); the input seed is derived from it.
SEEDS = {"color": 1, "gray": 2, "lstm": 3}
INPUT_SEED_OFFSET = 1000
#: How the original runs each variant: colour as one RGB image, gray/lstm as the R, G, B
#: planes in a batch of 3.
BATCH = {"color": 1, "gray": 3, "lstm": 3}
#: gzip level 4 after byte shuffling, one chunk per tensor, HDF5 1.10 file format (compact
#: chunk indexes). Measured on the color golden: 2.56 MB stored plainly, 2.47 MB with gzip
#: in the default (1.8) format, where per-chunk B-trees eat the gain; 2.07 MB (-19%) like
#: this. Lossless: the ReLU zeros and the shared exponent bytes compress; gzip 9 saves
#: another 0.6% only.
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
HDF5_LIBVER = ("v110", "latest")


def parse_size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 64x96; got {text!r}") from None
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"H and W must be positive multiples of 16; got {text}")
    return h, w


def tf_versions():
    from importlib.metadata import version

    import tensorflow as tf

    return tf.__version__, version("tf-slim")


def write_checkpoint_state(folder: Path, prefix_name: str) -> None:
    """The ``checkpoint`` text file, with a path relative to its folder (what
    ``tf.train.Checkpoint`` writes; the Saver would store the absolute temp path)."""
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "{prefix_name}"\n'
                                       f'all_model_checkpoint_paths: "{prefix_name}"\n')


def make_variant_checkpoint(out: Path, config: SRNConfig, seed: int) -> Path:
    """A fresh released-like checkpoint in ``out/ckpt/<variant>/``; returns its prefix."""
    from srn_port.reference.graph import make_checkpoint

    dest = out / "ckpt" / config.variant
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{config.variant}.") as tmp:
        prefix = make_checkpoint(tmp, config, seed=seed)
        keep = [p for p in Path(tmp).iterdir()
                if p.name.startswith(prefix.name + ".") and not p.name.endswith(".meta")]
        staged = Path(tmp) / "staged"
        staged.mkdir()
        for p in keep:
            p.rename(staged / p.name)
        write_checkpoint_state(staged, prefix.name)
        if dest.exists():
            shutil.rmtree(dest)  # golden/ckpt/<variant> is this tool's own output
        staged.rename(dest)
    return dest / prefix.name


def golden_input(config: SRNConfig, size, seed: int) -> np.ndarray:
    """The fixed NHWC input: uniform noise, so every pixel (and any shift) matters."""
    rng = np.random.default_rng(seed)
    return rng.random((BATCH[config.variant], *size, config.channels), dtype=np.float32)


def write_golden(path: Path, config: SRNConfig, prefix: Path, x_nhwc: np.ndarray, attrs: dict,
                 threads=None) -> dict:
    """Run the TF graph from ``prefix`` on ``x_nhwc`` and write ``path``; returns sizes."""
    import h5py

    from srn_port.reference.graph import ReferenceModel

    with ReferenceModel(prefix, config, x_nhwc.shape, threads=threads) as ref:
        run = ref.run(x_nhwc)
    names = [n.name for n in level_graph(config)]
    missing = [(lvl, n) for lvl in range(N_LEVELS) for n in names
               if (lvl, n) not in run.activations]
    if missing:
        raise SystemExit(f"the TF reference did not record {missing[:5]}")
    raw = [0]

    def nchw(a):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float32).transpose(0, 3, 1, 2))
        raw[0] += a.nbytes
        return a

    def put(group, name, array):
        a = nchw(array)
        group.create_dataset(name, data=a, chunks=a.shape, track_times=False, **COMPRESSION)

    def write(tmp):
        with h5py.File(tmp, "w", libver=HDF5_LIBVER, track_order=True) as f:
            put(f, "input", x_nhwc)
            for lvl in range(N_LEVELS):
                grp = f.create_group(f"level{lvl}", track_order=True)
                for n in names:
                    put(grp, n, run.activations[(lvl, n)])
            outs = f.create_group("outputs")
            for lvl in range(N_LEVELS):
                assert np.array_equal(run.outputs[lvl], run.activations[(lvl, OUTPUT_NODE)])
                outs[f"level{lvl}"] = f[f"level{lvl}/{OUTPUT_NODE}"]  # hard link, stored once
            for k, v in attrs.items():
                f.attrs[k] = v

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    path.chmod(0o644)  # mkstemp's 0600 is no mode for a shared file
    return {"raw_bytes": raw[0], "file_bytes": path.stat().st_size}


def provenance(name, config, prefix: Path, ckpt_ref: Path, out: Path, x_nhwc, regenerate,
               seed=None, input_seed=None) -> dict:
    """Root attributes; ``ckpt_ref`` is the checkpoint folder (or prefix) to record."""
    tf_version, slim_version = tf_versions()
    return {
        "format": G.FORMAT, "format_version": G.FORMAT_VERSION, "layout": G.LAYOUT,
        "name": name, "variant": config.variant, "width": config.width,
        "batch": int(x_nhwc.shape[0]),
        "input_shape": np.array([x_nhwc.shape[0], x_nhwc.shape[3], *x_nhwc.shape[1:3]],
                                dtype=np.int64),
        "input_seed": -1 if input_seed is None else int(input_seed),
        "checkpoint_seed": -1 if seed is None else int(seed),
        "checkpoint": os.path.relpath(ckpt_ref, out),
        "checkpoint_prefix": prefix.name,
        "checkpoint_sha256": json.dumps(G.checkpoint_hashes(prefix), sort_keys=True),
        "tf_version": tf_version, "tf_slim_version": slim_version,
        "numpy_version": np.__version__, "srn_port_version": __version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()} {platform.processor()}".strip(),
        "node_order": json.dumps([n.name for n in level_graph(config)]),
        "command": " ".join(["python tools/make_golden.py", shlex.join(sys.argv[1:])]).strip(),
        "regenerate": regenerate,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _options(args) -> str:
    """Non-default options, so that the recorded regeneration command reproduces the file."""
    opts = []
    if args.width != DEFAULT_WIDTH:
        opts.append(f"--width {args.width}")
    if tuple(args.size) != DEFAULT_SIZE:
        opts.append(f"--size {args.size[0]}x{args.size[1]}")
    return "".join(" " + o for o in opts)


def report(path: Path, sizes: dict, t0: float) -> None:
    saved = 1 - sizes["file_bytes"] / max(sizes["raw_bytes"], 1)
    print(f"wrote {path}: {sizes['file_bytes'] / 1e6:.2f} MB ({sizes['raw_bytes'] / 1e6:.2f} MB "
          f"of float32 before gzip+shuffle, {100 * saved:.0f}% saved) in {time.time() - t0:.1f}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", choices=sorted(SEEDS),
                   help="variant to (re)make; repeatable; default: all three")
    p.add_argument("--checkpoint", type=Path,
                   help="make a golden for this existing TF checkpoint (folder or prefix) "
                        "instead of generating one; needs --name")
    p.add_argument("--name", help="golden file name (without .h5) for --checkpoint")
    p.add_argument("--out", type=Path, default=REPO / "golden",
                   help="golden folder (default: the repository's golden/)")
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                   help=f"width of generated checkpoints (default {DEFAULT_WIDTH})")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE,
                   help="input HxW (default %dx%d)" % DEFAULT_SIZE)
    p.add_argument("--threads", type=int, default=None, help="TF intra/inter-op threads")
    args = p.parse_args(argv)
    if (args.checkpoint is None) != (args.name is None):
        p.error("--checkpoint and --name go together")
    if args.checkpoint is not None and args.variant:
        p.error("--variant makes a new checkpoint; with --checkpoint the variant is detected")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    if args.checkpoint is not None:
        from srn_port.core.checkpoint import CheckpointReader
        from srn_port.core.naming import detect_config

        t0 = time.time()
        with CheckpointReader(args.checkpoint) as reader:
            prefix = reader.prefix
            config = detect_config({k: tuple(reader.info(k).shape) for k in reader.keys()})
        input_seed = INPUT_SEED_OFFSET + SEEDS[config.variant]
        x = golden_input(config, args.size, input_seed)
        # Record what the user named: a folder (its `checkpoint` file picks the step, and
        # is hashed too, so a newer save makes the golden stale) or a prefix.
        named = args.checkpoint.resolve()
        ckpt_ref = named if named.is_dir() else prefix
        regen = G.regenerate_command(args.name, os.path.relpath(ckpt_ref, REPO)) + _options(args)
        attrs = provenance(args.name, config, prefix, ckpt_ref, out, x, regen,
                           input_seed=input_seed)
        path = out / f"{args.name}.h5"
        report(path, write_golden(path, config, prefix, x, attrs, args.threads), t0)
        return 0

    for variant in args.variant or sorted(SEEDS, key=list(SEEDS).index):
        t0 = time.time()
        config = SRNConfig(variant, args.width)
        seed = SEEDS[variant]
        prefix = make_variant_checkpoint(out, config, seed)
        input_seed = INPUT_SEED_OFFSET + seed
        x = golden_input(config, args.size, input_seed)
        regen = G.regenerate_command(variant) + _options(args)
        attrs = provenance(variant, config, prefix, prefix.parent, out, x, regen, seed, input_seed)
        path = out / f"{variant}.h5"
        report(path, write_golden(path, config, prefix, x, attrs, args.threads), t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

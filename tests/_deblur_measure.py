"""Measure how far tiled ``--mode full`` output is from untiled (PSNR, 8-bit).

    python tests/_deblur_measure.py WEIGHTS [--tiles 256,512] [--overlaps 0,32,64,128] [PHOTO...]

WEIGHTS: a converted file or TF checkpoint; or ``random:VARIANT:WIDTH[:SEED]`` for a
seeded random model. PHOTO defaults to the four photos of examples/photos.
Prints one row per (photo, tile, overlap): PSNR of tiled vs untiled (inf = identical),
max abs difference in levels, and the share of pixels that differ.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from srn_port.api.deblur import deblur_image, read_image  # noqa: E402


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def load(spec: str):
    if spec.startswith("random:"):
        from srn_port import SRN, SRNConfig

        parts = spec.split(":")
        variant, width = parts[1], int(parts[2])
        torch.manual_seed(int(parts[3]) if len(parts) > 3 else 0)
        return SRN(SRNConfig(variant, width)).eval()
    from srn_port import load_model

    return load_model(spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("photos", nargs="*")
    p.add_argument("--tiles", default="256,512")
    p.add_argument("--overlaps", default="0,32,64,128")
    args = p.parse_args(argv)
    photos = args.photos or sorted(str(f) for f in (REPO / "examples" / "photos").glob("*.png"))
    model = load(args.weights)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"model {args.weights}: {model.config}")
    print(f"{'photo':<10} {'tile':>5} {'overlap':>7} {'PSNR dB':>8} {'max':>4} {'differ %':>8} "
          f"{'s':>6}")
    for photo in photos:
        img = read_image(photo)
        t = time.time()
        ref = deblur_image(model, img)
        print(f"{Path(photo).name:<10} {'none':>5} {'':>7} {'':>8} {'':>4} {'':>8} "
              f"{time.time() - t:6.1f}", flush=True)
        for tile in (int(s) for s in args.tiles.split(",")):
            for ov in (int(s) for s in args.overlaps.split(",")):
                if ov >= tile:
                    continue
                t = time.time()
                out = deblur_image(model, img, tile=tile, overlap=ov)
                d = np.abs(out.astype(int) - ref.astype(int))
                print(f"{Path(photo).name:<10} {tile:>5} {ov:>7} {psnr8(out, ref):8.2f} "
                      f"{d.max():>4} {100 * np.mean(d > 0):8.3f} {time.time() - t:6.1f}",
                      flush=True)


if __name__ == "__main__":
    main()

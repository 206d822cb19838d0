#!/usr/bin/env python
"""Write the synthetic held-out set as a GoPro-layout dataset, for ``srn-port evaluate``.

The pairs are :func:`srn_port.data.synthetic.held_out_set` (default: the 24 pairs of 256x256,
seed 2018, that tools/eval_trained.py and the README's tables use), 8-bit PNGs:
``OUT/blur/NNN.png`` next to ``OUT/sharp/NNN.png`` (the set is made in 8 bits, so the files
hold exactly what tools/eval_trained.py scores).

    python tools/make_heldout.py out/heldout
    srn-port evaluate examples/trained/color out/heldout
"""

from __future__ import annotations

from pathlib import Path

import click

from srn_port.core.fileio import atomic_write
from srn_port.data import synthetic
from srn_port.data.images import encode_image

EVAL_SEED = 2018


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n_images", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--seed", type=int, default=EVAL_SEED, show_default=True)
@click.option("--photos/--no-photos", default=True, show_default=True,
              help="Every other pair a crop of a held-out photograph (needs scikit-image).")
def main(out: Path, n_images: int, size: int, seed: int, photos: bool):
    """Write the held-out set to OUT/blur and OUT/sharp."""
    pairs = synthetic.held_out_set(n_images, size, seed=seed, photos=photos)
    for sub in ("blur", "sharp"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, (blur, sharp) in enumerate(pairs):
        for sub, image in (("blur", blur), ("sharp", sharp)):
            data = encode_image(image, ".png")
            atomic_write(out / sub / f"{i:03d}.png", lambda tmp: Path(tmp).write_bytes(data))
    click.echo(f"wrote {len(pairs)} pairs of {size}x{size} (seed {seed}) to {out}/blur and "
               f"{out}/sharp")


if __name__ == "__main__":
    main()

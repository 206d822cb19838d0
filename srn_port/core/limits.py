"""Bounds on what a file may claim, checked against the file's real size or these limits
before anything is allocated, so that memory and time stay bounded whatever a file says.

Each limit can be raised (or lowered) with an environment variable; ``srn-port deblur``
also takes ``--max-pixels``. The README's "Reliability" section lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import SrnPortError


@dataclass(frozen=True)
class Limit:
    env: str
    default: int
    what: str

    def value(self) -> int:
        raw = os.environ.get(self.env)
        if raw is None or raw == "":
            return self.default
        try:
            value = int(raw)
        except ValueError:
            raise SrnPortError(f"The environment variable {self.env}={raw!r} is not an integer; "
                               f"it sets {self.what} (default {self.default}).") from None
        if value < 1:
            raise SrnPortError(f"The environment variable {self.env}={value} must be positive; "
                               f"it sets {self.what} (default {self.default}).")
        return value


#: A TF checkpoint's .index (SRN's is ~10 KB; the index of a model with a million
#: variables is tens of MB). It is read whole, so a larger file is refused unread.
INDEX_BYTES = Limit("SRN_PORT_MAX_INDEX_BYTES", 256 * 2**20, "the largest .index file read")
#: Data files of one checkpoint (TF writes one per device; SRN's have 1).
SHARDS = Limit("SRN_PORT_MAX_SHARDS", 4096, "the most data files a checkpoint may have")
#: Dimensions of one tensor (SRN's have at most 4; numpy's own limit is 32 or 64).
TENSOR_RANK = Limit("SRN_PORT_MAX_TENSOR_RANK", 32, "the most dimensions of a tensor")
#: Pixels of one image (40 MP: a 8K photo is 33 MP). Larger images are reported and
#: skipped; the untiled network needs about 0.3 GB per megapixel at the released width.
PIXELS = Limit("SRN_PORT_MAX_PIXELS", 40_000_000, "the most pixels of an image to deblur")
#: Bytes of one image file (read whole before decoding).
IMAGE_BYTES = Limit("SRN_PORT_MAX_IMAGE_BYTES", 2**30, "the largest image file read")
#: Bytes of a datalist (read line by line; the pairs it lists are kept, measured 620 bytes
#: each for GoPro-style 63-byte lines: about 10x the list). GoPro's training list is 0.2 MB
#: (2,103 pairs); 64 MiB is about a million pairs and 0.7 GB in memory.
DATALIST_BYTES = Limit("SRN_PORT_MAX_DATALIST_BYTES", 64 * 2**20, "the largest datalist read")
#: Bytes of an exported model (.pt2) file, read whole into memory before it is checked and
#: opened (srn-port's full-width export is ~30 MB).
MODEL_BYTES = Limit("SRN_PORT_MAX_MODEL_BYTES", 2**30, "the largest exported model file read")

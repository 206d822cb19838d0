"""srn-port: SRN-Deblur in PyTorch, TF-exact, with a TF-free checkpoint converter.

Public API::

    srn_port.load_model(path, device="cpu")   # converted file or TF checkpoint -> SRN (eval)
    srn_port.read_checkpoint(path)            # TF checkpoint -> {name: numpy array}, no TF
    srn_port.SRN, srn_port.SRNConfig          # the model and its config
    srn_port.tf_resize_bilinear(x, size, align_corners=False, half_pixel_centers=False)
"""

__version__ = "0.1.0"

from .config import SRNConfig  # noqa: E402
from .model import SRN, capture_activations  # noqa: E402
from .ops import tf_resize_bilinear  # noqa: E402
from .weights import load_model  # noqa: E402


def read_checkpoint(path, step=None):
    """All tensors of a TF checkpoint as {name: numpy array}, read without TensorFlow."""
    from .checkpoint import read_checkpoint as _read

    return _read(path, step=step)


__all__ = ["SRN", "SRNConfig", "capture_activations", "load_model", "read_checkpoint",
           "tf_resize_bilinear", "__version__"]

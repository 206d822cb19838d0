"""srn-port: SRN-Deblur in PyTorch, TF-exact, with a TF-free checkpoint converter.

Public API::

    srn_port.load_model(path, device="cpu")   # converted file or TF checkpoint -> SRN (eval)
    srn_port.read_checkpoint(path)            # TF checkpoint -> {name: numpy array}, no TF
    srn_port.SRN, srn_port.SRNConfig          # the model and its config
    srn_port.tf_resize_bilinear(x, size, align_corners=False, half_pixel_centers=False)
    srn_port.deblur_image(model, image)       # one image array in, deblurred array out

Names are imported on first use, so ``srn-port convert`` (and the checkpoint reader) run
without importing torch at all.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "SRN": ".model",
    "capture_activations": ".model",
    "SRNConfig": ".config",
    "tf_resize_bilinear": ".ops",
    "load_model": ".weights",
    "read_checkpoint": ".checkpoint",
    "deblur_image": ".deblur",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'srn_port' has no attribute {name!r}")


def __dir__():
    return __all__

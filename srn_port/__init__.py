"""srn-port: SRN-Deblur in PyTorch, TF-exact, with a TF-free checkpoint converter.

Public API::

    srn_port.load_model(path, device="cpu")   # converted file or TF checkpoint -> SRN (eval)
    srn_port.read_checkpoint(path)            # TF checkpoint -> {name: numpy array}, no TF
    srn_port.SRN, srn_port.SRNConfig          # the model and its config
    srn_port.tf_resize_bilinear(x, size, align_corners=False, half_pixel_centers=False)
    srn_port.deblur_image(model, image)       # one image array in, deblurred array out
    srn_port.srn_loss(outputs, sharp)         # the original multi-scale training loss
    srn_port.TFAdam(params, lr)               # Adam with TF's update rule

The package is layered; each layer imports only those below it (checked by import-linter
contracts in the tests, see ``.importlinter``)::

    cli        the srn-port command (click)
    parity     srn-port diff: goldens, comparison, diagnosis
    api        load_model, deblur_image, conversion to files        reference  the TF graph
    nn         TF-exact PyTorch ops and the model       data  images, synthetic blur
    core       torch-free: the network's description, naming, checkpoint reader,
               conversion to arrays, weights-file format, tolerances, errors

Names here are imported on first use, so ``import srn_port`` (and the CLI, and a
``.safetensors`` conversion) need no torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "SRN": ".nn.model",
    "capture_activations": ".nn.model",
    "SRNConfig": ".core.network",
    "tf_resize_bilinear": ".nn.ops",
    "load_model": ".api.weights",
    "read_checkpoint": ".core.checkpoint",
    "deblur_image": ".api.deblur",
    "srn_loss": ".nn.loss",
    "TFAdam": ".nn.optim",
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

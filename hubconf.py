"""torch.hub entry point of srn-port::

    model = torch.hub.load("path/to/srn-port", "srn", source="local", weights=WEIGHTS)

WEIGHTS is anything the srn-port commands take: a converted ``.pt``/``.safetensors`` file,
a TF checkpoint (folder or prefix), a Hub folder (``srn-port convert CKPT OUT --hub``) or
``hf://org/name`` (the 'hub' extra). Without weights the model of ``variant`` and ``width``
is initialised as the original trains it (slim's Xavier-uniform weights, zero biases,
``seed``). The model is returned in eval mode.
"""

dependencies = ["torch", "numpy", "safetensors"]


def srn(weights=None, variant=None, width=None, device="cpu", seed=0):
    """SRN-Deblur (Tao et al., CVPR 2018) in PyTorch, TF-exact: see srn-port's README.

    ``weights``: where the weights are (see above); its variant and width are the file's,
    and a ``variant``/``width`` given too must agree with them. ``device``: where the model
    runs. ``seed``: the initialisation without weights.
    """
    from srn_port.core.errors import SrnPortError
    from srn_port.core.network import RELEASED_WIDTH, SRNConfig

    if weights is not None:
        from srn_port.api.weights import load_model

        model = load_model(weights, device=device)
        config = model.config
        if (variant is not None and variant != config.variant) or (
                width is not None and width != config.width):
            raise SrnPortError(
                f"torch.hub.load(..., 'srn'): weights '{weights}' are SRN {config.variant} of "
                f"width {config.width}, not the variant={variant!r}, width={width!r} asked "
                f"for. Leave variant and width out with weights (they come from the file).")
        return model
    from srn_port.api.train import slim_init
    from srn_port.nn.model import SRN

    model = SRN(SRNConfig(variant=variant or "color",
                          width=RELEASED_WIDTH if width is None else width))
    slim_init(model, seed)
    return model.to(device).eval()

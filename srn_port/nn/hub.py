"""``SRN.from_pretrained`` / ``save_pretrained`` / ``push_to_hub``: huggingface_hub's
``ModelHubMixin`` protocol over srn-port's Hub folders (:mod:`srn_port.core.hubfolder`).

:class:`HubMixin` is ``ModelHubMixin`` with srn-port's ``_save_pretrained`` and
``_from_pretrained`` when huggingface_hub is installed (the ``hub`` extra), and otherwise
a plain class whose methods say how to install it: the model itself never needs it.

Loading reads only ``model.safetensors`` (never pickles), checked against the variant and
width the folder's ``config.json`` declares; ``config.json`` is read by srn-port, bounded,
before anything else (huggingface_hub's generic ``from_pretrained`` would read it whole).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..core import hubfolder
from ..core.errors import ModelFileError
from ..core.network import SRNConfig
from ..core.weightfile import load_safetensors

try:
    from huggingface_hub import ModelHubMixin as _Base

    HAVE_HUB = True
except ImportError:  # the 'hub' extra is optional
    _Base = object
    HAVE_HUB = False

#: Copied from a model's ``metadata`` into a saved folder, when present.
_KEPT = ("source", "step", "ema", "srn_port_version", "variables_mapped", "variables_dropped")


def _local_folder(model_id, revision, cache_dir, force_download, local_files_only,
                  token) -> Path:
    """A local folder as is; ``org/name`` or ``hf://org/name`` through huggingface_hub."""
    ref = hubfolder.hub_id(model_id)
    if ref is None and os.path.isdir(model_id):
        return Path(model_id)
    repo_id, rev = ref if ref is not None else (str(model_id), None)
    return hubfolder.download(repo_id, revision or rev, cache_dir=cache_dir,
                              force_download=force_download, local_files_only=local_files_only,
                              token=token)


def _metadata(model) -> Dict[str, Any]:
    meta = dict(getattr(model, "metadata", None) or {})
    out = {"variant": model.config.variant, "width": model.config.width}
    out.update({k: meta[k] for k in _KEPT if meta.get(k) is not None})
    return out


class HubMixin(_Base):
    """The Hub methods of :class:`srn_port.nn.model.SRN` (see the module's doc)."""

    if HAVE_HUB:
        def __init_subclass__(cls, **kwargs):
            kwargs.setdefault("library_name", hubfolder.LIBRARY_NAME)
            kwargs.setdefault("license", "mit")
            kwargs.setdefault("repo_url", hubfolder.ORIGINAL_REPO)
            kwargs.setdefault("paper_url", hubfolder.PAPER)
            kwargs.setdefault("pipeline_tag", "image-to-image")
            kwargs.setdefault("tags", ["image-deblurring", "srn-deblur"])
            super().__init_subclass__(**kwargs)
    else:
        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
            hubfolder.require_hub("SRN.from_pretrained")

        def save_pretrained(self, save_directory, **kwargs):
            hubfolder.require_hub("SRN.save_pretrained")

        def push_to_hub(self, repo_id, **kwargs):
            hubfolder.require_hub("SRN.push_to_hub")

    if HAVE_HUB:
        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, *, force_download: bool = False,
                            token=None, cache_dir=None, local_files_only: bool = False,
                            revision: Optional[str] = None, **model_kwargs):
            """The model of a Hub folder: a local folder, ``org/name`` or ``hf://org/name``
            (downloaded by huggingface_hub, or taken from its cache; ``HF_HUB_OFFLINE=1``
            stays offline), in eval mode. ``map_location`` (default ``"cpu"``) and
            ``channels_last`` (default True, as :func:`srn_port.load_model`) are accepted.

            The folder's config.json is read by srn-port (bounded, checked) rather than by
            ``ModelHubMixin.from_pretrained``, which then calls :meth:`_from_pretrained`
            the same way."""
            return cls._from_pretrained(
                model_id=os.fspath(pretrained_model_name_or_path)
                if isinstance(pretrained_model_name_or_path, os.PathLike)
                else str(pretrained_model_name_or_path),
                revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token, **model_kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: Optional[str], cache_dir,
                         force_download: bool, local_files_only: bool, token,
                         map_location="cpu", channels_last: bool = True, **model_kwargs):
        if model_kwargs:
            raise TypeError(f"SRN.from_pretrained got unexpected arguments "
                            f"{sorted(model_kwargs)}; the model's variant and width come from "
                            f"the folder's config.json.")
        folder = _local_folder(model_id, revision, cache_dir, force_download, local_files_only,
                               token)
        weights, config = hubfolder.check_folder(folder)
        arrays, meta = load_safetensors(weights)
        bad = [k for k, v in arrays.items() if not np.isfinite(v).all()]
        if bad:
            raise ModelFileError(f"'{weights}': weights hold NaN or infinite values "
                                 f"({', '.join(bad[:5])}), so the model would output garbage. "
                                 f"Publish the weights of a run from before it diverged.")
        model = cls(SRNConfig(variant=config.variant, width=config.width))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True)
        model.metadata = dict(meta)
        if channels_last:
            model.to_channels_last()
        return model.to(map_location).eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors (srn-port's format), config.json and a model card; the card
        says that no parity result was computed (``srn-port convert --hub`` computes it)."""
        save_directory = Path(save_directory)
        meta = _metadata(self)
        arrays = {k: v.detach().to("cpu", torch.float32).contiguous().numpy()
                  for k, v in self.state_dict().items()}
        from ..core.weightfile import save_safetensors

        save_safetensors(arrays, meta, save_directory / hubfolder.WEIGHTS_NAME, force=True)
        config = hubfolder.hub_config(meta, (getattr(self, "metadata", None) or {})
                                      .get("source_sha256"))
        import json

        (save_directory / hubfolder.CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        card = save_directory / hubfolder.CARD_NAME
        if not card.exists():
            card.write_text(hubfolder.model_card(
                config, "Not computed: this folder was written by `SRN.save_pretrained`. "
                        "Check it with `srn-port diff FOLDER` (against the golden of its "
                        "variant and width, or `--tf CHECKPOINT`).",
                "Written by `SRN.save_pretrained` from a model in memory."))

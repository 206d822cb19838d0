"""The WEIGHTS argument of every command that reads a model: a path (a converted file, a
TF checkpoint, a Hub folder, an exported model) or a Hugging Face Hub id ``hf://org/name``,
which is fetched here (huggingface_hub's cache; ``HF_HUB_OFFLINE=1`` stays offline) so that
the command sees the local folder like any other."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.hubfolder import HUB_SCHEME, download, hub_id


class WeightsPath(click.Path):
    """``click.Path`` (returning a :class:`~pathlib.Path`) that also takes ``hf://org/name``."""

    def __init__(self, exists: bool = False):
        super().__init__(exists=exists, path_type=Path)
        self.name = "weights"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith(HUB_SCHEME):
            return download(*hub_id(value))
        return super().convert(value, param, ctx)

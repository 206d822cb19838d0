"""The ``srn-port`` command line: thin click commands over the library.

User errors (:class:`srn_port.core.errors.SrnPortError`) are printed as one paragraph with
no traceback. Exit status of a user error: 1 for every command except ``diff``, whose 1
means "divergence found", so that its user errors exit 2 (as click's own usage errors do
everywhere). Each command module imports the heavy layers (torch, the model, TF) only
inside the command that needs them, so ``srn-port --help`` and a ``.safetensors``
conversion start without torch.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..core.errors import SrnPortError
from .convert import convert, inspect, publish
from .deblur import deblur
from .diff import EXIT_USAGE, diff
from .evaluate import evaluate
from .export import export
from .export_tf import export_tf
from .port_diff import port_diff
from .train import train

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}
#: Exit status of a user error, by command (default 1).
ERROR_EXIT = {"diff": EXIT_USAGE, "port-diff": EXIT_USAGE}


class SrnGroup(click.Group):
    """A click group that turns SrnPortError into a clean 'Error: ...' and its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SrnPortError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = ERROR_EXIT.get(ctx.invoked_subcommand, 1)
            raise err from None


@click.group(cls=SrnGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="srn-port")
def cli():
    """SRN-Deblur in PyTorch: convert the TF checkpoints, check parity, deblur images."""


for _command in (convert, inspect, diff, port_diff, deblur, evaluate, export, export_tf, train,
                 publish):
    cli.add_command(_command)


def main(argv=None):
    return cli.main(args=argv, prog_name="srn-port")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

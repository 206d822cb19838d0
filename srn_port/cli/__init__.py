"""The ``srn-port`` command line: thin click commands over the library.

User errors (:class:`srn_port.errors.SrnPortError`) are printed as one paragraph with
no traceback, and the exit code is 1; click's own usage errors exit with 2.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import SrnPortError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}


class SrnGroup(click.Group):
    """A click group that turns SrnPortError into a clean 'Error: ...' and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SrnPortError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=SrnGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="srn-port")
def cli():
    """SRN-Deblur in PyTorch: convert the TF checkpoints, check parity, deblur images."""


def main(argv=None):
    return cli.main(args=argv, prog_name="srn-port")


# Each module adds its commands to `cli` (imported last: they import `cli` from here).
from . import convert as _convert  # noqa: E402,F401
from . import deblur as _deblur  # noqa: E402,F401
from . import diff as _diff  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

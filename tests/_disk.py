"""Test-only: real faults of the file system, shared by tests/test_faults.py and
tests/test_hub.py: a small tmpfs mounted for a test (root only; the mount is checked), and
the child process that runs srn-port under an RLIMIT_FSIZE file-size limit where no tmpfs
can be mounted (SIGXFSZ ignored, so a write past the limit fails with EFBIG)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: The child of the RLIMIT_FSIZE fallback: the limit (-1: none), then the srn-port arguments.
CHILD = ("import resource, signal, sys\n"
         "if int(sys.argv[1]) >= 0:\n"
         "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
         "    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
         "    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), hard))\n"
         "from srn_port.cli import main\n"
         "sys.exit(main(sys.argv[2:]))\n")


def mount_tmpfs(folder: Path, options: str) -> bool:
    """Mount a tmpfs with ``options`` (e.g. ``size=1m``) on ``folder``; whether it is there."""
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                         capture_output=True)
    return res.returncode == 0 and os.path.ismount(folder)


def umount(folder: Path) -> None:
    if os.path.ismount(folder):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)

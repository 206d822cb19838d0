"""One run per output folder: an exclusive lock that the operating system releases.

A command that writes a folder of results (``train``, ``deblur -o``, ``export-tf``) holds
``fcntl.flock`` on ``<folder>/.srn-port.lock`` for its lifetime. The kernel drops the lock
when the process ends, however it ends (``kill -9`` included), so a lock left by a dead
process never blocks a later run. While it holds the lock, the file says who holds it (pid,
host, command, start time): a second run into the folder is refused at once with an error
that names the first. The file is removed when the run ends normally; one left by a killed
run is taken over by the next.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import SrnPortError

LOCK_NAME = ".srn-port.lock"

try:  # POSIX; elsewhere the lock is not taken (see FolderLock.acquire)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class FolderBusyError(SrnPortError):
    """Another srn-port process is writing into the same output folder."""


def _holder(path: Path) -> str:
    """Who holds the lock ``path``, in words, from what the holder wrote into it."""
    for _ in range(20):  # the holder writes its details right after taking the lock
        try:
            info = json.loads(path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict):
            started = info.get("started")
            since = (time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started))
                     if isinstance(started, (int, float)) else "")
            return (f"process {info.get('pid')} on {info.get('host')} "
                    f"(`{info.get('command')}`){since}")
        time.sleep(0.05)
    return "another process (it has not recorded its details yet)"


class FolderLock:
    """The exclusive lock of an output folder (see the module's doc). ``what`` names the
    folder in the refusal ("training folder", "output folder")."""

    def __init__(self, folder, what: str = "output folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock (the folder must exist), or raise :class:`FolderBusyError` at once."""
        if self._fd is not None or fcntl is None:
            return self
        from .fileio import write_failure

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise write_failure(self.path, exc, kept="Nothing was done") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderBusyError(
                    f"The {self.what} '{self.folder}' is in use by {_holder(self.path)}: "
                    f"two runs writing into one folder would mix their files. Nothing was "
                    f"done; wait for that run to end (or stop it), or choose another "
                    f"folder.") from None
            except OSError:
                os.close(fd)
                raise
            # the previous holder may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else will open; take the new one instead
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        program = os.path.basename(sys.argv[0])
        if program in ("__main__.py", "srn-port"):  # python -m srn_port, or the script
            program = "srn-port"
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "command": " ".join([program] + sys.argv[1:]),
                "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode("utf-8"))
        except OSError:  # a full disk: the lock holds all the same, only its details lack
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.unlink(self.path)  # while still locked: see the check in acquire
        except OSError:
            pass
        os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        self.release()

"""Writing files safely: a temporary file beside the target, renamed into place.

An interrupted write (an error, Ctrl-C, ``kill -9``, a full disk) never leaves a
half-written file under the final name, and never touches an existing file of that name
until the new content is complete.
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from .errors import FileWriteError, SrnPortError

#: Temporary files are named ``.<target name>.<random>.tmp`` (hidden, beside the target).
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(path) -> list:
    """Delete the temporary files that earlier writes of ``path`` left behind when their
    process was killed (``kill -9``, power loss): each is named after its writer's process
    id, and only those whose process no longer runs are removed. Returns what was removed."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f"{TMP_PREFIX}{glob.escape(path.name)}.*{TMP_SUFFIX}"))
        candidates += list(path.parent.glob(f"{TMP_PREFIX}{glob.escape(path.name)}.*"
                                            f"{TMP_SUFFIX}{glob.escape(path.suffix)}"))
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(TMP_PREFIX) + len(path.name) + 1:]
        pid = middle.split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def atomic_write(path, write: Callable[[str], None], keep_suffix: bool = False) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it over
    ``path``. On any error the temporary file is removed and ``path`` is untouched; an
    OSError (a read-only folder, a full disk) becomes a :class:`FileWriteError` naming the
    file. The file gets the mode a plain ``open()`` would give it (the umask's), not
    mkstemp's. Temporaries of killed earlier writes of ``path`` are cleaned up first.
    ``keep_suffix``: the temporary ends in ``path``'s own extension too (for writers that
    choose the format by extension, like OpenCV's VideoWriter)."""
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.{os.getpid()}.",
                                   suffix=TMP_SUFFIX + (path.suffix if keep_suffix else ""),
                                   dir=path.parent)
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise FileWriteError(
                f"Cannot write '{path}': {exc.strerror or exc}. Nothing was written there (and "
                f"an existing file of that name is unchanged); check that the folder "
                f"'{path.parent}' is writable and the disk has room.") from None
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the same name is the same file
        return a.resolve() == b.resolve()


def check_new_file(path, what: str, inputs=(), force: bool = False) -> Path:
    """Refuse to write ``path`` (described as ``what``, e.g. "--json file") where it would
    replace one of ``inputs``, or an existing file without ``force``, or where its folder is
    missing. Checked before any work, so that a run that would lose data does nothing."""
    path = Path(path)
    for inp in inputs:
        if inp is not None and _same_file(path, Path(inp)):
            raise SrnPortError(f"The {what} '{path}' is the input '{inp}': writing it would destroy "
                               f"the input. Choose another file name.")
    if path.is_dir():
        raise SrnPortError(f"The {what} '{path}' is a folder; give a file name.")
    if path.exists() and not force:
        raise SrnPortError(f"The {what} '{path}' already exists; pass --force to overwrite it, "
                           f"or choose another name.")
    if not path.parent.is_dir():
        raise SrnPortError(f"The folder '{path.parent}' of the {what} '{path}' does not exist; "
                           f"create it first.")
    return path


def regular_file_size(path, what: str) -> int:
    """The size of ``path`` if it is a regular file (after symlinks), else a clear error.
    Only regular files are read as inputs: a FIFO would block forever, a device (e.g. a link
    to /dev/zero) would never end."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SrnPortError(f"Cannot read the {what} '{path}': {exc.strerror or exc}.") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)"
                if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise SrnPortError(f"The {what} '{path}' is {kind}, not a regular file; srn-port reads "
                           f"only regular files. Give the path of the file itself.")
    return st.st_size

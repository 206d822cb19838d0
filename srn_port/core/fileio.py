"""Writing files safely: a temporary file beside the target, renamed into place.

An interrupted write (an error, Ctrl-C, ``kill -9``, a full disk) never leaves a
half-written file under the final name, and never touches an existing file of that name
until the new content is complete.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

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


#: Test hook: seconds to wait between a temporary's write and its rename (the kill tests use
#: it to land a SIGKILL inside a save); unset in normal use.
_DELAY_ENV = "SRN_PORT_TEST_WRITE_DELAY"
#: Bytes of the probe written to classify a failure that a library reported without an errno.
_PROBE_BYTES = 64 * 1024

#: errno -> (the cause as the message says it, what to do about it).
_CAUSES = {
    errno.ENOSPC: ("no space is left on the disk of '{folder}'",
                   "free some space there (`df -h '{folder}'` shows what is left) or write to "
                   "another disk, then run the command again"),
    errno.EDQUOT: ("your disk quota on '{folder}' is used up",
                   "free some of your space there (`quota -s` shows it) or write to another "
                   "disk, then run the command again"),
    errno.EFBIG: ("the file grew past the largest file this process may write (a file size "
                  "limit: `ulimit -f`, or the filesystem's own maximum)",
                  "raise the limit (`ulimit -f unlimited`) or write to a filesystem that takes "
                  "large files, then run the command again"),
    errno.EROFS: ("the filesystem of '{folder}' is mounted read-only",
                  "write to a folder on a writable disk"),
    errno.EACCES: ("permission to write in '{folder}' is denied",
                   "write to a folder you own, or get write permission on this one"),
    errno.EPERM: ("the operation is not permitted in '{folder}'",
                  "write to a folder you own, or get write permission on this one"),
    errno.EIO: ("the disk reported an input/output error (a failing disk, or a network "
                "filesystem that went away)",
                "check the disk (`dmesg`) and write to another one"),
}
#: How libraries that hide the errno (safetensors' Rust writer, torch's zip writer, HDF5)
#: spell it in their messages.
_MESSAGE_ERRNOS = [
    (("os error 28", "no space left", "errno = 28", "errno 28"), errno.ENOSPC),
    (("os error 122", "disk quota exceeded", "errno = 122", "errno 122"), errno.EDQUOT),
    (("os error 27", "file too large", "errno = 27", "errno 27"), errno.EFBIG),
    (("os error 30", "read-only file system", "errno = 30", "errno 30"), errno.EROFS),
    (("os error 13", "permission denied", "errno = 13", "errno 13"), errno.EACCES),
]


def _errno_of(exc: BaseException):
    """The errno an exception (or one it was raised from) carries or names, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _CAUSES:
            return exc.errno
        text = str(exc).lower()
        for needles, code in _MESSAGE_ERRNOS:
            if any(n in text for n in needles):
                return code
        exc = exc.__cause__ or exc.__context__
    return None


def _over_size_limit(tmp) -> bool:
    """Whether the temporary reached this process's RLIMIT_FSIZE (writes past it fail EFBIG)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return soft != resource.RLIM_INFINITY and tmp is not None and os.path.getsize(tmp) >= soft
    except (ImportError, OSError, ValueError):
        return False


def _probe(folder: Path):
    """Write and sync a small file in ``folder``: the errno if that fails too, else None.
    Used after a library failed with a message that names no cause: a full disk, a used-up
    quota or a read-only mount show up here."""
    try:
        st = os.statvfs(folder)
        if st.f_favail == 0 and st.f_files:  # no inodes left: nothing can be created
            return errno.ENOSPC
    except OSError:
        pass
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}probe.{os.getpid()}.",
                                     suffix=TMP_SUFFIX, dir=folder)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.errno if exc.errno in _CAUSES else None
    finally:
        if probe is not None:
            try:
                os.unlink(probe)
            except OSError:
                pass
    return None


def failure_cause(exc: BaseException, folder, tmp=None):
    """The errno of the disk fault behind a failed write in ``folder``, or None where the
    disk is fine: the errno ``exc`` carries or names, else EFBIG where the partial temporary
    ``tmp`` reached the file size limit, else what a small probe write beside it meets."""
    code = _errno_of(exc)
    if code is None and _over_size_limit(tmp):
        code = errno.EFBIG
    if code is None:
        code = _probe(Path(folder))
    return code


def write_failure(path, exc: BaseException, tmp=None, kept: str = None) -> FileWriteError:
    """The one-paragraph :class:`FileWriteError` for a failed write of ``path``: its cause
    (no space, quota, file too large, read-only, permission, I/O error) from the errno that
    ``exc`` carries or names, else from the partial temporary ``tmp`` reaching the file size
    limit, else from a small probe write beside it; the library's own words in brackets.
    ``kept``: what the message says about the previous file (default: unchanged)."""
    path = Path(path)
    folder = path.parent
    code = failure_cause(exc, folder, tmp)
    detail = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    if len(detail) > 200:
        detail = detail[:197] + "..."
    if kept is None:
        kept = (f"The existing '{path.name}' is unchanged and nothing was left beside it"
                if path.exists() else "Nothing was left behind")
    if code is None:
        return FileWriteError(
            f"Cannot write '{path}': {detail or type(exc).__name__}. {kept}; check that the "
            f"folder '{folder}' is writable and its disk has room, then run the command again.")
    cause, todo = (s.format(folder=folder) for s in _CAUSES[code])
    lib = f" ({type(exc).__name__}: {detail})" if detail else ""
    return FileWriteError(f"Cannot write '{path}': {cause}{lib}. {kept}; {todo}.")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[str], None], keep_suffix: bool = False) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, fsync it, rename it over
    ``path`` and fsync the folder: the one way srn-port writes a file. On any error the
    temporary file is removed and ``path`` is untouched; a failure of the disk (full, quota,
    file size limit, read-only, permission), whatever the library in ``write`` raised for it
    (an OSError, torch's zip writer's RuntimeError, safetensors' SafetensorError, an
    encoder's False), becomes one :class:`FileWriteError` naming the file, the cause and
    what to do (:func:`write_failure`). The file gets the mode a plain ``open()`` would give
    it (the umask's), not mkstemp's. Temporaries of killed earlier writes of ``path`` are
    cleaned up first. ``keep_suffix``: the temporary ends in ``path``'s own extension too
    (for writers that choose the format by extension, like OpenCV's VideoWriter)."""
    atomic_write_group([(path, write)], keep_suffix=keep_suffix)


def atomic_write_group(items, keep_suffix: bool = False) -> None:
    """:func:`atomic_write` for files that belong together (a TF checkpoint's index and
    data): every temporary is written and synced before the first rename, so a failed write
    of any of them leaves all the previous files as they were."""
    items = [(Path(p), w) for p, w in items]
    temps = []
    current = None
    try:
        for path, write in items:
            current = path
            remove_stale_temporaries(path)
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.{os.getpid()}.",
                                       suffix=TMP_SUFFIX + (path.suffix if keep_suffix else ""),
                                       dir=path.parent)
            os.close(fd)
            temps.append(tmp)
            write(tmp)
            delay = os.environ.get(_DELAY_ENV)
            if delay:
                time.sleep(float(delay))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            _fsync_file(tmp)
        for (path, _), tmp in zip(items, temps):
            current = path
            os.replace(tmp, path)
        current, temps = None, []
        for folder in {path.parent for path, _ in items}:
            _fsync_folder(folder)
    except BaseException as exc:
        error = None
        tmp = temps[-1] if temps else None
        if current is not None and isinstance(exc, Exception) and not isinstance(
                exc, FileWriteError):
            # an OSError is a write failure whatever its errno; any other error (torch's zip
            # writer, safetensors, an encoder, a video writer's short file) is one where the
            # disk shows a fault, else a bug or bad data that keeps its own message
            if isinstance(exc, OSError) or failure_cause(exc, current.parent, tmp) is not None:
                error = write_failure(current, exc, tmp)
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if error is not None:
            raise error from None
        raise


def append_line(path, line: str) -> None:
    """Append ``line`` (plus a newline) to the log ``path`` and sync it. A failed append is
    undone (the file is cut back to its length before) and becomes a :class:`FileWriteError`
    naming the cause, so a log never ends in half a line."""
    path = Path(path)
    data = (line + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_failure(path, exc, kept=f"'{path.name}' is unchanged") from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise write_failure(path, exc, kept=f"The line was not added and '{path.name}' "
                                               f"is as it was") from None
    finally:
        os.close(fd)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the same name is the same file
        return a.resolve() == b.resolve()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def input_clash(path, inputs=()) -> Optional[Path]:
    """The input that writing ``path`` would destroy, or None. ``inputs`` are what the
    command reads: a file (``path`` is that file, by name, link or hard link), a folder
    (``path`` lies anywhere inside it, links resolved: a checkpoint folder, a dataset) or a
    path that does not exist, taken as a TF checkpoint prefix (``path`` is one of its
    ``PREFIX.*`` files)."""
    path = Path(path)
    resolved = path.resolve()
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        if inp.is_dir():
            if _within(resolved, inp.resolve()):
                return inp
        elif inp.exists() or inp.is_symlink():
            if _same_file(path, inp):
                return inp
        else:
            prefix = inp.resolve()
            if resolved.parent == prefix.parent and (resolved.name == prefix.name or
                                                     resolved.name.startswith(prefix.name + ".")):
                return inp
    return None


def check_writable_folder(path, what: str) -> None:
    """Create and delete a temporary file beside ``path`` (a real probe: it catches a
    read-only file system and missing permissions, for root too), so that a long run
    (an export, an evaluation) is refused before it starts rather than after."""
    path = Path(path)
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=f"{TMP_PREFIX}srn-port-probe."):
            pass
    except OSError as exc:
        raise write_failure(path, exc, kept=f"Nothing was done (the {what} is checked before "
                                            f"any work)") from None


def check_new_file(path, what: str, inputs=(), force: bool = False) -> Path:
    """Refuse to write ``path`` (described as ``what``, e.g. "--json file") where it would
    replace one of ``inputs`` (see :func:`input_clash`: files, folders and checkpoint
    prefixes the command reads; ``--force`` or not), or an existing file without ``force``,
    or where its folder is missing or not writable. Checked before any work, so that a run
    that would lose data (or fail at its end) does nothing."""
    path = Path(path)
    inp = input_clash(path, inputs)
    if inp is not None:
        where = ("is" if not Path(inp).is_dir() and _same_file(path, Path(inp))
                 else "is inside" if Path(inp).is_dir() else "is a file of")
        raise SrnPortError(f"The {what} '{path}' {where} the input '{inp}': writing it would "
                           f"destroy the input, which srn-port never modifies (even with "
                           f"--force). Choose another file name outside the inputs.")
    if path.is_dir():
        raise SrnPortError(f"The {what} '{path}' is a folder; give a file name.")
    if path.exists() and not force:
        raise SrnPortError(f"The {what} '{path}' already exists; pass --force to overwrite it, "
                           f"or choose another name.")
    if not path.parent.is_dir():
        raise SrnPortError(f"The folder '{path.parent}' of the {what} '{path}' does not exist; "
                           f"create it first.")
    check_writable_folder(path, what)
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

"""Writing files safely: a temporary file beside the target, renamed into place.

An interrupted write (an error, Ctrl-C, ``kill -9``, a full disk) never leaves a
half-written file under the final name, and never touches an existing file of that name
until the new content is complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

#: Temporary files are named ``.<target name>.<random>.tmp`` (hidden, beside the target).
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it over
    ``path``. On any error the temporary file is removed and ``path`` is untouched.
    The file gets the mode a plain ``open()`` would give it (the umask's), not mkstemp's."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX,
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

"""Files that are never half-written: atomic replacement beside the (symlink-resolved) target,
and the sweep of temp files a killed writer left behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def file_mode(path: Path) -> int:
    """The existing file's permission bits, else 0666 minus the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def real_path(path: Path) -> Path:
    """``path`` with symlinks resolved: a symlinked database (e.g. one shared by several
    checkouts) is written through to its target instead of being replaced by a regular file."""
    return Path(os.path.realpath(path))


TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``'s target and rename it over the target."""
    target = real_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        # mkstemp creates the file 0600; keep the mode an ordinary file would get (or had).
        os.chmod(tmp_name, file_mode(target))
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def remove_stale_temps(path: Path) -> int:
    """Remove temp files of ``path`` left behind by killed writers; returns how many.

    Call it holding the database lock: every writer of the database writes its temp file while
    holding the lock, so any temp file seen then belongs to a writer that died.
    """
    target = real_path(path)
    removed = 0
    for stale in target.parent.glob(_temp_prefix(target) + "*" + TEMP_SUFFIX):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed += 1
    return removed

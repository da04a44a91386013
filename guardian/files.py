"""Writes that another run may read: whole or not at all, and never through a symlink."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: a temporary file in the same folder, then rename.

    rename(2) replaces a symlink at ``path`` rather than writing through it,
    and a reader sees the old file or the new one, never half of either.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # the run's own time-out included: leave no temporary file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

"""One lock per target, so that overlapping runs never act twice.

filelock's Unix lock is flock(2) on ``<state_dir>/locks/<name>.lock``: the
kernel drops it when the holder exits, however it exits, so a lock can never
be left behind by a killed guardian. The file itself is never deleted
(deleting a lock file lets two holders lock two inodes: tox-dev/filelock#574).
filelock is imported here only, and only when a run has something to do.

When the lock file cannot be opened for writing (a read-only or full state
folder), the lock is taken on what can still be opened read-only: the lock
file if it exists, else the nearest existing folder above it. flock needs no
write access, and every run in the same trouble falls back the same way, so
a dead target is still started, and still only once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What a full disk, a quota or a read-only mount says when the lock file is created.
_NO_WRITE = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


class Busy(Exception):  # another guardian holds it; that is normal
    pass


def lock_path(lock_dir: Path, name: str) -> Path:
    return lock_dir / f"{name}.lock"


@contextmanager
def hold(lock_dir: Path, name: str, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the lock ``name`` for the block; raise Busy if another process holds it.

    ``guardian check`` waits for nothing (``wait=0``): another run is seeing to
    the target. Editing a crontab waits ``wait`` seconds for its turn. Yields
    the path actually locked (another one after a fallback).
    """
    import filelock

    path = lock_path(lock_dir, name)
    try:
        # 0700 and ours: nobody else can plant a symlink or a file in it.
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = filelock.UnixFileLock(
            path,
            mode=0o600,
            timeout=wait,
            blocking=wait > 0,
            # flock or nothing: a soft lock file could outlive a killed guardian.
            fallback_to_soft=False,
            preserve_lock_file=True,
        )
        lock.acquire()
    except filelock.Timeout:
        raise Busy(str(path)) from None
    except OSError as e:
        if e.errno not in _NO_WRITE:
            raise
        fd, locked = _fallback(path, wait)
        try:
            yield locked
        finally:
            os.close(fd)  # closing drops the flock
        return
    try:
        yield path
    finally:
        lock.release()


def _fallback(path: Path, wait: float) -> tuple[int, Path]:
    """flock, read-only, the lock file or the nearest folder above it that exists."""
    for candidate in (path, *path.parents):
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        if candidate != path:
            flags |= os.O_DIRECTORY
        try:
            fd = os.open(candidate, flags)
        except OSError:
            continue
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Busy(str(candidate)) from None
                time.sleep(0.05)
            else:
                return fd, candidate
    raise OSError(errno.ENOENT, f"nothing to lock for {path}")  # pragma: no cover - / exists

"""One lock per target, so that overlapping runs never act twice.

filelock's Unix lock is flock(2) on ``<state_dir>/locks/<name>.lock``: the
kernel drops it when the holder exits, however it exits, so a lock can never
be left behind by a killed guardian. The file itself is never deleted
(deleting a lock file lets two holders lock two inodes: tox-dev/filelock#574).
filelock is imported here only, and only when a run has something to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Busy(Exception):  # another guardian holds it; that is normal
    pass


def lock_path(lock_dir: Path, name: str) -> Path:
    return lock_dir / f"{name}.lock"


@contextmanager
def hold(lock_dir: Path, name: str, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the lock ``name`` for the block; raise Busy if another process holds it.

    ``guardian check`` waits for nothing (``wait=0``): another run is seeing to
    the target. Editing a crontab waits ``wait`` seconds for its turn.
    """
    import filelock

    # 0700 and ours: nobody else can plant a symlink or a file in it.
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = lock_path(lock_dir, name)
    lock = filelock.UnixFileLock(
        path,
        mode=0o600,
        timeout=wait,
        blocking=wait > 0,
        # flock or nothing: a soft lock file could outlive a killed guardian.
        fallback_to_soft=False,
        preserve_lock_file=True,
    )
    try:
        lock.acquire()
    except filelock.Timeout:
        raise Busy(str(path)) from None
    try:
        yield path
    finally:
        lock.release()

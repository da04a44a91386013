"""One lock per target, so that overlapping runs never act twice.

The lock is flock(2) on ``<state_dir>/locks/<name>.lock``: the kernel drops
it when the holder exits, however it exits, so no lock is ever left behind
by a killed guardian. The file is never deleted (deleting a lock file lets
two holders lock two inodes: tox-dev/filelock#574).

A lock only means something if every runner locks the same file, so there
is no fallback to any other file. The file locked is checked to still be the
one at the path once the lock is held (and again before every act), the
standard re-check: a file deleted or replaced while a runner waited would
otherwise let two runners hold two locks. Where it cannot be written (a
read-only state folder) the same file is locked read-only, which flock
allows. Anything else (a symlink, a folder, a FIFO, a lock folder that others
could write to, a file that cannot be opened) is a ``LockError``: the caller
acts on nothing.

(flock directly, not the filelock package: filelock 4 locks a FIFO as
happily as a file, does not re-check the path after locking, and costs
about 50 ms to import.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guardian.errors import GuardianError
from guardian.files import make_dirs

POLL = 0.05
_RETRIES = 20  # the file replaced again and again while we look: give up, do not spin


class Busy(Exception):  # another guardian holds it; that is normal
    pass


class LockError(GuardianError):
    """The lock cannot be taken: nothing may be done that needs it."""

    exit_code = 1


def lock_path(lock_dir: Path, name: str) -> Path:
    return lock_dir / f"{name}.lock"


class Lock:
    """A held lock: the open file and what it was when it was locked."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        st = os.fstat(fd)
        self._id = (st.st_dev, st.st_ino)

    def still_held(self) -> bool:
        """Is the file we hold locked still the lock file at the path? (Check before acting.)"""
        try:
            here = os.lstat(self.path)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == self._id and os.fstat(self.fd).st_nlink > 0

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock


def _check_folder(folder: Path) -> None:
    """Only a folder of our own, that nobody else can write to, may hold the lock files."""
    try:
        st = os.lstat(folder)
    except OSError as e:
        raise LockError(f"cannot use lock folder {folder}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise LockError(f"lock folder {folder} is not a folder (a symlink or a file)")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise LockError(
            f"lock folder {folder} is owned by uid {st.st_uid} with mode "
            f"{stat.S_IMODE(st.st_mode):o}: others could replace the lock, so it is not used"
        )


def _check_parent(folder: Path) -> None:
    """The folder that holds the lock folder: whoever may write to it may rename the
    lock folder away and put one of theirs in its place (and delete the audit log
    beside it). So it must be ours or root's, and nobody else's to write to, unless
    it is sticky (as /run/lock: then nobody may rename what is ours)."""
    try:
        st = os.stat(folder)
    except OSError as e:
        raise LockError(f"cannot use {folder}: {e.strerror}") from None
    sticky = st.st_mode & stat.S_ISVTX
    if st.st_uid not in (0, os.geteuid()) or (st.st_mode & 0o022 and not sticky):
        raise LockError(
            f"{folder}, which holds the lock folder, is owned by uid {st.st_uid} with mode "
            f"{stat.S_IMODE(st.st_mode):o}: others could replace the lock folder, so it is "
            "not used"
        )


def _open(path: Path) -> int:
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o600)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and os.path.lexists(path):
            # The same file, read-only: flock needs no write access.
            try:
                fd = os.open(path, os.O_RDONLY | flags)
            except OSError as again:
                raise LockError(f"cannot open lock {path}: {again.strerror}") from None
        elif e.errno == errno.ELOOP:
            raise LockError(f"lock {path} is a symlink; not following it") from None
        else:
            raise LockError(f"cannot open lock {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockError(f"lock {path} is not a regular file")
    return fd


def acquire(lock_dir: Path, name: str, *, wait: float = 0.0) -> Lock:
    """Take the lock ``name``: Busy if another process holds it after ``wait`` seconds,
    LockError if it cannot be taken at all."""
    path = lock_path(lock_dir, name)
    if os.path.lexists(lock_dir.parent):  # refused before anything is made in it
        _check_parent(lock_dir.parent)
    try:
        # 0700 and ours: nobody else can plant a symlink or a file in it.
        make_dirs(lock_dir, 0o700)
    except OSError as e:
        raise LockError(f"cannot make lock folder {lock_dir}: {e.strerror}") from None
    _check_parent(lock_dir.parent)
    _check_folder(lock_dir)
    deadline = time.monotonic() + wait
    for _ in range(_RETRIES):
        fd = _open(path)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Busy(str(path)) from None
                    time.sleep(POLL)
            lock = Lock(path, fd)
        except BaseException:
            os.close(fd)
            raise
        if lock.still_held():
            return lock
        lock.release()  # replaced or deleted while we waited: lock what is there now
    raise LockError(f"lock {path} keeps being replaced; not acting")


class Waiter:
    """Tries a lock again and again, cheaply: a watcher waiting for the one before it
    tries every 20 ms for seconds, and a whole ``acquire`` each time (its folder checks,
    an open) cost 24 ms of CPU a second. The folder is checked once; after that each try
    is one flock(2) on the file kept open, then the same re-check as ``acquire``'s."""

    def __init__(self, lock_dir: Path, name: str) -> None:
        self.lock_dir = lock_dir
        self.name = name
        self.fd: int | None = None

    def attempt(self) -> Lock | None:
        """The lock if it is free now, else None; LockError if it cannot be taken."""
        if self.fd is None:
            try:
                return acquire(self.lock_dir, self.name, wait=0.0)
            except Busy:
                self.fd = _open(lock_path(self.lock_dir, self.name))
                return None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        lock, self.fd = Lock(lock_path(self.lock_dir, self.name), self.fd), None
        if lock.still_held():
            return lock
        lock.release()  # replaced or deleted while we waited: lock what is there now
        return self.attempt()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextmanager
def hold(lock_dir: Path, name: str, *, wait: float = 0.0) -> Iterator[Lock]:
    """Hold the lock ``name`` for the block (see ``acquire``)."""
    lock = acquire(lock_dir, name, wait=wait)
    try:
        yield lock
    finally:
        lock.release()

"""Writes that another run may read: whole or not at all, and never through a symlink."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from pathlib import Path

# Never follow a symlink, never block on a FIFO, never take a terminal, never leak to a child.
SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symlink",
}


class NotRegular(OSError):
    """A path guardian reads or writes is something other than a regular file."""

    def __init__(self, path: Path, mode: int) -> None:
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        super().__init__(f"{path} is {kind}, not a regular file")
        self.strerror = f"is {kind}, not a regular file"
        self.filename = str(path)


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open ``path`` only if it is a regular file (or, with O_CREAT, missing).

    A FIFO, a device, a folder or a symlink where a file should be is refused
    before it is opened where possible (opening a device can have effects of
    its own) and, after, by fstat (it may have been swapped in between).
    """
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(before.st_mode):
            raise NotRegular(path, before.st_mode)
    fd = os.open(path, flags | SAFE, mode)
    try:
        kind = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise NotRegular(path, kind)
    return fd


def never_blocking(fd: int) -> int:
    """A descriptor that writes where ``fd`` does without ever blocking, when one can be
    had privately; else ``fd`` itself (a file, which never blocks for long; a socket,
    which the caller writes with MSG_DONTWAIT).

    A pipe nobody reads (cron's mailer stuck), or a terminal whose output is
    stopped (Ctrl-S), blocks a plain write for ever. Opening /proc/self/fd/N
    makes a new open file description of the same pipe or terminal, so
    O_NONBLOCK on it changes nothing for the other holders (a shell's terminal).
    """
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            return os.open(f"/proc/self/fd/{fd}", flags)
    except OSError:
        pass
    return fd


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """``mkdir -p`` whose folders get ``mode`` (parents 0755), whatever the umask.

    A folder guardian makes is never writable by others: not with umask 000 either.
    """
    if path.is_dir():
        return
    if path.parent != path:
        make_dirs(path.parent, 0o755)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    # mkdir's mode passes through the umask, which can only take bits away (077 would
    # hide the folder from a target's user): set exactly ``mode``, on the folder made.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a temporary file in the same folder, then rename.

    rename(2) replaces a symlink at ``path`` rather than writing through it,
    and a reader sees the old file or the new one, never half of either.
    ``durable=False`` skips the fsync, for what a power cut (a reboot) makes
    worthless anyway: a millisecond per write, a hundred on a hundred targets.
    """
    make_dirs(path.parent)
    # What mkstemp does, without importing tempfile (and random) on every run:
    # O_EXCL makes a new file of our own, never one planted (or linked) there.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # the run's own time-out included: leave no temporary file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Housekeeping, not the write (done): nothing it meets makes the write a failure.
    with contextlib.suppress(OSError):
        _sweep(path)


_TMP = re.compile(r"([0-9]+)\.[0-9a-f]{8}\.tmp")
# A folder's listing is used this long, then listed again (a watcher lives for hours).
_RELIST = 300.0
# A leftover is left alone until it has not changed for this long: a writer of another pid
# namespace (absent from this /proc) is never taken for a dead one while it writes.
STALE = 60.0
_listed: dict[Path, tuple[float, list[str]]] = {}


def _sweep(path: Path) -> None:
    """Remove what a writer killed by SIGKILL (which no handler can catch) left behind:
    temporary files of ``path`` whose writer is gone (``remove_leftover``).

    The folder is listed once every ``_RELIST`` seconds by a process, not once a write:
    a run writing the state files of a hundred targets in one folder would otherwise list
    it a hundred times. (What a writer killed since leaves, the next run sweeps; a watcher,
    within minutes.) Nothing here raises but OSError."""
    prefix = f".{path.name}."
    now = time.monotonic()
    listed = _listed.get(path.parent)
    if listed is None or now - listed[0] >= _RELIST:
        with os.scandir(path.parent) as entries:
            names = [e.name for e in entries if e.name.endswith(".tmp")]
        listed = _listed[path.parent] = (now, names)
    names = listed[1]
    for name in [n for n in names if n.startswith(prefix)]:
        if remove_leftover(path.parent, name, prefix):
            names.remove(name)


def remove_leftover(folder: Path, name: str, prefix: str) -> bool:
    """Remove ``folder/name`` if it is what a writer of guardian's that is gone left behind;
    whether it is gone now. Nothing raises.

    Only a name that is exactly ``prefix`` then ``PID.HEX.tmp``, as ``atomic_write`` and
    the audit log's compression name their files (another file's never matches: target
    "x.json.5" has ".x.json.5.json.PID.HEX.tmp", not one of ".x.json."); whose writer
    (PID) is not running; that is a regular file of guardian's own user (a folder, or
    anything else named like one, is not guardian's, nor is another user's file in a
    shared, sticky folder, where root could delete it: there nobody else can rename or
    delete a file of ours either, so what was looked at is what is deleted); and that has
    not changed for ``STALE`` seconds (a writer lives milliseconds: one of another pid
    namespace, whose PID this /proc does not show, is never taken for a dead one)."""
    m = _TMP.fullmatch(name, len(prefix)) if name.startswith(prefix) else None
    if m is None or os.path.exists(f"/proc/{m[1]}"):
        return False
    leftover = folder / name
    try:
        st = os.lstat(leftover)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        if time.time() - st.st_mtime < STALE:
            return False
        os.unlink(leftover)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True

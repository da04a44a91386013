"""The process domain: reading /proc, a process's identity, and signalling only that process.

A process is known by its pid *and* its start time in clock ticks since boot
(field 22 of /proc/PID/stat): together they name one process for the life of
the machine, however fast pids are reused. Every signal guardian sends to a
process it found goes through ``signal_if_same``: a pidfd is opened first,
the identity is checked after, so the process that was checked is the
process that is signalled. Only guardian's own children are signalled
otherwise (by process group, ``signal_group``), and only while they are
unreaped, when their pid cannot have been given to anyone else.

Reads only /proc (no psutil): this is the path a healthy check takes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Container, Iterator
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
# include/linux/sched.h: a kernel thread has no program and no user space.
PF_KTHREAD = 0x00200000
POLL = 0.05


def now() -> float:
    """CLOCK_BOOTTIME seconds: the clock process start times are counted on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def since_boot(start_ticks: int) -> float:
    """A process's start, on the same clock as ``now()``."""
    return start_ticks / CLK_TCK


def ticks(seconds: float) -> int:
    """A CLOCK_BOOTTIME time as clock ticks since boot, the unit of a process's start."""
    return int(seconds * CLK_TCK)


_DEAD = ("Z", "X", "x")


class Stat(NamedTuple):
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    flags: int
    start_ticks: int  # since boot: with the pid, a process's identity for ever
    # Where its program and argv are read: /proc/PID, or one of its threads once the
    # main thread has exited (pthread_exit) while others run on.
    task: str = ""

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def dead(self) -> bool:
        """A zombie (or one being torn down) is dead, however late its parent reaps it."""
        return self.state in _DEAD


def _parse_stat(data: bytes) -> tuple[str, list[bytes]]:
    # comm, in parentheses, may itself hold ") ": split at the last one.
    close = data.rindex(b")")
    return data[data.index(b"(") + 1 : close].decode("utf-8", "replace"), data[close + 2 :].split()


def _read_raw(path: str) -> bytes | None:
    """A small /proc file's bytes with the fewest system calls (open, read, close)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:
        return os.read(fd, 4096)
    except ProcessLookupError:
        return None
    finally:
        os.close(fd)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _live_thread(pid: int) -> tuple[str, str] | None:
    """A thread of ``pid`` that still runs, with its state, when the main one has exited."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/stat") if tid != str(pid) else None
        if data is not None and (state := _parse_stat(data)[1][0].decode()) not in _DEAD:
            return f"/proc/{pid}/task/{tid}", state
    return None


def stat(pid: int) -> Stat | None:
    """Fields of /proc/PID/stat, or None if there is no such process.

    A process whose main thread has exited (``pthread_exit``) while another
    runs on shows as a zombie in /proc/PID/stat: it is not dead, and its state
    and where to read its argv and program are taken from a thread that runs.
    """
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    comm, fields = _parse_stat(data)
    state, task = fields[0].decode(), f"/proc/{pid}"
    if state in _DEAD and (live := _live_thread(pid)) is not None:
        task, state = live
    return Stat(comm, state, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[6]),
                int(fields[19]), task)  # fmt: skip


def _task(pid: int, where: Stat | None) -> str:
    return where.task if where is not None and where.task else f"/proc/{pid}"


def cmdline(pid: int, where: Stat | None = None) -> list[str] | None:
    """argv exactly as the kernel holds it (NUL-separated), or None if there is no such process.

    (Read from ``where.task``, the process's stat, when given.)
    """
    data = _read(f"{_task(pid, where)}/cmdline")
    return None if data is None else parse_cmdline(data)


def parse_cmdline(data: bytes) -> list[str]:
    """argv from /proc/PID/cmdline's bytes: each item ends with a NUL (what follows the
    last one, from a process that wrote over its argv, is no item)."""
    return [os.fsdecode(arg) for arg in data.split(b"\0")[:-1]]


_CHUNK = 16384


def cmdlines(owners: Container[int] | None = None) -> Iterator[tuple[int, bytes]]:
    """Every process's pid and the bytes of its /proc/PID/cmdline, read with as few
    system calls as can be: the process-table scan's first look at every process.

    With ``owners``, only processes whose effective or real user is one of them:
    another's memory is never read (a stranger's argv can be made slow to read).
    The target is known by its real user: a root target that took another
    effective user (seteuid) is still looked at (its /proc/PID/status says so,
    a read that never touches the process's memory). The bytes are empty for a
    kernel thread, a zombie, and a process whose main thread has exited
    (``cmdline`` reads those through a thread that runs on). This process is
    among them.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        folder = "/proc/" + entry
        try:
            # The folder's owner, not the file's: /proc/PID shows the effective user, while
            # the files in it show root for a process that is not dumpable, which anyone
            # can make theirs (prctl PR_SET_DUMPABLE; task_dump_owner in fs/proc/base.c).
            if owners is not None and os.stat(folder).st_uid not in owners \
                    and _real_uid_raw(folder) not in owners:  # fmt: skip
                continue
            fd = os.open(folder + "/cmdline", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended (ESRCH while it exits); or hidden (hidepid)
        try:
            # A short read is the end: the kernel fills a read up to the end of the
            # command line, or stops where it cannot go on (get_mm_cmdline), where a
            # read after would stop too. One read is enough for all but the longest.
            data = os.read(fd, _CHUNK)
            if len(data) == _CHUNK:
                chunks = [data]
                while len(chunks[-1]) == _CHUNK:
                    chunks.append(os.read(fd, _CHUNK))
                data = b"".join(chunks)
        except ProcessLookupError:  # it ended while we looked
            continue
        finally:
            os.close(fd)
        yield int(entry), data


def _real_uid_raw(folder: str) -> int | None:
    """The real user of the process at ``folder`` (/proc/PID), from its status."""
    data = _read_raw(folder + "/status")
    if data is None:
        return None
    at = data.find(b"\nUid:")
    return int(data[at + 5 :].split(None, 1)[0]) if at >= 0 else None


def real_uid(pid: int) -> int | None:
    """The real user id the process runs as, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None  # pragma: no cover - every /proc/PID/status has a Uid line


_DELETED = " (deleted)"


def exe(pid: int, where: Stat | None = None) -> str | None:
    """The program the process runs (what the kernel executed), or None if it has none.

    Raises PermissionError where /proc does not let us see it (another user's
    process, for a guardian that is not root). A program replaced on disk since
    (a package upgrade) reads as its old path, which is what it was started as.
    """
    try:
        path = os.readlink(f"{_task(pid, where)}/exe")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return path.removesuffix(_DELETED)


def cwd(pid: int, where: Stat | None = None) -> str | None:
    try:
        return os.readlink(f"{_task(pid, where)}/cwd")
    except OSError:
        return None


def same_file(pid: int, path: str, where: Stat | None = None) -> bool:
    """Is the program ``pid`` runs the very file at ``path`` (a hard link or bind mount too)?"""
    try:
        a, b = os.stat(f"{_task(pid, where)}/exe"), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")  # pragma: no cover - every Linux has it


def wall_time(start_ticks: int) -> float:
    """A start time in ticks since boot as seconds since the epoch (for people and mtimes)."""
    return boot_time() + start_ticks / CLK_TCK


def is_alive(pid: int, start_ticks: int) -> bool:
    """True while ``pid`` is still the process that started at ``start_ticks``, and not dead."""
    try:
        now_stat = stat(pid)
    except PermissionError:  # not ours to read any more: not the process we knew
        return False
    return now_stat is not None and now_stat.start_ticks == start_ticks and not now_stat.dead


def wait_gone(pid: int, start_ticks: int, wait: float) -> bool:
    """Poll until the process is gone or dead; whether it is, within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while is_alive(pid, start_ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def signal_if_same(
    pid: int, start_ticks: int, sig: int, verify: Callable[[int], bool] | None = None
) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start_ticks``
    (and ``verify(pid)`` holds, when given: the target's command line, say).

    The pidfd is opened before the identity is checked: it pins the process,
    so what was checked is what is signalled, however fast pids are reused.
    Where the kernel has no pidfd_open (before 5.3), os.kill is the best there
    is. Returns False when there was nothing (left) to signal.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # pragma: no cover - kernels older than 5.3
        pidfd = None
    try:
        if not is_alive(pid, start_ticks) or (verify is not None and not verify(pid)):
            return False
        if pidfd is None:  # pragma: no cover - kernels older than 5.3
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group whose leader is our own unreaped child (so the id is still ours)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop(
    pid: int, start_ticks: int, sig: int, wait: float, verify: Callable[[int], bool] | None
) -> tuple[bool, str]:
    """``sig`` (then SIGCONT, so a stopped process can act on it), ``wait`` seconds, SIGKILL.

    Returns whether the process is gone (a zombie counts as gone), and how it
    ended, in words, for the audit record. Not gone means: do not start another.
    """
    name = signal.Signals(sig).name
    if not signal_if_same(pid, start_ticks, sig, verify):
        if not is_alive(pid, start_ticks):
            return True, f"pid {pid} was already gone"
        return False, f"pid {pid} is no longer the target, so was not signalled"
    signal_if_same(pid, start_ticks, signal.SIGCONT)
    if wait_gone(pid, start_ticks, wait):
        return True, f"pid {pid} ended on {name}"
    signal_if_same(pid, start_ticks, signal.SIGKILL)
    if wait_gone(pid, start_ticks, 2.0):
        return True, f"pid {pid} ignored {name} for {wait:g}s; killed"
    return False, f"pid {pid} outlived {name} and SIGKILL (stuck in the kernel?)"


class Member(NamedTuple):
    """A live process of a session: maybe what a dead session leader left behind."""

    pid: int
    start_ticks: int
    cmdline: tuple[str, ...]


def session_members(session: int) -> list[Member]:
    """Every live process (not a zombie, not a kernel thread, not this one) in ``session``."""
    members = []
    me = os.getpid()
    want = str(session).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        # The session field of its stat first, from the raw bytes (state, ppid, pgrp,
        # session follow the last ")"): a restart waits for this walk, and on a busy host
        # nearly every process is in another session. The full look only for its own.
        raw = _read_raw(f"/proc/{entry}/stat")
        if raw is None or raw[raw.rfind(b")") + 2 :].split(b" ", 4)[3:4] != [want]:
            continue
        try:
            st = stat(pid)
            argv = cmdline(pid, st) if st and st.session == session else None
        except PermissionError:
            continue
        if st is None or argv is None or st.dead or st.kernel_thread:
            continue
        members.append(Member(pid, st.start_ticks, tuple(argv)))
    return members


def _in(session: int) -> Callable[[int], bool]:
    """A ``verify`` for ``signal_if_same``: the process is (still) in ``session``. With the
    pid pinned, and its start tick checked: one that has that pid and start tick and is in
    the session was born while the session's number was held (a stranger could reuse a
    member's pid within its start tick, but not join its session)."""

    def check(pid: int) -> bool:
        st = stat(pid)
        return st is not None and st.session == session

    return check


def signal_members(
    members: list[Member], sig: int, session: int
) -> tuple[list[Member], dict[Member, int]]:
    """``sig`` (and SIGCONT, for a stopped one) to each of ``members`` still in ``session``:
    those it reached, each with the clock tick in which it was seen alive there (read
    before the look, as in ``finish_members``)."""
    hit: list[Member] = []
    alive_at: dict[Member, int] = {}
    verify = _in(session)
    for m in members:
        at = ticks(now())
        if signal_if_same(m.pid, m.start_ticks, sig, verify):
            hit.append(m)
            alive_at[m] = at
    for m in hit:
        signal_if_same(m.pid, m.start_ticks, signal.SIGCONT, verify)
    return hit, alive_at


# How often a signalled session's members are looked at while they end.
_MEMBER_POLL = 0.01


def finish_members(
    hit: list[Member], alive_at: dict[Member, int], session: int, wait: float
) -> dict[Member, int]:
    """Wait up to ``wait`` for ``hit`` (signalled) to be gone; SIGKILL what remains. For
    each, the last clock tick in which it was seen alive and still in ``session`` (the
    tick is read before the look: it was alive then, or later), ``alive_at`` brought up
    to date; absent if never seen so.

    What was born in an earlier tick than that, and after it started, was born while the
    session's number was held by it."""
    deadline = time.monotonic() + wait
    alive_at = dict(alive_at)
    left = list(hit)
    while True:
        still = []
        for m in left:
            at = ticks(now())
            st = stat(m.pid)
            if st is None or st.start_ticks != m.start_ticks or st.dead:
                continue  # gone
            if st.session == session:
                alive_at[m] = at
            still.append(m)  # (one that left the session by setsid is no longer proof)
        left = still
        if not left:
            return alive_at
        if time.monotonic() >= deadline:
            break
        time.sleep(_MEMBER_POLL)
    verify = _in(session)
    for m in left:
        signal_if_same(m.pid, m.start_ticks, signal.SIGKILL, verify)
    return alive_at

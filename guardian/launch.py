"""Starting a target detached, waiting until it is ready, ending a start that failed.

Where a target is spawned. (Probe and hook commands are run by
``guardian.commands``; every signal to a process goes through
``guardian.proc``, which checks the process's identity first.)
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from guardian import proc
from guardian.config import Target, own_identity
from guardian.discovery import Found, Matcher, Missing, Unsure, discover, inspect, scan
from guardian.errors import LaunchError
from guardian.files import atomic_write, make_dirs, open_regular

# How long a started-but-not-ready target gets between SIGTERM and SIGKILL.
END_WAIT = 2.0
POLL = 0.05
SEEN_EVERY = 1.0
TAIL_LINES = 10
TAIL_BYTES = 4096


def _open_output(path: Path, warnings: list[str]) -> int:
    """The target's output file; /dev/null (and a warning) if it cannot be opened.

    A full disk, a read-only folder, or a FIFO or folder where the file should
    be must not keep a dead target down (nor hang the start).
    """
    try:
        make_dirs(path.parent)
        return open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as e:
        warnings.append(f"cannot open output file {path} ({e.strerror}); output discarded")
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


class _Identity(NamedTuple):
    """Who the target runs as: Popen's user arguments, and the environment to match."""

    env: dict[str, str]
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def _identity(target: Target) -> _Identity:
    """Who the target runs as: ``user`` (with its groups) and ``group``, dropped before exec.

    Its environment has that user's ``HOME``, ``USER`` and ``LOGNAME`` unless the config
    sets them (cron gives guardian its own, but nothing is inherited).
    """
    env = dict(target.env)
    who = _Identity(env)
    if target.user is None:  # guardian's own user: its HOME, as a login would give it
        for key, value in own_identity().items():
            env.setdefault(key, value)
    else:
        try:
            pw = pwd.getpwnam(target.user)
        except KeyError:
            raise LaunchError(f"no such user {target.user!r}") from None
        for key, value in (("HOME", pw.pw_dir), ("USER", pw.pw_name), ("LOGNAME", pw.pw_name)):
            env.setdefault(key, value)
        if pw.pw_uid != os.geteuid():
            groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
            who = _Identity(env, pw.pw_uid, pw.pw_gid, groups)
    if target.group is not None:
        try:
            gid = grp.getgrnam(target.group).gr_gid
        except KeyError:
            raise LaunchError(f"no such group {target.group!r}") from None
        if gid != os.getegid() or who.group is not None:
            who = _Identity(env, who.user, gid, who.extra_groups or [])
    return who


def spawn(target: Target, warnings: list[str]) -> subprocess.Popen[bytes]:
    """Start the target's argv (no shell) as the leader of a new session.

    A new session survives guardian's exit and a kill of guardian's process
    group, and has no controlling terminal. stdin is /dev/null, output is
    appended to ``target.output``, and no descriptor of guardian's is
    inherited (above all not the lock's, or the target would hold it for ever).
    """
    who = _identity(target)
    out = _open_output(target.output, warnings)
    try:
        return subprocess.Popen(
            list(target.command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=target.cwd,
            env=who.env,
            start_new_session=True,
            close_fds=True,
            umask=0o022,
            user=who.user,
            group=who.group,
            extra_groups=who.extra_groups,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise LaunchError(f"cannot start {target.command[0]}: {detail}") from None
    finally:
        os.close(out)


def write_pidfile(path: Path, pid: int) -> None:
    """Write the pidfile atomically, and never where others could swap it under us.

    A folder others can write to is refused unless it is sticky (/tmp, say)
    and the pidfile, if there is one, is ours: there nobody else can replace it.
    """
    folder = os.stat(path.parent) if path.parent.exists() else None
    if folder is not None and folder.st_mode & 0o022:
        try:
            mine = os.lstat(path).st_uid == os.geteuid()
        except FileNotFoundError:
            mine = True
        if not (folder.st_mode & stat.S_ISVTX and mine):
            raise PermissionError(
                errno.EACCES, f"others can write to {path.parent}, so a pidfile there is unsafe"
            )
    atomic_write(path, f"{pid}\n".encode(), mode=0o644)


def peek_exit(child: subprocess.Popen[bytes]) -> int | None:
    """The child's exit status if it has exited, without reaping it.

    While guardian has not reaped its child, the child's pid (and so its
    process-group id) cannot be given to another process: signalling the
    group stays safe until ``reap``.
    """
    if child.returncode is not None:
        return child.returncode
    result = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status  # killed by a signal, as Popen reports it


class Ready(NamedTuple):
    found: Found
    seconds: float


class Launch:
    """One start in progress: what to end if it does not become ready."""

    def __init__(self, target: Target, child: subprocess.Popen[bytes], matcher: Matcher) -> None:
        self.target = target
        self.proc = child
        self.matcher = matcher
        st = proc.stat(child.pid)  # our unreaped child: its /proc entry is there, zombie or not
        # (No stat is impossible for an unreaped child; if it were, claim no strays at all.)
        self.since_ticks = st.start_ticks if st else 2**63
        self.found: Found | None = None

    def wait_ready(self, alive: Callable[[Found], None] | None = None) -> Ready:
        """Ready: found running, and the same process ``start_grace`` later.

        ``alive`` is told, about once a second, that the process is (still) found
        alive: what a guardian killed meanwhile leaves the next run to know.

        A daemon is found by the pidfile it writes; a foreground target is our
        own child, checked as discovery checks any process (so a pidfile that
        could not be written does not fail a start).

        Raises LaunchError with the reason when that has not happened within
        ``start_timeout``, or when the process exits first.
        """
        target = self.target
        began = time.monotonic()
        end = began + target.start_timeout
        seen_at = 0.0
        told = 0.0
        while True:
            status = peek_exit(self.proc)
            if status is not None and (status != 0 or not target.daemonizes):
                raise LaunchError(f"exited with status {status} before it was ready")
            if target.daemonizes:
                found: Found | Missing | Unsure = discover(
                    target, allow_scan=False, matcher=self.matcher
                )
            else:
                seen = inspect(self.proc.pid, self.matcher)
                found = Missing(seen) if isinstance(seen, str) else seen
            now = time.monotonic()
            if isinstance(found, Found):
                # Identity is pid and start ticks; create_time is wall time, which can
                # move between two looks (/proc/stat's btime follows the clock).
                same = self.found is not None and self.found[:2] == found[:2]
                if not same:
                    self.found, seen_at = found, now
                if alive is not None and (not same or now - told >= SEEN_EVERY):
                    alive(found)
                    told = now
                if now - seen_at >= target.start_grace:
                    return Ready(found, now - began)
                why = f"pid {found.pid} has run {now - seen_at:.1f}s of start_grace"
            else:
                self.found = None
                why = found.reason
            if now >= end:
                raise LaunchError(
                    f"not ready within start_timeout {target.start_timeout:g}s: {why}"
                )
            time.sleep(min(POLL, end - now))

    def strays(self) -> list[Found]:
        """What is the target and started since this start: a daemon that forked into a
        session of its own. Under the target's lock nothing else can have started one."""
        return [
            found
            for found in scan(self.matcher)
            if found.start_ticks >= self.since_ticks and found.pid != self.proc.pid
        ]

    def end(self, wait: float = END_WAIT) -> list[int]:
        """End what this start created: SIGTERM, up to ``wait`` seconds, then SIGKILL.

        That is our child with its process group, and its strays, all at once
        (one wait for all, however many), so this takes ``wait`` and a second at
        most. Returns the pids it signalled.
        """
        child = self.proc
        strays = self.strays()
        ended = []
        if child.returncode is None:
            ended.append(child.pid)
            proc.signal_group(child.pid, signal.SIGTERM)
        hit = [s for s in strays if proc.signal_if_same(s.pid, s.start_ticks, signal.SIGTERM)]
        for s in hit:
            proc.signal_if_same(s.pid, s.start_ticks, signal.SIGCONT)

        def gone() -> bool:
            return (child.returncode is not None or peek_exit(child) is not None) and not any(
                proc.is_alive(s.pid, s.start_ticks) for s in hit
            )

        deadline = time.monotonic() + wait
        while not gone() and time.monotonic() < deadline:
            time.sleep(POLL)
        if child.returncode is None:
            # Still unreaped, so the group id is still ours: sweep what ignored SIGTERM.
            proc.signal_group(child.pid, signal.SIGKILL)
        for s in hit:
            proc.signal_if_same(s.pid, s.start_ticks, signal.SIGKILL)
        if child.returncode is None:
            # A process stuck in the kernel outlives SIGKILL: then it is left unreaped.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(1.0)
        return ended + [s.pid for s in hit]

    def kill_now(self) -> list[int]:
        """For the hard time-out: SIGKILL what it started, without waiting; the pids hit.

        The strays are looked for in a thread given a second: /proc itself may be
        what the run is stuck on.
        """
        hit = []
        found = self.found
        if (
            found is not None
            and found.pid != self.proc.pid
            and proc.signal_if_same(found.pid, found.start_ticks, signal.SIGKILL)
        ):
            hit.append(found.pid)
        if self.proc.returncode is None:
            proc.signal_group(self.proc.pid, signal.SIGKILL)
            hit.append(self.proc.pid)
        strays: list[Found] = []
        look = threading.Thread(target=lambda: strays.extend(self.strays()), daemon=True)
        look.start()
        look.join(1.0)
        for s in list(strays):
            if s.pid not in hit and proc.signal_if_same(s.pid, s.start_ticks, signal.SIGKILL):
                hit.append(s.pid)
        return hit

    def reap(self) -> None:
        """Collect our child's exit status once it is no longer needed (a daemon's parent)."""
        if peek_exit(self.proc) is not None:
            self.proc.wait()


def output_size(path: Path) -> int:
    """How long the output file is now (0 if it is none): where a new start's output begins."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def tail(path: Path, lines: int = TAIL_LINES, since: int = 0) -> list[str]:
    """The last lines of a target's output file written from offset ``since`` on (what
    one start wrote, not the starts before it), for the record of a failed start."""
    try:
        fd = open_regular(path)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        if since > size:  # truncated or rotated meanwhile: all of it is new
            since = 0
        start = max(since, size - TAIL_BYTES)
        data = os.pread(fd, size - start, start)
    except OSError:
        return []
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").splitlines()[-lines:]

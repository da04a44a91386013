"""Starting a target detached, waiting until it is ready, ending what a run started.

The only module that forks or signals.
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
import time
from dataclasses import dataclass
from pathlib import Path

from guardian.config import Target
from guardian.discovery import (
    Found,
    Matcher,
    Member,
    Missing,
    Unsure,
    discover,
    inspect,
    is_alive,
    proc_stat,
    scan,
)
from guardian.errors import LaunchError
from guardian.files import atomic_write

# How long a started-but-not-ready target gets between SIGTERM and SIGKILL.
END_WAIT = 2.0
POLL = 0.05
TAIL_LINES = 10
TAIL_BYTES = 4096


def _open_output(path: Path, warnings: list[str]) -> int:
    """The target's output file; /dev/null (and a warning) if it cannot be opened.

    A full disk or a read-only folder must not keep a dead target down.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
        )
    except OSError as e:
        warnings.append(f"cannot open output file {path} ({e.strerror}); output discarded")
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who the target runs as: Popen's user arguments, and the environment to match."""

    env: dict[str, str]
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def _identity(target: Target) -> _Identity:
    """Who the target runs as: ``user`` (with its groups) and ``group``, dropped before exec."""
    env = dict(target.env)
    who = _Identity(env)
    if target.user is not None:
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
    if (who.user is not None or who.group is not None) and os.geteuid() != 0:
        whom = f"user {target.user!r}" if who.user is not None else f"group {target.group!r}"
        raise LaunchError(f"cannot run as {whom}: guardian is not running as root")
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
    except (OSError, subprocess.SubprocessError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise LaunchError(f"cannot start {target.command[0]}: {detail}") from None
    finally:
        os.close(out)


def start(target: Target, warnings: list[str]) -> Launch:
    """Spawn the target and remember when, so that ``Launch.end`` knows what is ours."""
    proc = spawn(target, warnings)
    stat = proc_stat(proc.pid)  # our unreaped child: its /proc entry is there, zombie or not
    # (No stat is impossible for an unreaped child; if it were, claim no strays at all.)
    return Launch(target, proc, since_ticks=stat.start_ticks if stat else 2**63)


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


def peek_exit(proc: subprocess.Popen[bytes]) -> int | None:
    """The child's exit status if it has exited, without reaping it.

    While guardian has not reaped its child, the child's pid (and so its
    process-group id) cannot be given to another process: signalling the
    group stays safe until ``reap``.
    """
    if proc.returncode is not None:
        return proc.returncode
    result = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status  # killed by a signal, as Popen reports it


@dataclass
class Ready:
    found: Found
    seconds: float


@dataclass
class Launch:
    """One start in progress: what to end if it does not become ready."""

    target: Target
    proc: subprocess.Popen[bytes]
    since_ticks: int  # when our child started, in clock ticks since boot
    found: Found | None = None

    def wait_ready(self) -> Ready:
        """Ready: found running, and the same process ``start_grace`` later.

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
        while True:
            status = peek_exit(self.proc)
            if status is not None and (status != 0 or not target.daemonizes):
                raise LaunchError(f"exited with status {status} before it was ready")
            if target.daemonizes:
                found: Found | Missing | Unsure = discover(target, allow_scan=False)
            else:
                seen = inspect(self.proc.pid, Matcher(target.match))
                found = Missing(seen) if isinstance(seen, str) else seen
            now = time.monotonic()
            if isinstance(found, Found):
                # Identity is pid and start ticks; create_time is wall time, which can
                # move between two looks (/proc/stat's btime follows the clock).
                same = self.found is not None and self.found[:2] == found[:2]
                if not same:
                    self.found, seen_at = found, now
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

    def end(self, wait: float = END_WAIT) -> None:
        """End what this start created: SIGTERM, up to ``wait`` seconds, then SIGKILL.

        That is our child with its process group, and any process with the
        target's command line that started since: a daemon that forked into a
        session of its own before it became ready. Under the target's lock
        nothing else can have started one.
        """
        if self.proc.returncode is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + wait
            while peek_exit(self.proc) is None and time.monotonic() < deadline:
                time.sleep(POLL)
            # Still unreaped, so the group id is still ours: sweep what ignored SIGTERM.
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for stray in scan(Matcher(self.target.match)):
            if stray.start_ticks >= self.since_ticks:
                _end_process(stray, wait)

    def kill_now(self) -> None:
        """For the hard time-out: SIGKILL without waiting (no reaping, no I/O)."""
        if self.found is not None and self.found.pid != self.proc.pid:
            _kill_if_same(self.found, signal.SIGKILL)
        if self.proc.returncode is None:
            _signal_group(self.proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Collect our child's exit status once it is no longer needed (a daemon's parent)."""
        if peek_exit(self.proc) is not None:
            self.proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def signal_if_same(pid: int, start_ticks: int, sig: int, matcher: Matcher | None = None) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start_ticks``
    (and, given ``matcher``, still has the target's exact command line).

    The identity is checked after a pidfd is opened: the pidfd pins the
    process, so what was checked is what is signalled, however fast pids are
    reused. Where the kernel has no pidfd_open (before 5.3), os.kill is the
    best there is. Returns False when there was nothing (left) to signal.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # pragma: no cover - kernels older than 5.3
        pidfd = None
    try:
        if matcher is not None:
            seen = inspect(pid, matcher)
            if not isinstance(seen, Found) or seen.start_ticks != start_ticks:
                return False
        elif not is_alive(Found(pid, start_ticks, 0.0, "pidfile", "")):
            return False
        if pidfd is None:  # pragma: no cover
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


def _kill_if_same(found: Found, sig: signal.Signals) -> bool:
    return signal_if_same(found.pid, found.start_ticks, sig)


def _wait_gone(pid: int, start_ticks: int, wait: float) -> bool:
    """Poll until the process is gone or a zombie (which is dead, however late init reaps it)."""
    probe = Found(pid, start_ticks, 0.0, "pidfile", "")
    deadline = time.monotonic() + wait
    while is_alive(probe):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def stop(
    pid: int, start_ticks: int, sig: int, wait: float, matcher: Matcher | None
) -> tuple[bool, str]:
    """``sig`` (then SIGCONT, so a stopped process can act on it), ``wait`` seconds, SIGKILL.

    Returns whether the process is gone (a zombie counts as gone), and how it
    ended, in words, for the audit record. Not gone means: do not start another.
    """
    name = signal.Signals(sig).name
    if not signal_if_same(pid, start_ticks, sig, matcher):
        if _wait_gone(pid, start_ticks, 0.0):
            return True, f"pid {pid} was already gone"
        return False, f"pid {pid} no longer has the target's command line, so was not signalled"
    signal_if_same(pid, start_ticks, signal.SIGCONT)
    if _wait_gone(pid, start_ticks, wait):
        return True, f"pid {pid} ended on {name}"
    signal_if_same(pid, start_ticks, signal.SIGKILL)
    if _wait_gone(pid, start_ticks, 2.0):
        return True, f"pid {pid} ignored {name} for {wait:g}s; killed"
    return False, f"pid {pid} outlived {name} and SIGKILL (stuck in the kernel?)"


def end_members(members: list[Member], sig: int, wait: float) -> None:
    """End what a dead target left behind: ``sig`` to all, then SIGKILL to what remains."""
    hit = [m for m in members if signal_if_same(m.pid, m.start_ticks, sig)]
    for m in hit:
        signal_if_same(m.pid, m.start_ticks, signal.SIGCONT)
    deadline = time.monotonic() + wait
    for m in hit:
        if not _wait_gone(m.pid, m.start_ticks, max(0.0, deadline - time.monotonic())):
            signal_if_same(m.pid, m.start_ticks, signal.SIGKILL)


def _end_process(found: Found, wait: float) -> None:
    stop(found.pid, found.start_ticks, signal.SIGTERM, wait, None)  # best effort: ending a failure


@dataclass(frozen=True, slots=True)
class CommandResult:
    status: int | None  # None: still running at the time limit, and killed
    output: tuple[str, ...]
    seconds: float


def run_command(argv: tuple[str, ...], *, timeout: float, env: dict[str, str]) -> CommandResult:
    """Run ``argv`` (no shell) in a session of its own, for at most ``timeout`` seconds.

    For probes and hooks: stdin /dev/null, output kept (the last lines), no
    descriptor of guardian's inherited; past the limit its whole process
    group is killed, so nothing it started hangs on.
    """
    began = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        return CommandResult(127, (f"cannot run {argv[0]}: {e.strerror}",), 0.0)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)  # unreaped, so the group id is still ours
        out, _ = proc.communicate()
        status = None
    lines = out.decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    return CommandResult(status, tuple(lines), time.monotonic() - began)


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a target's output file, for the audit record of a failed start."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:]

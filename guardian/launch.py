"""Starting a target detached, waiting until it is ready, ending what a run started.

The only module that forks or signals.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from guardian.config import Target
from guardian.discovery import Found, Matcher, discover, is_alive, proc_stat, scan
from guardian.errors import LaunchError
from guardian.files import atomic_write

# How long a started-but-not-ready target gets between SIGTERM and SIGKILL.
END_WAIT = 2.0
POLL = 0.05
TAIL_LINES = 10
TAIL_BYTES = 4096


def _open_output(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
        )
    except OSError as e:
        raise LaunchError(f"cannot open output file {path}: {e.strerror}") from None


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who the target runs as: Popen's user arguments, and the environment to match."""

    env: dict[str, str]
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def _identity(target: Target) -> _Identity:
    env = dict(target.env)
    if target.user is None:
        return _Identity(env)
    try:
        pw = pwd.getpwnam(target.user)
    except KeyError:
        raise LaunchError(f"no such user {target.user!r}") from None
    for key, value in (("HOME", pw.pw_dir), ("USER", pw.pw_name), ("LOGNAME", pw.pw_name)):
        env.setdefault(key, value)
    if pw.pw_uid == os.geteuid():
        return _Identity(env)
    if os.geteuid() != 0:
        raise LaunchError(f"cannot run as user {target.user!r}: guardian is not running as root")
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    return _Identity(env, pw.pw_uid, pw.pw_gid, groups)


def spawn(target: Target) -> subprocess.Popen[bytes]:
    """Start the target's argv (no shell) as the leader of a new session.

    A new session survives guardian's exit and a kill of guardian's process
    group, and has no controlling terminal. stdin is /dev/null, output is
    appended to ``target.output``, and no descriptor of guardian's is
    inherited (above all not the lock's, or the target would hold it for ever).
    """
    who = _identity(target)
    out = _open_output(target.output)
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


def start(target: Target) -> Launch:
    """Spawn the target and remember when, so that ``Launch.end`` knows what is ours."""
    proc = spawn(target)
    stat = proc_stat(proc.pid)  # our unreaped child: its /proc entry is there, zombie or not
    # (No stat is impossible for an unreaped child; if it were, claim no strays at all.)
    return Launch(target, proc, since_ticks=stat.start_ticks if stat else 2**63)


def write_pidfile(path: Path, pid: int) -> None:
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
        """Ready: found running by its pidfile, and the same process ``start_grace`` later.

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
            found = discover(target, allow_scan=False)
            now = time.monotonic()
            if isinstance(found, Found):
                if self.found != found:
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


def _kill_if_same(found: Found, sig: signal.Signals) -> bool:
    """Signal ``found`` only while that pid is still the process that was found."""
    if not is_alive(found):
        return False
    try:
        os.kill(found.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _end_process(found: Found, wait: float) -> None:
    if not _kill_if_same(found, signal.SIGTERM):
        return
    deadline = time.monotonic() + wait
    while is_alive(found) and time.monotonic() < deadline:
        time.sleep(POLL)
    _kill_if_same(found, signal.SIGKILL)


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

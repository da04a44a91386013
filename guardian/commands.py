"""Running a probe or hook command, bounded as a whole: in time and in memory.

``Popen.communicate`` is wrong for this twice over: it keeps all the output
(a command that floods its stdout grows guardian without limit), and after a
command exits it waits for EOF on the pipe, which never comes while something
the command started (a daemon that called setsid, say) still holds it. Here
the pipe is read with poll against one deadline, only the last bytes are
kept, and a command that has exited is never waited on for EOF.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from typing import NamedTuple

TAIL_LINES = 10
TAIL_BYTES = 4096

# How often the loop looks whether the command has exited, when it prints nothing.
_TICK_MS = 50
_CHUNK = 65536
# After SIGKILL a process dies at once unless it is stuck in the kernel (a hung
# NFS read): then it is left unreaped rather than holding the run for ever.
_KILL_WAIT = 2.0


class CommandResult(NamedTuple):
    # The exit status; negative: killed by that signal; None: still running at
    # the time limit, and killed.
    status: int | None
    # The last TAIL_LINES lines of its stdout and stderr (from the last
    # TAIL_BYTES bytes only), decoded as UTF-8 with replacement.
    output: tuple[str, ...]
    seconds: float
    # It exited, but something it started still held its output open (and was
    # neither waited for nor ended: a hook may leave something running on purpose).
    lingering: bool = False


class _Tail:
    """The last TAIL_BYTES bytes of a stream, however much goes through it."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > TAIL_BYTES:
            del self.data[:-TAIL_BYTES]

    def lines(self) -> tuple[str, ...]:
        return tuple(self.data.decode("utf-8", "replace").splitlines()[-TAIL_LINES:])


def run_command(argv: tuple[str, ...], *, timeout: float, env: dict[str, str]) -> CommandResult:
    """Run ``argv`` (no shell) in a session of its own, for at most ``timeout`` seconds in all.

    stdin is /dev/null, stdout and stderr share one pipe, cwd is /, and no
    descriptor of guardian's is inherited. At the limit its whole process
    group is killed. A command that cannot be started is status 127.
    """
    began = time.monotonic()
    deadline = began + timeout
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        # ValueError: a NUL byte in argv or env, which exec cannot take.
        detail = (e.strerror if isinstance(e, OSError) else None) or str(e)
        program = argv[0] if argv else "(empty command)"
        return CommandResult(127, (f"cannot run {program}: {detail}",), 0.0)
    assert proc.stdout is not None  # noqa: S101  (stdout=PIPE: for mypy)
    tail = _Tail()
    try:
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        status, lingering = _follow(proc, fd, tail, deadline)
    finally:
        # At the limit, and also on the run's own time-out (RunTimeout, raised
        # from a signal handler anywhere in the loop): nothing of it outlives us.
        if proc.returncode is None:
            _kill_group(proc)
        proc.stdout.close()
    return CommandResult(status, tail.lines(), time.monotonic() - began, lingering)


def _follow(
    proc: subprocess.Popen[bytes], fd: int, tail: _Tail, deadline: float
) -> tuple[int | None, bool]:
    """Read ``fd`` into ``tail`` until the command exits or ``deadline``; (status, lingering)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # POLLHUP and POLLERR are always reported
    at_eof = False
    while True:
        # Exit first: a command that ended right at the limit did end.
        if (status := proc.poll()) is not None:
            return status, not at_eof and not _drain(fd, tail)
        left = deadline - time.monotonic()
        if left <= 0:
            return None, False  # run_command kills it (and reaps it)
        # ceil: a poll timeout rounded down to 0 ms would spin until the deadline.
        if poller.poll(min(_TICK_MS, int(left * 1000) + 1)) and not at_eof:
            try:
                chunk = os.read(fd, _CHUNK)
            except BlockingIOError:
                continue
            if chunk:
                tail.add(chunk)
            else:  # every writer closed it; now only the exit is awaited
                at_eof = True
                poller.unregister(fd)


def _drain(fd: int, tail: _Tail) -> bool:
    """Read what the pipe holds right now, without waiting; whether it is at EOF.

    Only the bytes already buffered (FIONREAD) are read, so a lingering writer
    that floods the pipe cannot keep us here.
    """
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    (pending,) = struct.unpack("i", raw)
    while pending > 0:
        chunk = os.read(fd, min(pending, _CHUNK))
        if not chunk:
            return True
        tail.add(chunk)
        pending -= len(chunk)
    try:
        chunk = os.read(fd, _CHUNK)
    except BlockingIOError:
        return False  # open, and empty: someone still holds the write end
    tail.add(chunk)
    return not chunk


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command and everything in its session, and reap it (within reason).

    Only called while the command is unreaped, so its pid (and so its group and
    session ids) cannot have been reused. Its session, not only its process
    group: a child that moved to a group of its own (setpgid) is still in it.
    """
    from guardian import proc

    for kill, target in ((os.killpg, child.pid), (os.kill, child.pid)):
        # os.kill as well: the command may have moved itself to another group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(target, signal.SIGKILL)
    for member in proc.session_members(child.pid):
        proc.signal_if_same(member.pid, member.start_ticks, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(_KILL_WAIT)

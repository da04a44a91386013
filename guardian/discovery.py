"""Is the target running? Pidfile, exact command line, start time; never grep.

Pure reads. The pidfile path reads /proc directly and needs no psutil; the
process-table scan (only when the pidfile fails) uses psutil, and this is
the only module that touches it. The rest of guardian sees ``Found``,
``Missing`` or ``Unsure``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal, NamedTuple

from guardian.config import Target

# Linux's PID_MAX_LIMIT (4 * 1024 * 1024): no pid is larger on any host.
PID_MAX = 4_194_304
# /proc/stat's btime is whole seconds and a process's start is in clock
# ticks, so psutil's create_time can be up to a second off; allow two.
START_TOLERANCE = 2.0
_PIDFILE_MAX_BYTES = 64


class Found(NamedTuple):
    """The target is running as ``pid``, which started at ``create_time``."""

    pid: int
    start_ticks: int
    create_time: float
    via: Literal["pidfile", "scan"]
    evidence: str


class Missing(NamedTuple):
    """The target is not running; ``reason`` says how we know."""

    reason: str
    old_pid: int | None = None


class Unsure(NamedTuple):
    """Something may be the target but guardian cannot tell which: never start, never signal."""

    reason: str
    old_pid: int | None = None
    pids: tuple[int, ...] = ()


Discovery = Found | Missing | Unsure


class StalePidfile(Exception):  # a finding, not a failure
    def __init__(self, reason: str, pid: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pid = pid


def read_pidfile(path: Path) -> tuple[int, float]:
    """The pid in ``path`` and the file's mtime, or StalePidfile saying what is wrong with it."""
    try:
        # O_NONBLOCK: a FIFO planted where the pidfile should be must not hang the run.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise StalePidfile(f"no pidfile at {path}") from None
    except OSError as e:
        raise StalePidfile(f"cannot read pidfile {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StalePidfile(f"pidfile {path} is not a regular file")
        data = os.read(fd, _PIDFILE_MAX_BYTES + 1)
    except OSError as e:
        raise StalePidfile(f"cannot read pidfile {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    text = data.strip()
    if not text:
        raise StalePidfile(f"pidfile {path} is empty")
    if len(data) > _PIDFILE_MAX_BYTES or not text.isdigit() or not text.isascii():
        shown = data[:40].decode("ascii", "backslashreplace")
        raise StalePidfile(f"pidfile {path} holds {shown!r}, not a pid")
    pid = int(text)
    if pid <= 1:
        raise StalePidfile(f"pidfile {path} names pid {pid}, which is never a target", pid)
    if pid > PID_MAX:
        raise StalePidfile(f"pidfile {path} names pid {pid}, larger than any pid", pid)
    return pid, st.st_mtime


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _realpath(path: str) -> str:
    return os.path.realpath(path)


class Matcher:
    """Exact command-line identity for one target.

    A process is the target when its argv equals ``want`` item for item, with
    two allowances: argv[0] may be another name for the same executable
    (a symlink, or a bare name that /proc/PID/exe resolves to it), and when
    ``want[0]`` is a ``#!`` script, the interpreter the kernel put in front of
    it (``python3 /usr/bin/supervisord -c ...``) is accepted, and only that one.
    """

    def __init__(self, want: tuple[str, ...]) -> None:
        self.want = want
        self._real0: str | None = None
        self._shebang: tuple[str, ...] | None = None
        self._shebang_read = False

    @property
    def real0(self) -> str:
        if self._real0 is None:
            self._real0 = _realpath(self.want[0])
        return self._real0

    def shebang(self) -> tuple[str, ...] | None:
        """The argv prefix the kernel (or env) puts before the script, or None if not a script."""
        if not self._shebang_read:
            self._shebang_read = True
            self._shebang = _read_shebang(self.want[0])
        return self._shebang

    def same_program(self, argv0: str, pid: int, want0: str, real0: str) -> bool:
        if argv0 == want0:
            return True
        if argv0.startswith("/"):
            return _realpath(argv0) == real0
        if "/" in argv0:  # relative to the process's own working directory
            cwd = _readlink(f"/proc/{pid}/cwd")
            return cwd is not None and _realpath(os.path.join(cwd, argv0)) == real0
        # A bare name: trust only the kernel's record of what was executed,
        # and only under a name that could mean it (not busybox-style aliases).
        exe = _readlink(f"/proc/{pid}/exe")
        names = {os.path.basename(want0), os.path.basename(real0)}
        return exe == real0 and argv0 in names

    def matches(self, cmdline: list[str], pid: int) -> bool:
        want = self.want
        n = len(want)
        if not cmdline:
            return False
        rest_equal = len(cmdline) == n and cmdline[1:] == list(want[1:])
        if rest_equal and self.same_program(cmdline[0], pid, want[0], self.real0):
            return True
        k = len(cmdline) - n  # how many items stand before the script
        if k < 1 or cmdline[k + 1 :] != list(want[1:]):
            return False
        prefix = self.shebang()
        if prefix is None or len(prefix) != k or list(prefix[1:]) != cmdline[1:k]:
            return False
        script = cmdline[k]
        if script != want[0] and not (script.startswith("/") and _realpath(script) == self.real0):
            return False
        interpreter = prefix[0]
        if "/" not in interpreter:  # `#!/usr/bin/env NAME`: env found NAME on its PATH
            return os.path.basename(cmdline[0]) == interpreter
        return self.same_program(cmdline[0], pid, interpreter, _realpath(interpreter))


def _read_shebang(path: str) -> tuple[str, ...] | None:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    # Linux passes everything after the interpreter as one argument.
    interpreter, _, arg = line.partition(" ")
    arg = arg.strip()
    if not interpreter:
        return None
    if os.path.basename(interpreter) == "env" and arg:
        words = arg.split()
        if words[0] == "-S":
            words = words[1:]
        # Leading options and NAME=value assignments are env's, not the program's.
        while words and (words[0].startswith("-") or "=" in words[0]):
            words = words[1:]
        return tuple(words) or None
    return (interpreter, arg) if arg else (interpreter,)


def _describe(cmdline: list[str]) -> str:
    return repr(cmdline)


class ProcStat(NamedTuple):
    state: str
    ppid: int
    session: int
    start_ticks: int  # since boot: with the pid, a process's identity for ever


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> ProcStat | None:
    """State, parent and start time from /proc/PID/stat, or None if there is no such process.

    Read directly rather than through psutil: the start time in clock ticks
    since boot never changes, whereas a wall-clock create_time moves with
    the clock, and this is the path every healthy run takes.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm, in parentheses, may itself hold ") ": split at the last one.
    fields = data[data.rindex(b")") + 2 :].split()
    return ProcStat(fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19]))


def proc_cmdline(pid: int) -> list[str] | None:
    """argv exactly as the kernel holds it (NUL-separated), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [os.fsdecode(arg) for arg in data.split(b"\0")[:-1]] if data else []


def wall_time(start_ticks: int) -> float:
    """A start time in clock ticks since boot as seconds since the epoch (for people and mtimes)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1]) + start_ticks / _CLK_TCK
    raise RuntimeError("/proc/stat has no btime line")  # pragma: no cover - every Linux has it


def inspect(pid: int, matcher: Matcher, *, not_after: float | None = None) -> Found | str | Unsure:
    """Found if ``pid`` is the target (and started no later than ``not_after``), else why not."""
    try:
        before = proc_stat(pid)
        cmdline = proc_cmdline(pid) if before else None
        after = proc_stat(pid) if cmdline is not None else None
    except PermissionError:
        return Unsure(f"pid {pid} cannot be inspected (permission denied)", pid, (pid,))
    if (
        before is None
        or cmdline is None
        or after is None
        or after.start_ticks != before.start_ticks
    ):
        return f"pid {pid} is not running"
    if after.state == "Z" or not cmdline:
        return f"pid {pid} is a zombie (dead, not yet reaped)"
    if not matcher.matches(cmdline, pid):
        return (
            f"pid {pid}'s command line is {_describe(cmdline)}, not {_describe(list(matcher.want))}"
        )
    create_time = wall_time(after.start_ticks)
    if not_after is not None and create_time > not_after + START_TOLERANCE:
        return f"pid {pid} started after the pidfile was written: another process (pid reused)"
    return Found(pid, after.start_ticks, create_time, "pidfile", f"pid {pid}")


def is_alive(found: Found) -> bool:
    """True while ``found.pid`` is still the process that was found, and not a zombie."""
    try:
        now = proc_stat(found.pid)
    except PermissionError:  # not ours to read any more: not the target we found
        return False
    return now is not None and now.start_ticks == found.start_ticks and now.state != "Z"


class Member(NamedTuple):
    """A live process of a session: what a dead session leader left behind."""

    pid: int
    start_ticks: int
    cmdline: tuple[str, ...]


def session_members(session: int, since_ticks: int) -> list[Member]:
    """Live processes of ``session`` that started no earlier than ``since_ticks``.

    guardian starts every target as the leader of a new session, so these are
    what the target started (supervisord's agents, say), re-parented to init
    when it died. The kernel gives a session's id to no new process while any
    member lives; the caller checks that the leader itself is gone, and the
    start-time bound keeps out processes older than the target.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = proc_stat(pid)
            cmdline = proc_cmdline(pid) if stat and stat.session == session else None
        except PermissionError:
            continue
        if stat is None or cmdline is None or stat.state == "Z" or pid == os.getpid():
            continue
        if stat.start_ticks >= since_ticks:
            members.append(Member(pid, stat.start_ticks, tuple(cmdline)))
    return members


def scan(matcher: Matcher) -> list[Found]:
    """Every live process whose command line is the target's, checked as ``inspect`` does.

    Where a match's parent also matches (a daemon before it forks, an agent
    that forks workers) only the eldest is kept: that is the target.
    """
    import psutil  # only a run whose pidfile failed pays for the process table

    me = os.getpid()
    candidates: dict[int, int] = {}
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = proc.info["cmdline"]
        if proc.pid != me and cmdline and matcher.matches(cmdline, proc.pid):
            candidates[proc.pid] = proc.info["ppid"]
    found = []
    for pid, ppid in sorted(candidates.items()):
        if ppid in candidates:
            continue
        result = inspect(pid, matcher)
        if isinstance(result, Found):
            found.append(result)
    return found


def discover(target: Target, *, allow_scan: bool = True) -> Discovery:
    """Find the target: by its pidfile first, by an exact process-table scan if that fails."""
    matcher = Matcher(target.match)
    old_pid: int | None = None
    try:
        pid, written = read_pidfile(target.pidfile)
    except StalePidfile as stale:
        reason, old_pid = stale.reason, stale.pid
    else:
        old_pid = pid
        result = inspect(pid, matcher, not_after=written)
        if isinstance(result, Found):
            return result._replace(evidence=f"pidfile names pid {pid}")
        if isinstance(result, Unsure):
            return result
        reason = f"pidfile names pid {pid}, {_clause(result, pid)}"
    if not allow_scan:
        return Missing(reason, old_pid)
    matches = scan(matcher)
    if not matches:
        return Missing(f"{reason}; no process has the command line {list(target.match)!r}", old_pid)
    if len(matches) > 1:
        pids = tuple(m.pid for m in matches)
        return Unsure(
            f"{reason}; {len(pids)} processes match the command line "
            f"(pids {', '.join(map(str, pids))}): not adopting any, not starting another",
            old_pid,
            pids,
        )
    match = matches[0]
    evidence = f"{reason}; pid {match.pid} matches the command line"
    return match._replace(via="scan", evidence=evidence)


def _clause(result: str, pid: int) -> str:
    """'pid 42 is not running' -> 'which is not running', to follow 'pidfile names pid 42, '."""
    rest = result.removeprefix(f"pid {pid}")
    if rest.startswith("'s "):
        return "whose " + rest[3:]
    return "which" + rest

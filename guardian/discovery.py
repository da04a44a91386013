"""Is the target running? Pidfile, memory, exact identity; never grep.

The target is the process that runs the configured program, with the
configured command line, as the configured user. Pure reads: the pidfile and
/proc (through ``guardian.proc``). The rest of guardian sees ``Found``,
``Missing`` or ``Unsure``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from guardian import proc

if TYPE_CHECKING:
    from guardian.config import Target

# Linux's PID_MAX_LIMIT (4 * 1024 * 1024): no pid is larger on any host.
PID_MAX = 4_194_304
# /proc/stat's btime is whole seconds and a process's start is in clock
# ticks, so a wall-clock start time can be up to a second off; allow two.
START_TOLERANCE = 2.0
_PIDFILE_MAX_BYTES = 64
_PATH_MAX = 4096  # Linux's PATH_MAX


class Found(NamedTuple):
    """The target is running as ``pid``, which started at ``start_ticks`` in ``session``."""

    pid: int
    start_ticks: int
    create_time: float
    via: Literal["pidfile", "memory", "scan"]
    evidence: str
    session: int = 0
    exe: str = ""  # the program it runs, as /proc/PID/exe says
    # When it was seen alive (CLOCK_BOOTTIME), read just before the look that saw it: what
    # started in an earlier clock tick started while it lived (see Guard.leftovers).
    seen: float = 0.0


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


class Pidfile(NamedTuple):
    pid: int
    written: float  # its mtime: the target started no later than this
    owner: int
    guarded: bool  # in a folder nobody else can replace it in


def read_pidfile(path: Path, owners: frozenset[int] | None = None) -> Pidfile:
    """The pid in ``path``, or StalePidfile saying what is wrong with it.

    Only a regular file is opened (a FIFO would hang the run, and a symlink
    could make root open a device, which can have effects of its own). With
    ``owners``, a pidfile owned by anyone else is not believed: it could name
    any process.
    """
    from guardian.files import open_regular

    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise StalePidfile(f"no pidfile at {path}") from None
    except OSError as e:
        raise StalePidfile(f"cannot read pidfile {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if owners is not None and st.st_uid not in owners:
            raise StalePidfile(
                f"pidfile {path} is owned by {_user(st.st_uid)}, who is neither root nor "
                "the target's user, so it is not believed"
            )
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
    return Pidfile(pid, st.st_mtime, st.st_uid, _guarded(path.parent))


def _guarded(folder: Path) -> bool:
    """Can nobody but its owner (root or guardian's user) replace a file in ``folder``?"""
    try:
        st = os.stat(folder)
    except OSError:
        return False
    writable = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    return st.st_uid in (0, os.geteuid()) and not writable


def _user(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _realpath(path: str) -> str:
    return os.path.realpath(path)


class Matcher:
    """Exact identity for one target: command line, program and user.

    A process is the target when its argv equals ``want`` item for item, the
    program the kernel executed for it is the one ``want[0]`` names, and it
    runs as ``uid``. Two allowances: argv[0] may be another name for the same
    program (a symlink, or a bare name), and when ``want[0]`` is a ``#!``
    script, the interpreter the kernel put in front of it (``python3
    /usr/bin/supervisord -c ...``) is accepted, and only that one. ``exec -a``
    can borrow any argv[0]; it cannot borrow the program, so that is checked
    through /proc/PID/exe. ``uid`` None accepts any user (for tests and tools,
    never for a target).
    """

    def __init__(
        self, want: tuple[str, ...], uid: int | None = None, path_env: str | None = None
    ) -> None:
        self.want = want
        self.uid = uid
        self.path_env = path_env or os.environ.get("PATH", os.defpath)
        self._real0: str | None = None
        self._shebang: tuple[str, ...] | None = None
        self._shebang_read = False
        self._tail = _tail(want)
        self._counts: frozenset[int] | None = None
        # The process guardian last knew as the target: pid, start ticks, its program.
        self.known: tuple[int, int, str] | None = None
        # Only looking (status, as a user who is not root): a process whose program the
        # kernel will not show (another user's) is taken on its command line and user,
        # and said so. Never for a guardian that acts: it would let `exec -a` through.
        self.unverified_ok = False

    @classmethod
    def for_target(cls, target: Target) -> Matcher:
        return cls(target.match, uid=target_uid(target), path_env=target.env.get("PATH"))

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

    def could_be(self, raw: bytes) -> bool:
        """False only if no process whose /proc/PID/cmdline holds ``raw`` can be the
        target, by the rules of ``program``: the scan's cheap first look at every process.

        Both forms ``program`` accepts (the program itself, or it behind its ``#!``
        interpreter) end with ``want[1:]``, item for item, after at least one item,
        and have ``len(want)`` items, or that and as many as the interpreter's prefix.
        Items compare as bytes exactly as they do as strings (``os.fsdecode`` is
        one-to-one), so nothing here resolves a path or decodes a byte.
        """
        if self._tail is None:  # an item no command line can hold: leave it to program
            return True
        end = raw.rfind(b"\0") + 1  # what follows the last NUL is no item (proc.cmdline)
        if not raw.endswith(self._tail, 0, end):
            return False
        if self._counts is None:
            n, prefix = len(self.want), self.shebang()
            self._counts = frozenset({n, n + len(prefix)} if prefix else {n})
        return raw.count(b"\0", 0, end) in self._counts

    def same_program(
        self, argv0: str, pid: int, want0: str, real0: str, where: proc.Stat | None = None
    ) -> bool:
        """May ``argv0`` name ``want0``? (Whether it is that program, /proc/PID/exe says.)"""
        if argv0 == want0:
            return True
        if len(argv0) > _PATH_MAX:  # no path is longer: and resolving it could take seconds
            return False
        if argv0.startswith("/"):
            return _realpath(argv0) == real0
        if "/" in argv0:  # relative to the folder it was started from
            cwd = proc.cwd(pid, where)
            if cwd is not None and _realpath(os.path.join(cwd, argv0)) == real0:
                return True
            # A daemon changes folder (chdir("/")) after it starts: judge by the name.
            argv0 = os.path.basename(argv0)
        # A bare name: only under a name that could mean it (not busybox-style aliases).
        return argv0 in {os.path.basename(want0), os.path.basename(real0)}

    def program(self, cmdline: list[str], pid: int, where: proc.Stat | None = None) -> str | None:
        """The program the kernel must have executed if ``cmdline`` is the target's, else None.

        ``"env:NAME"`` stands for a ``#!/usr/bin/env NAME`` interpreter, found on PATH.
        """
        want = self.want
        n = len(want)
        if not cmdline:
            return None
        rest_equal = len(cmdline) == n and cmdline[1:] == list(want[1:])
        if rest_equal and self.same_program(cmdline[0], pid, want[0], self.real0, where):
            return self.real0
        k = len(cmdline) - n  # how many items stand before the script
        if k < 1 or cmdline[k + 1 :] != list(want[1:]):
            return None
        prefix = self.shebang()
        if prefix is None or len(prefix) != k or list(prefix[1:]) != cmdline[1:k]:
            return None
        script = cmdline[k]
        if script != want[0] and not (script.startswith("/") and _realpath(script) == self.real0):
            return None
        interpreter = prefix[0]
        if "/" not in interpreter:  # `#!/usr/bin/env NAME`: env found NAME on its PATH
            return f"env:{interpreter}" if os.path.basename(cmdline[0]) == interpreter else None
        real = _realpath(interpreter)
        return real if self.same_program(cmdline[0], pid, interpreter, real, where) else None

    def runs(
        self, pid: int, program: str, where: proc.Stat | None = None, exe: str | None = None
    ) -> bool:
        """Does the kernel say ``pid`` executes ``program``? (PermissionError if it won't say.)

        Or, for the very process guardian knew (pid and start time), the program it
        ran then: a symlink moved since (update-alternatives, a new release, a
        rebuilt virtualenv) does not make the target it started an impostor.
        (``exe``: /proc/PID/exe, when the caller has read it already.)
        """
        exe = exe if exe is not None else proc.exe(pid, where)
        if exe is None:
            return False
        known = self.known
        if (
            known is not None
            and where is not None
            and known[:2] == (pid, where.start_ticks)
            and known[2] == exe
        ):
            return True
        if program.startswith("env:"):
            name = program[4:]
            from guardian.config import which

            found = which(name, self.path_env)
            if found is not None and _realpath(found) == exe:
                return True
            # python3 -> python3.11: the versioned file a bare name resolves to.
            return re.fullmatch(re.escape(name) + r"[0-9.]*", os.path.basename(exe)) is not None
        return exe == program or proc.same_file(pid, program, where)

    def matches(self, cmdline: list[str], pid: int) -> bool:
        """The command line and the program (not the user: see ``inspect``)."""
        where = proc.stat(pid)
        program = self.program(cmdline, pid, where)
        return program is not None and self.runs(pid, program, where)


def target_uid(target: Target) -> int:
    """The user the target runs as: its ``user``, or guardian's own."""
    if target.user is None:
        return os.geteuid()
    import pwd

    return pwd.getpwnam(target.user).pw_uid


def _tail(want: tuple[str, ...]) -> bytes | None:
    """How /proc/PID/cmdline of the target ends: NUL, then ``want[1:]`` each NUL-ended."""
    try:
        return b"\0" + b"".join(os.fsencode(arg) + b"\0" for arg in want[1:])
    except UnicodeEncodeError:  # pragma: no cover - TOML strings cannot hold a lone surrogate
        return None


def _read_shebang(path: str) -> tuple[str, ...] | None:
    try:
        # O_NONBLOCK: a FIFO put where the program should be must not hang the run.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 256)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    # As Linux reads it (fs/binfmt_script.c): the interpreter ends at a space or a tab
    # (a tab too: "#!/usr/bin/python3<TAB>-u" was once missed, and the target started
    # twice); everything after it, less the spaces and tabs around it, is one argument.
    # Bytes decoded as /proc/PID/cmdline's are, so that the two compare.
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    cut = min((i for i in (line.find(b" "), line.find(b"\t")) if i >= 0), default=len(line))
    interpreter, arg = os.fsdecode(line[:cut]), os.fsdecode(line[cut:].strip(b" \t"))
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


def _program_of(pid: int, where: proc.Stat, matcher: Matcher) -> tuple[str | None, bool]:
    """/proc/PID/exe; and whether it went unverified (only looking, and the kernel
    would not say: the Found then has no ``exe``)."""
    try:
        return proc.exe(pid, where), False
    except PermissionError:
        if not matcher.unverified_ok:
            raise
        return None, True


def inspect(
    pid: int, matcher: Matcher, *, not_after: float | None = None, own_pidfile: bool = False
) -> Found | str | Unsure:
    """Found if ``pid`` is the target (and started no later than ``not_after``), else why not.

    ``own_pidfile``: ``pid`` comes from a pidfile guardian writes itself, in a
    folder nobody else can write to. A process there with the target's command
    line and user, started no later than the pidfile was written, that runs
    another program than ``match[0]`` names now, is most likely guardian's own
    start with a symlink moved since; but it could be an impostor: Unsure,
    neither adopted nor doubled.
    """
    try:
        before = proc.stat(pid)
        if before is None:
            return f"pid {pid} is not running"
        if before.kernel_thread:
            return f"pid {pid} is a kernel thread ({before.comm}), never a target"
        uid = proc.real_uid(pid)
        cmdline = proc.cmdline(pid, before)
        seen = proc.now()
        after = proc.stat(pid)
        if uid is None or cmdline is None or after is None:
            return f"pid {pid} is not running"
        if after.start_ticks != before.start_ticks:
            return f"pid {pid} is not running"  # it ended and its pid was reused while we looked
        if after.dead:
            return f"pid {pid} is a zombie (dead, not yet reaped)"
        if matcher.uid is not None and uid != matcher.uid:
            return f"pid {pid} runs as {_user(uid)}, not {_user(matcher.uid)}"
        program = matcher.program(cmdline, pid, after)
        if program is None:
            want = list(matcher.want)
            return f"pid {pid}'s command line is {describe(cmdline)}, not {describe(want)}"
        exe, unverified = _program_of(pid, after, matcher)
        if not unverified and not matcher.runs(pid, program, after, exe):
            shown = program.removeprefix("env:")
            started_before = not_after is not None and (
                proc.wall_time(after.start_ticks) <= not_after + START_TOLERANCE
            )
            if own_pidfile and started_before:
                return Unsure(
                    f"pid {pid}, named by guardian's own pidfile, has the command line but "
                    f"runs {exe}, not {shown}: started before that moved (a symlink?), or an "
                    "impostor; not adopting it, not starting another (guardian restart, if "
                    "it is the old target)",
                    pid,
                    (pid,),
                )
            return f"pid {pid} has the command line but runs {exe}, not {shown} (an impostor)"
    except PermissionError:
        return Unsure(f"pid {pid} cannot be inspected (permission denied)", pid, (pid,))
    create_time = proc.wall_time(after.start_ticks)
    if not_after is not None and create_time > not_after + START_TOLERANCE:
        return f"pid {pid} started after the pidfile was written: another process (pid reused)"
    found = Found(pid, after.start_ticks, create_time, "pidfile", f"pid {pid}", after.session)
    return found._replace(exe=exe or "", seen=seen)


_SHOWN = 200  # of a command line in a record: a stranger's argv can be megabytes


def describe(argv: list[str]) -> str:
    """A command line for a record, cut short if long."""
    text = repr(argv)
    if len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... ({len(text) - _SHOWN} more characters)"


def scan(matcher: Matcher) -> list[Found]:
    """Every live process that is the target, checked as ``inspect`` does.

    Reads /proc itself (psutil splits a one-item command line at its spaces, so
    it would miss a program whose path has one). Where a match's parent also
    matches (a daemon before it forks, an agent that forks workers) only the
    eldest is kept: that is the target.

    Its cost grows with the processes of root and of the target's user: a stat
    and a read of /proc/PID/cmdline each (about 20 us; 0.1 s for 5,000 on two
    cores), the full checks only where those bytes could be the target's.
    """
    me = os.getpid()
    # The user first: another user's processes cost nothing more (a stranger's command
    # line can be made slow to look at). This is the effective user, root's or the
    # target's: inspect reads the real one.
    owners = None if matcher.uid is None else frozenset({0, matcher.uid})
    candidates: dict[int, int] = {}
    # On a busy host nearly every process is ruled out here, on its user and the bytes of
    # its command line: nothing decoded, no path resolved, no other file read. An empty
    # one (a kernel thread, a zombie, a main thread gone) is looked at in full.
    could_be = matcher.could_be
    for pid, raw in proc.cmdlines(owners):
        if pid == me or (raw and not could_be(raw)):
            continue
        try:
            where = proc.stat(pid)
            argv = proc.cmdline(pid, where) if where is not None else None
            # Only the command line here: inspect checks the program and the user.
            if argv and where is not None and matcher.program(argv, pid, where) is not None:
                candidates[pid] = where.ppid
        except (PermissionError, FileNotFoundError):
            continue
    found = []
    for pid, ppid in sorted(candidates.items()):
        result = inspect(pid, matcher)
        if isinstance(result, Found) and not (
            ppid in candidates and isinstance(inspect(ppid, matcher), Found)
        ):
            found.append(result)
    return found


def discover(
    target: Target,
    *,
    remembered: tuple[int, int, str] | None = None,
    allow_scan: bool = True,
    matcher: Matcher | None = None,
) -> Discovery:
    """Find the target: by its pidfile, then as the process guardian last knew
    (``remembered``: pid, start ticks and program), then by an exact process-table scan."""
    matcher = matcher or Matcher.for_target(target)
    if remembered is not None:
        matcher.known = remembered
    old_pid: int | None = None
    owners = frozenset({0, os.geteuid(), *((matcher.uid,) if matcher.uid is not None else ())})
    try:
        pid, written, owner, guarded = read_pidfile(target.pidfile, owners)
    except StalePidfile as stale:
        reason, old_pid = stale.reason, stale.pid
    else:
        old_pid = pid
        own = not target.daemonizes and owner == os.geteuid() and guarded
        result = inspect(pid, matcher, not_after=written, own_pidfile=own)
        if isinstance(result, Found):
            return result._replace(evidence=f"pidfile names pid {pid}")
        if isinstance(result, Unsure):
            return result
        reason = f"pidfile names pid {pid}, {_clause(result, pid)}"
    if remembered is not None and remembered[0] != old_pid:
        seen = inspect(remembered[0], matcher)
        if isinstance(seen, Found) and seen.start_ticks == remembered[1]:
            evidence = f"{reason}; pid {seen.pid}, found before, is still the target"
            return seen._replace(via="memory", evidence=evidence)
    if not allow_scan:
        return Missing(reason, old_pid)
    matches = scan(matcher)
    if not matches:
        shown = describe(list(target.match))
        return Missing(f"{reason}; no process has the command line {shown}", old_pid)
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

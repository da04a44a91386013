r"""The crontab line that runs guardian: render it, install it, find it, remove it.

guardian writes and recognises its own line itself, in one strict shape::

    <schedule> [<user>] <command> # guardian: <config path>

python-crontab renders and checks the schedule only. Its parser takes the
first `` #`` of a line for the start of a comment, so a config path with
`` #`` in it (quoted in the command) was never matched back; and it escapes
``%`` in a way that a ``\`` before the ``%`` defeats. So every shell word of
the command is quoted for cron as well as for the shell (``cron_word``), and
the marker's path has its ``%`` escaped (``marker``): cron(8) ends a command
at an unescaped ``%`` and feeds the rest to it as input, the comment included.
A newline cannot be in a crontab line: a path with one is refused.

The rest of the crontab is kept byte for byte: guardian splices its one line
into the text rather than letting python-crontab re-render the whole table,
because that round trip moves environment lines and comments and rewrites
schedules (``0 * * * *`` becomes ``@hourly``).

Imported only by install, uninstall and status: never on the ``check`` path.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crontab import CronSlices, CronTab

from guardian import locking
from guardian.errors import ConfigError, GuardianError
from guardian.files import SAFE, NotRegular, atomic_write

MARKER = "guardian:"
INTERVAL_HELP = (
    "1m to 59m dividing 60 (1m, 2m, 3m, 4m, 5m, 6m, 10m, 12m, 15m, 20m, 30m), "
    "1h to 12h dividing 24 (1h, 2h, 3h, 4h, 6h, 8h, 12h), or 1d"
)
_CRON_FILE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # what Debian's cron reads in /etc/cron.d
LOCK_WAIT = 30.0


class CronError(GuardianError):
    """The crontab could not be read or written (exit 1: the command did not do its job)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Interval:
    text: str
    seconds: int
    schedule: str


def parse_interval(text: str) -> Interval:
    m = re.fullmatch(r"([1-9][0-9]?)([mhd])", text.strip())
    if m:
        n, unit = int(m[1]), m[2]
        if unit == "m" and n <= 59 and 60 % n == 0:
            return Interval(text, n * 60, f"*/{n} * * * *")
        if unit == "h" and n <= 12 and 24 % n == 0:
            return Interval(text, n * 3600, f"0 */{n} * * *")
        if unit == "d" and n == 1:
            return Interval(text, 86400, "0 0 * * *")
    raise ValueError(f"{text!r} is not an interval guardian can schedule; use {INTERVAL_HELP}")


# The first line of a cron file guardian creates: with only it (and blank lines) left,
# the file is guardian's alone, and `guardian uninstall` deletes it.
HEADER = "# Written by `guardian install`; `guardian uninstall` removes its lines.\n"


def lines_of(text: str) -> list[str]:
    r"""``text`` in lines, each with its ``\n``: cron's lines (``str.splitlines`` would also
    split at ``\r``, ``\x85``, ``\u2028`` and the like, which cron keeps in a line)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def empty(text: str, *, system: bool) -> bool:
    """Nothing in ``text`` but blank lines (and, in a cron file, guardian's ``HEADER``)."""
    return all(
        not line.strip() or (system and line.removesuffix("\n") + "\n" == HEADER)
        for line in lines_of(text)
    )


# What a crontab line cannot hold as it is: a newline ends it, and Debian's
# `crontab -l` shows a carriage return as the two characters \r and a backspace as
# \b (cron 3.0pl1-149 on), so the line could not be found again.
_NOT_IN_A_LINE = re.compile(r"[\n\r\b]")


def check_path(path: Path) -> None:
    """A path that goes in a crontab line: one without a newline, a carriage return or
    a backspace (a line cannot hold the first; ``crontab -l`` garbles the others)."""
    if _NOT_IN_A_LINE.search(str(path)):
        raise ConfigError(
            f"{str(path)!r}: a path with a newline, carriage return or backspace cannot go "
            "in a crontab line; rename it"
        )


def _escape_percent(text: str) -> str:
    r"""``text`` with each ``%`` escaped as cron(8) reads it.

    cron ends the command at a ``%`` and feeds the rest to it as input; ``\%``
    is a ``%``, and a ``\`` before anything else is kept as it is (Debian
    cron's do_command.c). So a ``%`` after n backslashes gets n more and one.
    """
    return re.sub(r"(\\*)%", lambda m: m[1] * 2 + "\\%", text)


def cron_word(word: str) -> str:
    r"""``word`` as one shell word that cron passes to the shell intact, and in which no
    ``#`` follows a blank (so the marker is the first `` # `` of the line).

    shlex quotes it for the shell; each ``%`` then becomes ``\%`` (outside quotes:
    cron turns it back into ``%``), and each ``#`` in a quoted word is put outside the
    quotes, where in the middle of a word it starts no comment (POSIX sh, 2.3).
    """
    check_path(Path(word))
    quoted = shlex.quote(word)
    if not quoted.startswith("'"):  # only shlex's safe characters: no backslash, no '#'
        return quoted.replace("%", "\\%")
    return quoted.replace("%", "'\\%'").replace("#", "'#'")


def marker(config: Path) -> str:
    """The comment that ends guardian's line for ``config``: ``guardian: <path>``.

    Its ``%`` are escaped for cron (which reads the comment as part of the
    command): in the shell the comment then holds the path as it is.
    """
    return f"{MARKER} {_escape_percent(str(config))}"


def _is_marker_of(text: str, config: Path) -> bool:
    # Also the path as it is: guardian 0.1.0 wrote the comment unescaped.
    return text in (marker(config), f"{MARKER} {config}")


def guardian_argv() -> list[str]:
    """This installation's guardian by absolute path: its virtualenv's entry point."""
    entry = Path(sys.executable).parent / "guardian"  # not resolved: a venv's bin must stay
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "guardian"]


# A watcher watches this much longer than the interval: the next cron run (late by a
# second or two, and slower to start on a busy host) then finds it still watching, and
# takes over when it ends, with no moment unwatched between them.
WATCH_OVERLAP = 10


def watch_for(every: Interval) -> str:
    """``install --watch``: how long each run watches (the interval and the overlap)."""
    return f"{every.seconds + WATCH_OVERLAP}s"


def guardian_command(config: Path, log: Path | None, watch: str | None = None) -> str:
    """The command cron runs: quiet unless something fails, so cron mails only failures."""
    also = ["--watch", watch] if watch else []
    argv = [*guardian_argv(), "check", *also, "--config", str(config)]
    command = " ".join(cron_word(w) for w in argv)
    if log is not None:
        command += f" >> {cron_word(str(log))} 2>&1"
    return command


def render_line(
    schedule: str, command: str, config: Path, *, system_user: str | None = None
) -> str:
    """One crontab line; with ``system_user``, in the /etc/cron.d format (a user field).

    ``command`` is written as it is: from ``guardian_command``, which quotes it for cron.
    """
    check_path(config)
    if "\n" in command:
        raise ConfigError(f"{command!r}: a command with a newline cannot go in a crontab line")
    job = CronTab(tab="").new(command="true")
    job.setall(schedule)  # python-crontab's spelling: */1 as *, 0 */1 * * * as @hourly
    user = f"{system_user} " if system_user else ""
    return f"{job.slices.render()} {user}{command} # {marker(config)}"


@dataclass(frozen=True, slots=True)
class Entry:
    """A guardian line found in a crontab."""

    where: str
    line: str
    schedule: str
    command: str
    # Why cron does not run this line (a cron file it does not read or ignores), or None.
    not_run: str | None = None


_SEPARATOR = f" # {MARKER} "
_BLANK = "[ \t]+"  # what cron splits the fields of a line at
_FIELDS = re.compile(rf"[ \t]*(@[A-Za-z]+|(?:[^ \t]+{_BLANK}){{4}}[^ \t]+){_BLANK}(.*\S)")
_USER = re.compile(rf"([^ \t]+){_BLANK}(.*)")


def _own(line: str, *, system: bool) -> tuple[str, str, str] | None:
    """(schedule, command, marker) of a guardian line that is not commented out, else None.

    The marker starts at the line's first `` # guardian: ``: the command guardian
    writes has no ``#`` after a blank (``cron_word``).
    """
    head, separator, tail = line.removesuffix("\n").partition(_SEPARATOR)
    if not separator:
        return None
    fields = _FIELDS.fullmatch(head)
    if fields is None or not CronSlices.is_valid(fields[1]):
        return None  # commented out (a '#' in the schedule), or not a cron line at all
    command = fields[2]
    if system:
        with_user = _USER.fullmatch(command)
        if with_user is None:
            return None
        command = with_user[2]
    return fields[1], command, f"{MARKER} {tail}"


def find(
    text: str, config: Path, *, system: bool, where: str, not_run: str | None = None
) -> list[Entry]:
    entries = []
    for line in lines_of(text):
        own = _own(line, system=system)
        if own is not None and _is_marker_of(own[2], config):
            entries.append(Entry(where, line.removesuffix("\n"), own[0], own[1], not_run))
    return entries


def splice(text: str, config: Path, new_line: str | None, *, system: bool) -> str:
    """``text`` with guardian's line for ``config`` replaced by ``new_line`` (or removed).

    Every other line is kept exactly; a new line goes at the end.
    """
    out: list[str] = []
    placed = False
    for line in lines_of(text):
        own = _own(line, system=system)
        if own is not None and _is_marker_of(own[2], config):
            if new_line is not None and not placed:
                out.append(new_line + "\n")
                placed = True
            continue
        out.append(line)
    if new_line is not None and not placed:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(new_line + "\n")
    return "".join(out)


_NICKNAMES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *"}  # crontab(5)


def next_run(schedule: str, now: datetime | None = None) -> datetime | None:
    """When a schedule guardian writes fires next; None for any other schedule.

    cron fires at the host's local wall-clock times, so the answer is an aware
    datetime in this process's local time zone (``TZ``); a naive ``now`` is
    taken as local time. The walk goes minute by minute through real time and
    asks the wall clock at each, so daylight saving time and offsets that are
    not whole hours (+05:30) come out as cron sees them; only the daily
    ``0 0 * * *`` would differ, in a zone whose clocks jump at midnight (cron
    runs a fixed-time job that a jump skipped soon after it: cron(8), "Special
    considerations exist when the clock is changed").
    """
    # python-crontab writes guardian's 1h and 1d intervals as @hourly and @daily.
    fields = _NICKNAMES.get(schedule.strip(), schedule).split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        return None
    minute, hour = fields[0], fields[1]
    if hour == "*" and (minute == "*" or minute.startswith("*/")):
        per_minute, every = True, step(minute)
    elif minute == "0" and (hour == "*" or hour.startswith("*/")):
        per_minute, every = False, step(hour)
    elif minute == "0" and hour == "0":
        per_minute, every = False, 24  # hour % 24 == 0: midnight
    else:
        return None
    if every is None:
        return None
    t = (now or datetime.now(UTC)).astimezone().replace(second=0, microsecond=0)
    # Two days of minutes: a daily schedule fires within one, DST moves it an hour at most.
    for _ in range(2 * 24 * 60):
        t = (t + timedelta(minutes=1)).astimezone()  # with the local offset of that instant
        if (t.minute % every == 0) if per_minute else (t.minute == 0 and t.hour % every == 0):
            return t
    return None  # pragma: no cover  (every schedule above fires within a day)


def step(field: str) -> int | None:
    """1 for ``*``, n for ``*/n`` (n > 0); None for anything else (``0,30`` included)."""
    if field == "*":
        return 1
    if not field.startswith("*/"):
        return None
    n = field[2:]
    return int(n) if n.isdigit() and int(n) > 0 else None


AS_USER_TIMEOUT = 20.0  # each question asked as the user: a healthy answer takes a second


def cannot_run_as(user: str, config: Path) -> str | None:
    """Why cron could not run guardian as ``user`` (as root, we can ask), or None if it can."""
    argv = guardian_argv()
    probes = (
        (
            [*argv, "--version"],
            f"cannot run {argv[0]}",
            "where python3 lives under /root (mode 700), build the virtualenv from an "
            "interpreter every user can run: PYTHON=/usr/bin/python3 ./install.sh --prefix DIR",
        ),
        (
            ["test", "-r", str(config)],
            f"cannot read {config}",
            "make the file, and every folder above it, readable by that user",
        ),
        (
            # As that user: its rights decide what it can become and where it can write.
            # (The interval was checked already: 1d, the longest, passes any timeout.)
            [*argv, "install", "--dry-run", "--interval", "1d", "--config", str(config)],
            f"cannot use {config}",
            "fix that key, or install for a user who can",
        ),
    )
    for probe, problem, fix in probes:
        # In a session of its own, so that one that hangs (a home on a dead NFS server)
        # is ended whole, with whatever it started.
        with subprocess.Popen(
            ["runuser", "-u", user, "--", *probe],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as child:
            try:
                _, stderr = child.communicate(timeout=AS_USER_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.communicate()
                return (f"user {user} {problem} (no answer within {AS_USER_TIMEOUT:g}s), so "
                        f"cron could not run guardian either")  # fmt: skip
        if child.returncode != 0:
            detail = stderr.strip().splitlines()[-1:] or [f"exit {child.returncode}"]
            return f"user {user} {problem} ({detail[0]}), so cron could not run guardian; {fix}"
    return None


# --- where the line lives: a user's crontab, or a system cron file ---


def _crontab_program() -> str:
    program = shutil.which("crontab")
    if program is None:
        raise CronError("the crontab program is missing; on Debian/Ubuntu: apt-get install cron")
    return program


def _user_args(user: str | None) -> list[str]:
    return [] if user is None else ["-u", user]


def read_user_crontab(user: str | None) -> str:
    result = subprocess.run(
        [_crontab_program(), *_user_args(user), "-l"],
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",  # a crontab is bytes: what is not UTF-8 round-trips unchanged
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        if "no crontab for" in result.stderr:
            return ""
        raise CronError(f"crontab -l failed: {result.stderr.strip()}")
    return result.stdout


def check_rewritable(text: str, where: str) -> None:
    r"""CronError if writing ``text`` (from ``crontab -l``) back could change it.

    Debian's ``crontab -l`` shows a carriage return as the two characters ``\r``
    and a backspace as ``\b``; so does a line that holds those two characters.
    Which one it is cannot be told, and writing it back would turn a carriage
    return into a backslash: such a crontab is not rewritten.
    """
    for number, line in enumerate(text.split("\n"), 1):
        if "\\r" in line or "\\b" in line:
            raise CronError(
                f"{where}, line {number}, holds \\r or \\b, which `crontab -l` also shows for a "
                "carriage return or a backspace: guardian cannot tell which, so does not "
                "rewrite it (edit it with crontab -e, or use --cron-file)"
            )


def write_user_crontab(user: str | None, text: str) -> None:
    result = subprocess.run(
        [_crontab_program(), *_user_args(user), "-"],
        input=text,
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",  # a crontab is bytes: what is not UTF-8 round-trips unchanged
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise CronError(f"crontab refused the new table: {result.stderr.strip()}")


def delete_user_crontab(user: str | None) -> None:
    result = subprocess.run(
        [_crontab_program(), *_user_args(user), "-r"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0 and "no crontab for" not in result.stderr:
        raise CronError(f"crontab -r failed: {result.stderr.strip()}")


# --- system cron files, and which of them cron runs ---

CRON_D = Path("/etc/cron.d")
SYSTEM_CRONTAB = Path("/etc/crontab")
NOT_READ = "cron reads only /etc/crontab and the files in /etc/cron.d: this file is not run"


def check_cron_file_path(path: Path) -> None:
    if not _CRON_FILE_NAME.fullmatch(path.name):
        raise ConfigError(
            f"{path}: cron ignores files in /etc/cron.d whose names have anything but "
            "letters, digits, '-' and '_'; choose another name"
        )


def not_run_reason(path: Path, *, cron_d: Path = CRON_D) -> str | None:
    """Why cron does not run the lines of the system cron file ``path``; None if it does
    (as far as can be seen: a file not there yet is judged by its place and name).

    Debian's cron(8) reads /etc/crontab and the files in /etc/cron.d named with
    letters, digits, '-' and '_', owned by root and not writable by group or
    others; a symlink there is followed if both it and its file are root's.
    (``cron_d``: another folder taken for /etc/cron.d, for tests.)
    """
    path = Path(os.path.abspath(path))
    if path != SYSTEM_CRONTAB:
        if Path(os.path.realpath(path.parent)) != Path(os.path.realpath(cron_d)):
            return NOT_READ
        if not _CRON_FILE_NAME.fullmatch(path.name):
            return "cron ignores it: a name with anything but letters, digits, '-' and '_'"
    try:
        link, file = os.lstat(path), os.stat(path)
    except OSError:
        return None
    if link.st_uid != 0 or file.st_uid != 0:
        return "cron ignores it: not owned by root"
    if file.st_mode & 0o022:
        return "cron ignores it: writable by group or others"
    return None


_CRON_FILE_MAX = 1 << 20


def _read_regular(path: Path, *, follow: bool) -> str:
    """The regular file at ``path`` ("" if there is none); a FIFO, device or folder is
    refused (``NotRegular``), not opened; a symlink too, unless ``follow``."""
    try:
        before = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return ""  # nothing there (for a symlink followed: a dangling one, which cron skips)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegular(path, before.st_mode)
    flags = os.O_RDONLY | SAFE
    fd = os.open(path, flags & ~os.O_NOFOLLOW if follow else flags)
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(fd).st_mode
        if not stat.S_ISREG(now):  # swapped since
            raise NotRegular(path, now)
        data = f.read(_CRON_FILE_MAX + 1)
    if len(data) > _CRON_FILE_MAX:
        raise CronError(f"cannot read {path}: larger than 1 MiB, so not a cron file")
    return data.decode("utf-8", "surrogateescape")


def read_cron_file(path: Path, *, follow: bool = False) -> str:
    """The cron file's text ("" if there is none); a FIFO or a folder is refused, not waited
    on; a symlink too, unless ``follow`` (reading as cron does: for status)."""
    try:
        return _read_regular(path, follow=follow)
    except OSError as e:
        raise CronError(f"cannot read {path}: {e.strerror}") from None


def write_cron_file(path: Path, text: str) -> None:
    try:
        atomic_write(path, text.encode("utf-8", "surrogateescape"), mode=0o644)
    except OSError as e:
        raise CronError(f"cannot write {path}: {e.strerror}") from None


def delete_cron_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise CronError(f"cannot remove {path}: {e.strerror}") from None


@dataclass(frozen=True, slots=True)
class Place:
    """A crontab guardian's line can live in."""

    user: str | None = None  # a user's crontab (None: the current user's)
    cron_file: Path | None = None  # or a system cron file, whose lines run as run_as

    @property
    def system(self) -> bool:
        return self.cron_file is not None

    def describe(self) -> str:
        if self.cron_file is not None:
            return str(self.cron_file)
        name = self.user or pwd.getpwuid(os.geteuid()).pw_name
        return f"{name}'s crontab"

    def owner(self) -> pwd.struct_passwd:
        """The user whose crontab this is (by uid: ``--user root`` is root's crontab too)."""
        try:
            if self.user is None:
                return pwd.getpwuid(os.geteuid())
            return pwd.getpwnam(self.user)
        except KeyError:
            who = self.user if self.user is not None else f"uid {os.geteuid()}"
            raise ConfigError(f"no user {who} in the password database") from None

    def read(self) -> str:
        if self.cron_file is not None:
            return read_cron_file(self.cron_file)
        return read_user_crontab(self.user)

    def write(self, text: str) -> None:
        if self.cron_file is not None:
            write_cron_file(self.cron_file, text)
        else:
            write_user_crontab(self.user, text)

    def delete(self) -> None:
        if self.cron_file is not None:
            delete_cron_file(self.cron_file)
        else:
            delete_user_crontab(self.user)


# --- one lock per crontab, that root and the crontab's user agree on ---
#
# A user's crontab can be edited by root (`--user U`, or root's own by either
# spelling) and by the user. Every editor of a crontab locks the same file, the
# user's own: ~U/.cache/guardian/crontab-<uid>.lock, from the password database
# (not $HOME or $XDG_RUNTIME_DIR, which root cannot know). Root never touches
# it itself: a child process of its own, become that user, makes or opens it
# and holds the lock until root is done (or gone: the child then sees its pipe
# close). So whatever the user put there (a symlink, a FIFO, a folder of
# someone else's) is refused as it would be for the user, root follows nothing
# the user could not, and a home folder that hangs (a FUSE mount of the user's)
# hangs only the child, which is killed after LOCK_WAIT and a margin. Root
# first holds a lock of its own, in ROOT_LOCKS, so that two roots agree also on
# the crontab of a user without a home (who cannot lock, so cannot run
# install). Fixed order, root's then the user's: no deadlock.

# Not /run/lock (mode 1777): any user could make /run/lock/guardian first, after each
# boot, and so keep root from ever editing a crontab. /run is root's alone.
ROOT_LOCKS = Path("/run/guardian/locks")
_CHILD_MARGIN = 10.0  # seconds the child may take beyond the wait: starting, making folders


def user_lock_dir(user: pwd.struct_passwd) -> Path:
    return Path(user.pw_dir) / ".cache" / "guardian"


def _own_lock_dir() -> Path:
    """Where this process keeps its locks: root's in /run/guardian, a user's in its home."""
    if os.geteuid() == 0:
        return ROOT_LOCKS
    try:
        return user_lock_dir(pwd.getpwuid(os.geteuid()))
    except KeyError:
        raise CronError(f"uid {os.geteuid()} is not in the password database") from None


def _busy(what: str, path: Path, wait: float) -> CronError:
    return CronError(
        f"{what} is being edited by another guardian install or uninstall (its lock "
        f"{path} was held for {wait:g}s); try again"
    )


def _hold(stack: contextlib.ExitStack, lock_dir: Path, name: str, what: str, wait: float) -> None:
    try:
        stack.enter_context(locking.hold(lock_dir, name, wait=wait))
    except locking.Busy:
        raise _busy(what, locking.lock_path(lock_dir, name), wait) from None


def _child_holds(user: pwd.struct_passwd, name: str, wait: float, say: int, done: int) -> None:
    """In the child: become ``user``, take its lock, say how it went on ``say``, and hold
    the lock until ``done`` reads end of file (root is done with it, or gone)."""
    os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    try:
        lock = locking.acquire(user_lock_dir(user), name, wait=wait)
    except locking.Busy:
        os.write(say, b"busy")
        return
    except locking.LockError as e:
        os.write(say, f"none {e}".encode())
        return
    os.write(say, b"held")
    os.read(done, 1)
    lock.release()


@contextlib.contextmanager
def _user_lock(user: pwd.struct_passwd, name: str, what: str, wait: float) -> Iterator[None]:
    """Hold ``user``'s own lock ``name`` (as root) for the block, from a child process."""
    said, say = os.pipe()
    done, finish = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends by _exit; its work shows in the parent
        code = 1
        try:
            os.close(said)
            os.close(finish)
            _child_holds(user, name, wait, say, done)
            code = 0
        finally:
            os._exit(code)
    os.close(say)
    os.close(done)
    try:
        answer = b""
        if select.select([said], [], [], wait + _CHILD_MARGIN)[0]:
            answer = os.read(said, 4096)
        path = locking.lock_path(user_lock_dir(user), name)
        if answer == b"busy":
            raise _busy(what, path, wait)
        if answer == b"held" or answer.startswith(b"none "):
            # none: the user cannot take it either, so no guardian of theirs edits the crontab
            yield
        else:
            raise CronError(f"cannot lock {what}: the process taking {path} as {user.pw_name} "
                            f"did not answer (within {wait + _CHILD_MARGIN:g}s)")  # fmt: skip
    finally:
        os.close(finish)
        os.close(said)
        # Our own child, not yet reaped (so its pid is not anyone else's): its end lets the
        # lock go. SIGKILL, as one stuck in the user's filesystem heeds nothing else.
        os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int, within: float = 5.0) -> None:
    """Reap our child ``pid``, waiting ``within`` seconds at most: one stuck beyond SIGKILL
    (a dead NFS server) is left to init when guardian exits, not waited on for ever."""
    end = time.monotonic() + within
    while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < end:
        time.sleep(0.01)


@contextlib.contextmanager
def locked(place: Place, *, wait: float | None = None) -> Iterator[None]:
    """Hold the lock on ``place`` for a read-modify-write (see above); CronError if it
    stays held by another for ``wait`` seconds (default ``LOCK_WAIT``)."""
    wait = LOCK_WAIT if wait is None else wait
    what = place.describe()
    with contextlib.ExitStack() as stack:
        if place.cron_file is not None:
            _hold(stack, _own_lock_dir(), f"cron-file-{place.cron_file.name}", what, wait)
            yield
            return
        # By uid, and the uid's first entry (the one `crontab` run by that user finds):
        # a second name for the uid must not mean a second lock.
        owner = pwd.getpwuid(place.owner().pw_uid)
        name = f"crontab-{owner.pw_uid}"
        if os.geteuid() == 0:
            _hold(stack, ROOT_LOCKS, name, what, wait)
            if owner.pw_uid != 0:
                stack.enter_context(_user_lock(owner, name, what, wait))
        elif owner.pw_uid != os.geteuid():
            raise ConfigError(f"--user {place.user}: only root may edit another user's crontab")
        else:
            try:
                _hold(stack, user_lock_dir(owner), name, what, wait)
            except locking.LockError as e:
                raise CronError(
                    f"cannot lock {what} for editing: {e} (a user's crontab is locked in "
                    f"its home folder; root can edit it: guardian install --user {owner.pw_name})"
                ) from None
        yield


def update(place: Place, config: Path, new_line: str | None) -> tuple[str, str]:
    """Put ``new_line`` in place of guardian's line for ``config`` (None removes it).

    The read-modify-write happens under the crontab's lock, so two installs at
    once still leave one line. Returns the text before and after; nothing is
    written when they are the same. A cron file guardian creates starts with
    its ``HEADER``.
    """
    check_path(config)
    if place.cron_file is not None:
        check_cron_file_path(place.cron_file)
    with locked(place):
        before = place.read()
        if place.system and new_line is not None and empty(before, system=True):
            after = HEADER + new_line + "\n"  # a cron file of guardian's own
        else:
            after = splice(before, config, new_line, system=place.system)
        if after != before:
            if not place.system:  # read through `crontab -l`, which shows \r and \b so
                check_rewritable(before, place.describe())
            place.write(after)
    return before, after


@dataclass(frozen=True, slots=True)
class Removal:
    """What ``remove`` did."""

    removed: bool  # guardian's line for the config was there, and is gone
    deleted: bool  # nothing else was left, so the crontab (or cron file) went with it


def remove(place: Place, config: Path) -> Removal:
    """Remove guardian's line for ``config``; and the crontab or cron file, if that empties it.

    A user who had no crontab before ``guardian install`` has none after
    ``guardian uninstall`` (``crontab -l`` fails again, as it did); a cron file
    left with nothing but guardian's ``HEADER`` and blank lines is deleted.
    Anything else (another job, a comment, ``MAILTO=``) keeps it, byte for byte.
    """
    check_path(config)
    if place.cron_file is not None:
        check_cron_file_path(place.cron_file)
    with locked(place):
        before = place.read()
        after = splice(before, config, None, system=place.system)
        if after == before:
            return Removal(removed=False, deleted=False)
        if empty(after, system=place.system):
            place.delete()
            return Removal(removed=True, deleted=True)
        if not place.system:
            check_rewritable(before, place.describe())
        place.write(after)
    return Removal(removed=True, deleted=False)


# --- where status looks: reading as cron reads, never failing on one odd file ---


def installed(place: Place, config: Path) -> list[Entry]:
    """guardian's lines for ``config`` in ``place``; a cron file is read as cron reads it
    (a symlink followed), and its entries say if cron does not run them."""
    if place.cron_file is None:
        return find(place.read(), config, system=False, where=place.describe())
    text = read_cron_file(place.cron_file, follow=True)
    why = not_run_reason(place.cron_file)
    return find(text, config, system=True, where=place.describe(), not_run=why)


@dataclass(frozen=True, slots=True)
class Search:
    """What ``search`` found: the entries, and the cron files it could not read."""

    entries: tuple[Entry, ...]
    unreadable: tuple[Path, ...] = ()


def search(config: Path, *, cron_d: Path = CRON_D) -> Search:
    """guardian's lines for ``config`` in the current user's crontab and in ``cron_d``.

    One odd file in the folder never spoils the rest. What cron skips is
    skipped: a name with a dot (``guardian.dpkg-old``), a FIFO, a folder, a
    dangling symlink. A symlink is followed to a regular file, as cron follows
    root's. A file this user may not read (root's 0600, for an operator who is
    not root) is listed in ``unreadable``: guardian's line could be in it.
    """
    entries: list[Entry] = []
    with contextlib.suppress(CronError):  # no crontab program: a host may still use /etc/cron.d
        entries += installed(Place(), config)
    try:
        names = sorted(os.listdir(cron_d))
    except FileNotFoundError:
        return Search(tuple(entries))
    except OSError:
        return Search(tuple(entries), (cron_d,))
    unreadable: list[Path] = []
    for name in names:
        path = cron_d / name
        if not _CRON_FILE_NAME.fullmatch(name):
            continue
        try:
            text = _read_regular(path, follow=True)
        except NotRegular:
            continue
        except CronError:
            continue  # larger than any cron file
        except OSError:
            unreadable.append(path)
            continue
        why = not_run_reason(path, cron_d=cron_d)
        entries += find(text, config, system=True, where=str(path), not_run=why)
    return Search(tuple(entries), tuple(unreadable))


def search_everywhere(config: Path, *, cron_d: Path = CRON_D) -> list[Entry]:
    """guardian's lines for ``config`` in the current user's crontab and in /etc/cron.d."""
    return list(search(config, cron_d=cron_d).entries)

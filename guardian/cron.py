"""The crontab line that runs guardian: render it, install it, find it, remove it.

python-crontab renders and parses the line itself (schedule, command, the
marker comment, the user field of a system cron file, escaping of ``%``).
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
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crontab import CronItem, CronTab

from guardian import locking
from guardian.errors import ConfigError, GuardianError
from guardian.files import atomic_write, open_regular

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


def empty(text: str, *, system: bool) -> bool:
    """Nothing in ``text`` but blank lines (and, in a cron file, guardian's ``HEADER``)."""
    return all(not line.strip() or (system and line + "\n" == HEADER) for line in text.splitlines())


def marker(config: Path) -> str:
    return f"{MARKER} {config}"


def guardian_argv() -> list[str]:
    """This installation's guardian by absolute path: its virtualenv's entry point."""
    entry = Path(sys.executable).parent / "guardian"  # not resolved: a venv's bin must stay
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "guardian"]


def guardian_command(config: Path, log: Path | None) -> str:
    """The command cron runs: quiet unless something fails, so cron mails only failures."""
    command = shlex.join([*guardian_argv(), "check", "--config", str(config)])
    if log is not None:
        command += f" >> {shlex.quote(str(log))} 2>&1"
    return command


def render_line(
    schedule: str, command: str, config: Path, *, system_user: str | None = None
) -> str:
    """One crontab line; with ``system_user``, in the /etc/cron.d format (a user field)."""
    if "\n" in command or "\n" in str(config):
        raise ConfigError(f"{config}: a path with a newline cannot go in a crontab")
    tab = CronTab(tab="", user=False if system_user else None)
    job = tab.new(command=command, comment=marker(config), user=system_user)
    job.setall(schedule)
    return str(job.render())


@dataclass(frozen=True, slots=True)
class Entry:
    """A guardian line found in a crontab."""

    where: str
    line: str
    schedule: str
    command: str


def _parse(line: str, system: bool) -> CronItem | None:
    tab = CronTab(tab="", user=False if system else None)
    item = CronItem.from_line(line, cron=tab)
    return item if item.is_valid() and item.is_enabled() else None


def find(text: str, config: Path, *, system: bool, where: str) -> list[Entry]:
    entries = []
    for line in text.splitlines():
        if MARKER not in line:
            continue
        item = _parse(line, system)
        if item is not None and item.comment == marker(config):
            entries.append(Entry(where, line, str(item.slices), str(item.command)))
    return entries


def splice(text: str, config: Path, new_line: str | None, *, system: bool) -> str:
    """``text`` with guardian's line for ``config`` replaced by ``new_line`` (or removed).

    Every other line is kept exactly; a new line goes at the end.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    placed = False
    for line in lines:
        item = _parse(line, system) if MARKER in line else None
        if item is not None and item.comment == marker(config):
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
        result = subprocess.run(
            ["runuser", "-u", user, "--", *probe],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
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
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        if "no crontab for" in result.stderr:
            return ""
        raise CronError(f"crontab -l failed: {result.stderr.strip()}")
    return result.stdout


def write_user_crontab(user: str | None, text: str) -> None:
    result = subprocess.run(
        [_crontab_program(), *_user_args(user), "-"],
        input=text,
        capture_output=True,
        text=True,
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


def check_cron_file_path(path: Path) -> None:
    if not _CRON_FILE_NAME.fullmatch(path.name):
        raise ConfigError(
            f"{path}: cron ignores files in /etc/cron.d whose names have anything but "
            "letters, digits, '-' and '_'; choose another name"
        )


_CRON_FILE_MAX = 1 << 20


def read_cron_file(path: Path) -> str:
    """The cron file's text ("" if there is none); a FIFO or a folder is refused, not waited on."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise CronError(f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(_CRON_FILE_MAX + 1)
    if len(data) > _CRON_FILE_MAX:
        raise CronError(f"cannot read {path}: larger than 1 MiB, so not a cron file")
    return data.decode("utf-8", "replace")


def write_cron_file(path: Path, text: str) -> None:
    try:
        atomic_write(path, text.encode(), mode=0o644)
    except OSError as e:
        raise CronError(f"cannot write {path}: {e.strerror}") from None


def delete_cron_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise CronError(f"cannot remove {path}: {e.strerror}") from None


def _lock_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/lock/guardian")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "guardian" if runtime else Path.home() / ".cache" / "guardian"


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

    def lock_name(self) -> str:
        if self.cron_file is not None:
            return f"cron-file-{self.cron_file.name}"
        return f"crontab-{self.user or os.geteuid()}"

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


def update(place: Place, config: Path, new_line: str | None) -> tuple[str, str]:
    """Put ``new_line`` in place of guardian's line for ``config`` (None removes it).

    The read-modify-write happens under a lock, so two installs at once still
    leave one line. Returns the text before and after; nothing is written when
    they are the same. A cron file guardian creates starts with its ``HEADER``.
    """
    if place.cron_file is not None:
        check_cron_file_path(place.cron_file)
    with locking.hold(_lock_dir(), place.lock_name(), wait=LOCK_WAIT):
        before = place.read()
        if place.system and new_line is not None and empty(before, system=True):
            after = HEADER + new_line + "\n"  # a cron file of guardian's own
        else:
            after = splice(before, config, new_line, system=place.system)
        if after != before:
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
    if place.cron_file is not None:
        check_cron_file_path(place.cron_file)
    with locking.hold(_lock_dir(), place.lock_name(), wait=LOCK_WAIT):
        before = place.read()
        after = splice(before, config, None, system=place.system)
        if after == before:
            return Removal(removed=False, deleted=False)
        if empty(after, system=place.system):
            place.delete()
            return Removal(removed=True, deleted=True)
        place.write(after)
    return Removal(removed=True, deleted=False)


def installed(place: Place, config: Path) -> list[Entry]:
    return find(place.read(), config, system=place.system, where=place.describe())


def search_everywhere(config: Path) -> list[Entry]:
    """guardian's lines for ``config`` in the current user's crontab and in /etc/cron.d."""
    entries: list[Entry] = []
    with contextlib.suppress(CronError):  # no crontab program: a host may still use /etc/cron.d
        entries += installed(Place(), config)
    cron_d = Path("/etc/cron.d")
    if cron_d.is_dir():
        for path in sorted(cron_d.iterdir()):
            if _CRON_FILE_NAME.fullmatch(path.name) and path.is_file():
                entries += installed(Place(cron_file=path), config)
    return entries

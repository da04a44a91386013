"""`guardian status`: is each target up and healthy, what has guardian done, and does cron run it.

Everything is read, nothing written: /proc (the target, and the cron daemon),
each target's state file (probe failures, backoff and give-up, put through the
same pure policy a check applies), the audit log from its end (what happened
in the last 24 hours, the last failure with its output, when guardian last
ran) and guardian's crontab line; each target's hold (``guardian stop``) and
its watcher (``guardian check --watch``), if any. An operator who is not root
may be unable to read root's state files: what they would say is then taken
from the audit log's records, and the report says so. What it cannot see
(another user's process, where /proc is mounted ``hidepid``; root's holds and
watch locks) it says it cannot tell.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from guardian import holds, proc, state
from guardian.audit import ACTIONS, read_history
from guardian.config import Config, Target
from guardian.cron import Entry, next_run, step
from guardian.discovery import Found, Matcher, Missing, Unsure, discover
from guardian.files import open_regular
from guardian.locking import lock_path
from guardian.run import ASIDES

_STARTS = frozenset({"started", "restarted_unhealthy", "restarted"})
_SUCCESSES = _STARTS | {"ok", "adopted"}  # the target ran after these
_FAILURES = frozenset({"start_failed", "error", "timeout"})  # records with a failure to show
_HEALTH = _SUCCESSES | {"unhealthy"}  # records that say how its probes went
# Not a run of cron's. (A `held` record is the stop's only if it is its hold's first: see
# _History.run_time. Logs from before holds have `stopped` for a stop.)
_BY_HAND = frozenset({"stopped", "restarted", "reset", "held"})
# A stop or reset by hand: the crash loop before it is over (a held target is not started).
_CLEARS = frozenset({"stopped", "reset", "held"})
# Records that are no outcome of a check: a watch's end says nothing of the target.
_ASIDES = ASIDES | {"watch_ended"}
# The last record says nothing worth a line when it is one of these and nothing started.
_QUIET = frozenset({"ok", "watch_ended", "held"})
# A watcher still running this long after the end it set itself, and its run's own time
# limit (guardian.timeout: its last action may take that long), is stuck.
WATCH_SLACK = 60.0
# How much of the audit log, from its end, status reads at most: a log that
# logrotate never reached must not make status slow (or its memory large).
HISTORY_BUDGET = 32 << 20
# A run is overdue once its interval, guardian's own timeout and this have passed.
SLACK = 30.0
# A record dated later than now plus this was not written before now: the clock was
# wrong when it was written (or the line is not guardian's); it is counted, not believed.
FUTURE_SLACK = 60.0
# The log is read back until this many records in a row are older than anything status
# needs: one stamped long ago (a clock not yet set at boot) must not end the reading.
PAST_IN_A_ROW = 1000
TAIL_SHOWN = 5  # lines of a failed start's output, in the human report


# --- what the audit log says ---


class _Record(NamedTuple):
    """One audit record as guardian writes it, its fields checked."""

    when: datetime
    target: str
    action: str
    reason: str
    dry_run: bool
    error: str | None
    output_tail: tuple[str, ...]
    next_try: datetime | None
    probes: tuple[str, ...]
    hold_at: str | None = None  # a `held` record's hold: when it was set, as written


def _time(value: object) -> datetime | None:
    """An RFC 3339 time with a zone, in UTC; None for anything else.

    In UTC, every comparison and difference status makes is safe; a time that
    has none there (year 1 at +01:00, year 9999 at -01:00) is none guardian wrote.
    """
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
        return when.astimezone(UTC) if when.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def _strings(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _is_hold(value: object) -> bool:
    """A record's ``hold`` as guardian writes it: by whom, since and until when, and why."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("by"), str)
        and isinstance(value.get("reason"), str)
        and _time(value.get("at")) is not None
        and (value.get("until") is None or _time(value.get("until")) is not None)
    )


def _record(raw: dict[str, object]) -> _Record | None:
    """``raw`` if it is a record guardian could have written (None: count it unreadable)."""
    when, action, reason = _time(raw["ts"]), str(raw["action"]), raw.get("reason")
    if when is None or action not in ACTIONS or not isinstance(reason, str):
        return None
    dry_run, error = raw.get("dry_run"), raw.get("error")
    if not isinstance(dry_run, bool) or not (error is None or isinstance(error, str)):
        return None
    tail, probes = _strings(raw.get("output_tail", [])), _strings(raw.get("probes", []))
    if tail is None or probes is None:
        return None
    next_try = None
    if raw.get("next_try") is not None and (next_try := _time(raw["next_try"])) is None:
        return None
    hold = raw.get("hold")
    if hold is not None and not _is_hold(hold):
        return None
    hold_at = str(hold["at"]) if isinstance(hold, dict) else None
    target = str(raw["target"])
    return _Record(when, target, action, reason, dry_run, error, tail, next_try, probes, hold_at)


@dataclass(frozen=True, slots=True)
class LastAction:
    action: str
    ts: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The newest failed start, error or timeout of a target."""

    action: str
    ts: str
    reason: str
    error: str | None
    output_tail: tuple[str, ...]
    current: bool  # the target is not up now, and has not run since (else: a past one)


class _Seen:
    """What the log says of one target, folded in record by record, newest first."""

    def __init__(self) -> None:
        self.last: _Record | None = None  # its newest record
        self.starts = 0  # since ``since``
        self.failed_starts = 0
        self.backoff: _Record | None = None  # its newest outcome, if that is a backoff
        self._outcome = False  # its newest record that is not an aside has been seen
        self.health: _Record | None = None  # its newest record that says how its probes went
        self.failure: _Record | None = None
        self.failure_then_ran = False  # it ran after its newest failure
        self.gave_up: _Record | None = None  # its newest give-up not cleared by hand since
        self._ran = False  # a record newer than the one in hand says it ran
        self._cleared = False  # a reset, stop or hold by hand is newer than the record in hand
        self.newer_held: _Record | None = None  # the `held` record read before the one in hand

    def see(self, r: _Record, recent: bool) -> None:
        self.last = self.last or r
        if recent and r.action in _STARTS:
            self.starts += 1
        if recent and r.action == "start_failed":  # a start that did not come up
            self.failed_starts += 1
        if not self._outcome and r.action not in _ASIDES:
            self._outcome = True
            self.backoff = r if r.action == "backoff" and not self._cleared else None
        if self.health is None and r.action in _HEALTH:
            self.health = r
        if self.failure is None and r.action in _FAILURES:
            self.failure, self.failure_then_ran = r, self._ran
        if self.gave_up is None and r.action == "gave_up" and not self._cleared:
            self.gave_up = r
        self._ran = self._ran or r.action in _SUCCESSES
        # (A reset forgets the crash loop; after a stop, the next check starts it regardless,
        # and after a hold, the check that finds it released or expired.)
        self._cleared = self._cleared or r.action in _CLEARS


class _History:
    """What status wants from the audit log, folded in record by record, newest first."""

    def __init__(
        self, names: Iterable[str], since: datetime, horizon: datetime, now: datetime
    ) -> None:
        self.seen = {name: _Seen() for name in names}
        self.since = since  # starts are counted from here
        self.horizon = horizon  # nothing older matters, once every target has a record
        self.future = now + timedelta(seconds=FUTURE_SLACK)  # records dated after: not believed
        self.last_run: datetime | None = None  # guardian's latest run (by cron, presumably)
        self.bad = 0  # records that are not guardian's: unreadable
        self.in_future = 0  # records dated after ``future``
        self.past_in_a_row = 0  # the newest records read in a row dated before ``horizon``

    @staticmethod
    def run_time(r: _Record, seen: _Seen) -> datetime | None:
        """When ``r`` says guardian ran (by cron, presumably); None for a record by hand.

        Every run writes a `held` record for a held target (quietly), and so does the
        `guardian stop` that set the hold, first. Its record is by hand (it says
        nothing of cron); the others are runs, else a config whose every target is held
        would look overdue. Read newest first, a `held` record is known to be a run's
        once an older one of the same hold (its ``at``) comes: then the newer one's time
        counts. (The stop's, the oldest, never does.)
        """
        if r.action != "held":
            return None if r.action in _BY_HAND else r.when
        newer, seen.newer_held = seen.newer_held, r
        if newer is not None and r.hold_at is not None and newer.hold_at == r.hold_at:
            return newer.when
        return None

    def see(self, raw: dict[str, object]) -> bool:
        """Fold in one record; True once no older record can change the answer."""
        r = _record(raw)
        if r is None:
            self.bad += 1
            return False
        if r.when > self.future:
            self.in_future += 1  # not believed for anything: not even that guardian ran
            return False
        self.past_in_a_row = self.past_in_a_row + 1 if r.when < self.horizon else 0
        seen = self.seen.get(r.target)
        if seen is not None and not r.dry_run:
            seen.see(r, recent=r.when >= self.since)
            # The latest time, not the last line's: after a clock set back, a line's
            # time may be older than the one before it.
            ran = self.run_time(r, seen)
            if ran is not None and (self.last_run is None or ran > self.last_run):
                self.last_run = ran
        return (
            self.past_in_a_row >= PAST_IN_A_ROW
            and self.last_run is not None
            and all(s.last is not None for s in self.seen.values())
        )


def _keep_none(record: dict[str, object]) -> bool:
    return False  # _History.see folds each record in: none needs keeping


# --- what the state file says, through the crash-loop policy ---


@dataclass(frozen=True, slots=True)
class GaveUp:
    at: str
    next_try: str
    reason: str
    source: str  # "state file" or "audit log"


@dataclass(frozen=True, slots=True)
class Backoff:
    until: str
    reason: str


class _Clock(NamedTuple):
    wall: datetime
    boot: float  # the same instant on CLOCK_BOOTTIME, the state file's clock

    def wall_of(self, boottime: float) -> datetime:
        return self.wall + timedelta(seconds=boottime - self.boot)


# The crash-loop policy's own words for why it holds a target back (state.decide).
_VERDICT = re.compile(
    r"started \d+ times in [^;\s]+ \(burst \d+\)"
    r"|died young \d+ times in a row; waiting [^;\s]+"
    r"|gave up on it earlier; waiting out the window"
)


def _why(reason: str) -> str:
    """The policy's words in a record's reason (the last, not some quoted command line's)."""
    found = _VERDICT.findall(reason)
    return str(found[-1]) if found else _short(reason)


def _short(text: str, most: int = 300) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


class _Policy(NamedTuple):
    gave_up: GaveUp | None = None
    backoff: Backoff | None = None
    gives_up_next: str | None = None  # the next run gives up, and why


def _policy_from_state(
    st: state.State, target: Target, dead: bool, seen: _Seen, clock: _Clock
) -> _Policy:
    """What the next check will do, as ``state.decide`` says (on a copy: nothing is written)."""
    policy = target.restart
    gave_up = None
    if st.gave_up_at is not None and not st.stopped_by_hand:
        until = st.gave_up_at + policy.window
        if clock.boot < until:
            at, next_try = clock.wall_of(st.gave_up_at), clock.wall_of(until)
            n = sum(1 for s in st.starts if 0 <= st.gave_up_at - s < policy.window)
            why = f"started {n} times in {policy.window:g}s (burst {policy.burst})"
            record = seen.gave_up
            if (
                record is not None
                and record.next_try is not None
                and (abs((record.next_try - next_try).total_seconds()) <= 2)
            ):
                # The record of this very give-up: its words and times, as the log has them.
                at, next_try, why = record.when, record.next_try, _why(record.reason)
            gave_up = GaveUp(_stamp(at), _stamp(next_try), why, "state file")
    if not dead or gave_up is not None:
        return _Policy(gave_up)
    # As the next check will see it: dead (counted once), then decided.
    after = state.seen_dead(st, clock.boot, policy)
    verdict = state.decide(after, clock.boot, policy)
    if verdict.action == "gave_up":
        return _Policy(gives_up_next=verdict.reason)
    if verdict.action == "backoff" and verdict.next_try is not None:
        return _Policy(backoff=Backoff(_stamp(clock.wall_of(verdict.next_try)), verdict.reason))
    return _Policy()


def _policy_from_log(seen: _Seen, dead: bool, clock: _Clock) -> _Policy:
    """The same, as far as the audit log's last backoff and gave_up records tell."""
    gave_up = None
    g = seen.gave_up
    if g is not None and g.next_try is not None and g.next_try > clock.wall:
        gave_up = GaveUp(_stamp(g.when), _stamp(g.next_try), _why(g.reason), "audit log")
    b = seen.backoff
    if dead and gave_up is None and b is not None and b.next_try and b.next_try > clock.wall:
        return _Policy(backoff=Backoff(_stamp(b.next_try), _why(b.reason)))
    return _Policy(gave_up)


# --- health ---

_FAILING_RUNS = re.compile(r"\((\d+) of \d+ failing runs\)")


class _Health(NamedTuple):
    verdict: str | None = None  # "healthy", "failing", "unknown"; None: no probes, or not up
    failures: int | None = None
    probes: tuple[str, ...] = ()


def _health(st: state.State | None, seen: _Seen) -> _Health:
    """Probe failures from the state file (``st``), else from the log's newest record on it."""
    record = seen.health
    # Each probe that ran is listed ("http: ok: ...", "command: FAILED: ..."): the failed ones.
    failed: tuple[str, ...] = ()
    if record is not None and record.action == "unhealthy":
        failed = tuple(p for p in record.probes if ": ok: " not in p)
    if st is not None:
        n = st.probe_failures
    elif record is None:
        return _Health("unknown")
    elif record.action == "unhealthy":
        m = _FAILING_RUNS.findall(record.reason)
        n = int(m[-1]) if m else 1
    else:
        n = 0
    return _Health("failing" if n else "healthy", n, failed if n else ())


# --- the cron daemon ---


class DaemonNames(NamedTuple):
    """What a cron daemon is: the programs it runs as, and (as a fallback) its names."""

    exes: frozenset[str]
    names: frozenset[str]
    # busybox, where a distribution puts it: run as one of ``names``, it is a cron daemon.
    busybox: frozenset[str] = frozenset(
        {"/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox"}
    )


CRON_DAEMONS = DaemonNames(
    exes=frozenset({
        "/usr/sbin/cron",  # Debian, Ubuntu (vixie cron)
        "/usr/sbin/crond",  # cronie (Fedora, RHEL), dcron
        "/usr/bin/crond",  # cronie where /usr/sbin is /usr/bin (Arch)
        "/usr/sbin/fcron",
    }),
    names=frozenset({"cron", "crond", "fcron"}),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CronDaemon:
    running: bool | None  # None: this user cannot tell
    pids: tuple[int, ...]
    detail: str


def _read(path: str, most: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(most)
    except OSError:
        return b""


def _real_uid(folder: str) -> int | None:
    """The real user of the process whose /proc entry is ``folder``; None if it cannot be read."""
    for line in _read(f"{folder}/status", 1 << 14).splitlines():
        if line.startswith(b"Uid:"):
            fields = line.split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return None


def hidden_from_me(proc: Path = Path("/proc")) -> str | None:
    """Why ``proc`` hides other users' processes from this user, or None if it does not.

    /proc mounted ``hidepid=1`` (``noaccess``) lets a user who is not root see
    that other users' processes exist but not look into them; ``hidepid=2``
    (``invisible``) hides them altogether, ``ptraceable`` all but those it may
    trace. Members of the mount's ``gid=`` group, and root, see everything.
    (``subset=pid`` hides /proc's other files, not processes.) Whatever the
    options say, pid 1 missing (always there, and root's) tells.
    """
    if os.geteuid() == 0:
        return None
    options = _mount_options(proc)
    hidepid = options.get("hidepid", "0")
    gid = options.get("gid", "")
    exempt = gid.isdigit() and (int(gid) == os.getegid() or int(gid) in os.getgroups())
    if hidepid not in ("0", "off") and not exempt:
        return f"{proc} hides other users' processes from this user (hidepid={hidepid})"
    if not (proc / "1").exists():
        return f"{proc} hides other users' processes from this user"
    return None


def _mount_options(folder: Path) -> dict[str, str]:
    """The file system options of the mount ``folder`` is on (/proc/self/mountinfo's super
    options, name to value); empty if they cannot be read."""
    try:
        dev = os.stat(folder).st_dev
    except OSError:
        return {}
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    found = ""
    # proc(5): "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    for line in _read("/proc/self/mountinfo", 1 << 22).decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and "-" in fields:
            rest = fields[fields.index("-") + 1 :]
            found = rest[2] if len(rest) > 2 else found  # the last: mounted over the others
    return {name: value for name, _, value in (o.partition("=") for o in found.split(",") if o)}


def _is_cron(pid: str, known: DaemonNames, proc: Path) -> bool:
    """Does process ``pid`` run a cron daemon?

    A cron daemon is root's (its real user; no user can make one of those). The
    program the kernel runs (/proc/PID/exe) decides, so a process that merely
    calls itself cron is not one: one of ``known.exes``, or busybox (only where
    a distribution puts it) called as crond; and that file, as it runs, is
    root's (a replaced one too). A process this user may not look into (root's,
    as non-root) is judged by its name instead (/proc/PID/comm, or argv[0]).
    """
    folder = f"{proc}/{pid}"
    if _real_uid(folder) != 0:  # another user's, gone, or hidden from this user
        return False
    argv0 = os.path.basename(_read(f"{folder}/cmdline").split(b"\0")[0].decode(errors="replace"))
    try:
        exe = os.readlink(f"{folder}/exe").removesuffix(" (deleted)")  # an upgraded cron
    except PermissionError:
        comm = _read(f"{folder}/comm").decode(errors="replace").strip()
        return comm in known.names or argv0 in known.names
    except OSError:  # gone, or a kernel thread
        return False
    if not (exe in known.exes or (exe in known.busybox and argv0 in known.names)):
        return False
    try:
        return os.stat(f"{folder}/exe").st_uid == 0  # the very file it runs
    except OSError:
        return False


def find_cron_daemon(known: DaemonNames = CRON_DAEMONS, proc: Path = Path("/proc")) -> CronDaemon:
    """Whether a cron daemon runs on this host, read from ``proc``."""
    try:
        pids = tuple(int(p) for p in os.listdir(proc) if p.isdigit() and _is_cron(p, known, proc))
    except OSError as e:
        return CronDaemon(None, (), f"cannot read {proc}: {e.strerror or e}")
    if pids:
        shown = ", ".join(map(str, pids))
        return CronDaemon(True, pids, f"pid {shown}")
    hidden = hidden_from_me(proc)
    if hidden is not None:  # root's cron daemon may run unseen
        return CronDaemon(None, (), hidden)
    programs = ", ".join(sorted(known.exes))
    return CronDaemon(False, (), f"no process runs {programs} or busybox crond")


def interval_of(schedule: str) -> int | None:
    """The longest time between two runs of a schedule, in seconds; None if not simple."""
    nicknames = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *"}
    fields = nicknames.get(schedule.strip(), schedule).split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        return None
    minute, hour = fields[:2]
    if minute.isdigit():  # once an hour, or once in every so many hours
        every = 24 if hour.isdigit() else step(hour)
        return every * 3600 if every is not None and every <= 24 else None
    every = step(minute) if hour == "*" else None
    return every * 60 if every is not None and every <= 60 else None


# --- holds and watchers ---


class WatcherError(Exception):
    """A watch lock file that is there but cannot be believed."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"watch lock {path} {why}")
        self.path = path
        self.why = why


class Watcher(NamedTuple):
    """A guardian watching a target (``check --watch``), as its watch lock file says."""

    pid: int
    start_ticks: int  # /proc/PID/stat's: with the pid, the watching process for ever
    since: datetime  # when it began watching (UTC)
    until: datetime  # when it means to end (UTC)

    def to_json(self) -> bytes:
        """The one line a watcher writes into its lock file (what ``read_watcher`` reads)."""
        return (json.dumps({"pid": self.pid, "start_ticks": self.start_ticks,
                            "since": _stamp(self.since), "until": _stamp(self.until)})
                + "\n").encode()  # fmt: skip


_WATCH_MAX = 4096  # a watch lock file's line is some 100 bytes


def read_watcher(lock_dir: Path, name: str, *, owner: int) -> Watcher | None:
    """The guardian watching ``name`` now, as its watch lock file tells; None if none does.

    The watcher holds ``<lock_dir>/<name>.watch.lock`` (flock) while it watches and
    writes its pid, start ticks and times into it. This only reads the file: never
    creates it, never locks it, never through a symlink, never blocking (a FIFO), at
    most a few kilobytes. None: no file, nothing in it yet, or it names a process that
    has ended (a watcher killed by SIGKILL leaves its file; the lock went with it).
    PermissionError: this user may not look (root's lock folder), so cannot tell.
    WatcherError: a file that is there but not believed (not ``owner``'s, or others could
    have written it or its folder; not a watcher's line).
    """
    path = lock_path(lock_dir, f"{name}.watch")
    try:
        folder = os.lstat(lock_dir)
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise
    except OSError as e:
        raise WatcherError(path, f"cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != owner or st.st_mode & 0o022:
            raise WatcherError(path, f"is owned by uid {st.st_uid} with mode "
                               f"{stat.S_IMODE(st.st_mode):o}, so others could have "
                               "written it")  # fmt: skip
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != owner or folder.st_mode & 0o022:
            raise WatcherError(path, f"is in {lock_dir}, owned by uid {folder.st_uid} with "
                               f"mode {stat.S_IMODE(folder.st_mode):o}, so others could "
                               "have written it")  # fmt: skip
        data = os.read(fd, _WATCH_MAX + 1)
    except OSError as e:
        raise WatcherError(path, f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > _WATCH_MAX:
        raise WatcherError(path, f"is larger than {_WATCH_MAX} bytes, so not a watcher's")
    if not data.strip():
        return None  # locked, its line not written yet
    try:
        watcher = _parse_watcher(data)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise WatcherError(path, f"is not a watcher's line ({_short(str(e), 100)})") from None
    found = proc.stat(watcher.pid)  # (PermissionError: /proc hides it from this user)
    if found is None or found.dead or found.start_ticks != watcher.start_ticks:
        return None  # that watcher has ended; the pid may be another process's by now
    return watcher


def _parse_watcher(data: bytes) -> Watcher:
    """A watch lock file's line; ValueError (KeyError, TypeError) if it is none."""
    raw = json.loads(data)
    pid, ticks = raw["pid"], raw["start_ticks"]
    since, until = _time(raw["since"]), _time(raw["until"])
    if not (type(pid) is int and pid > 0 and type(ticks) is int and ticks >= 0):
        raise ValueError(f"pid {pid!r}, start_ticks {ticks!r}")
    if since is None or until is None:
        raise ValueError(f"since {raw['since']!r}, until {raw['until']!r}")
    return Watcher(pid, ticks, since, until)


class _HoldSeen(NamedTuple):
    hold: holds.Hold | None = None
    expired: bool = False
    file: str = "none"  # "none", "believed", "not believed", "unreadable" (to this user)
    problem: str | None = None  # why not believed, or not readable
    path: str | None = None  # where, if there is one (or may be)


def _hold_of(state_dir: Path, name: str, runner: int, now: datetime) -> _HoldSeen:
    """The target's hold as a check (run by ``runner``) sees it."""
    path = holds.path_for(state_dir, name)
    try:
        hold = holds.read(state_dir, name, owner=runner)
    except holds.HoldError as e:
        why = str(e).removeprefix(f"hold file {path} ")
        kind = "unreadable" if why in _UNREADABLE else "not believed"
        return _HoldSeen(file=kind, problem=why, path=str(path))
    if hold is None:
        return _HoldSeen()
    return _HoldSeen(hold, hold.expired(now.timestamp()), "believed", path=str(path))


class _WatcherSeen(NamedTuple):
    watcher: Watcher | None = None
    file: str = "none"  # "none", "believed", "not believed", "unreadable" (to this user)
    problem: str | None = None


def _watcher_of(lock_dir: Path, name: str, runner: int) -> _WatcherSeen:
    try:
        watcher = read_watcher(lock_dir, name, owner=runner)
    except PermissionError as e:
        return _WatcherSeen(file="unreadable", problem=f"cannot read {e.filename or lock_dir} "
                            f"({e.strerror or e})")  # fmt: skip
    except WatcherError as e:
        return _WatcherSeen(file="not believed", problem=e.why)
    return _WatcherSeen(watcher, "believed" if watcher is not None else "none")


# --- the report ---


@dataclass(frozen=True, slots=True)
class TargetStatus:
    name: str
    running: bool | None  # None: this user cannot tell (/proc hides the process it would be)
    pid: int | None
    uptime_s: int | None
    evidence: str
    last: LastAction | None
    starts_24h: int
    failed_starts_24h: int = 0
    health: str | None = None  # "healthy", "failing", "unknown"; None: no probes, or not up
    probe_failures: int | None = None  # consecutive failing runs
    probe_threshold: int | None = None  # health.failures: a restart at this many
    probes: tuple[str, ...] = ()  # what failed, from the newest unhealthy record
    gave_up: GaveUp | None = None
    backoff: Backoff | None = None
    gives_up_next: str | None = None
    last_failure: Failure | None = None
    state_problem: str | None = None  # the state file could not be read or believed
    # "believed"; "none" (not written yet); "unreadable" (to this user: the log tells);
    # "not believed" (corrupt, or others could have written it: the next check rebuilds it)
    state_file: str = "believed"
    held: holds.Hold | None = None  # its hold (`guardian stop`), expired or not
    hold_expired: bool = False
    # "none", "believed", "not believed" (checks ignore it and keep the target running),
    # "unreadable" (to this user: whether it is held cannot be told)
    hold_file: str = "none"
    hold_problem: str | None = None
    hold_path: str | None = None
    watcher: Watcher | None = None  # the guardian watching it now (`check --watch`)
    # "none" (no watcher), "believed" (one runs), "not believed", "unreadable" (to this user)
    watch_lock: str = "none"
    watch_problem: str | None = None
    watcher_stuck: bool = False  # running past its end, guardian.timeout and WATCH_SLACK

    @property
    def holding(self) -> bool:
        """A hold keeps it down: no check starts it."""
        return self.held is not None and not self.hold_expired

    @property
    def ok(self) -> bool | None:
        """Running, and not failing its probes (one failing run below the threshold counts),
        and not held; None when whether it runs cannot be told."""
        if self.holding:
            return False  # on purpose, but it must not be forgotten
        if self.running is None:
            return None
        return self.running and self.health != "failing"

    def to_dict(self) -> dict[str, object]:
        data = {**asdict(self), "ok": self.ok}
        del data["hold_expired"], data["watcher_stuck"]
        held, watcher = self.held, self.watcher
        data["held"] = None if held is None else {**held.to_dict(), "expired": self.hold_expired}
        data["watcher"] = None if watcher is None else {
            "pid": watcher.pid, "since": _stamp(watcher.since), "until": _stamp(watcher.until),
            "stuck": self.watcher_stuck}  # fmt: skip
        return data

    def lines(self) -> list[str]:
        """The verdict, then indented details when there is something to say."""
        out = [f"{self.name}: {self._verdict()}"]
        if self.holding:
            out.append(f"  {self._held_state()}")
        out += self._hold_lines()
        out += self._watcher_lines()
        if self.running and self.health == "failing":
            out.append(f"  pid {self.pid}, up {_duration(self.uptime_s or 0)}")
        if self.gave_up is not None:
            g = self.gave_up
            then = f"next try at {g.next_try}" if not self.running else (
                f"if it dies, no start before {g.next_try}")  # fmt: skip
            out.append(f"  gave up at {g.at}: {g.reason}; {then}")
        if self.backoff is not None:
            out.append(f"  backoff until {self.backoff.until}: {self.backoff.reason}")
        if self.gives_up_next is not None:
            out.append(f"  the next run gives up: {self.gives_up_next}")
        out += self._failure_lines()
        history = self._history()
        if history:
            out.append(f"  {history}")
        return out

    def _verdict(self) -> str:
        if self.held is not None and self.holding:
            # First, and loud: a target kept down on purpose must not be forgotten.
            return "HELD " + self.held.describe().removeprefix("held ")
        if self.running is None:
            return f"cannot tell whether it runs: {self.evidence} (root can tell)"
        if not self.running:
            return f"NOT RUNNING: {self.evidence}"
        up = f"pid {self.pid}, up {_duration(self.uptime_s or 0)}"
        if self.health == "failing":
            why = f": {'; '.join(self.probes)}" if self.probes else ""
            failing = f"{self.probe_failures} of {self.probe_threshold}"
            return f"running, UNHEALTHY (probes failing {failing}){why}"
        if self.health == "healthy":
            return f"running, healthy, {up}"
        if self.health == "unknown":
            return f"running, {up}; health unknown (no record of a probe yet)"
        return f"running, {up}"

    def _held_state(self) -> str:
        """Whether a held target runs: said quietly (the HELD line says why)."""
        if self.running is None:
            return f"cannot tell whether it runs: {self.evidence} (root can tell)"
        if not self.running:
            return f"not running (held): {self.evidence}"
        return f"running though held: pid {self.pid}, up {_duration(self.uptime_s or 0)}"

    def _hold_lines(self) -> list[str]:
        held, path = self.held, f"hold file {self.hold_path}"
        if held is not None and self.hold_expired:
            said = held.to_dict()
            why = f": {held.reason}" if held.reason else ""
            then = "; the next run starts it" if self.running is False else ""
            return [f"  hold expired at {said['until']}{then} (held by {held.by} since "
                    f"{said['at']}{why})"]  # fmt: skip
        if self.hold_file == "not believed":
            return [f"  {path} not believed: {self.hold_problem}; checks ignore it and keep "
                    "the target running"]  # fmt: skip
        if self.hold_file == "unreadable":
            return [f"  cannot tell whether it is held: {path} {self.hold_problem} (root "
                    "can tell)"]  # fmt: skip
        return []

    def _watcher_lines(self) -> list[str]:
        w = self.watcher
        if w is not None and self.watcher_stuck:
            return [f"  WARNING: watcher pid {w.pid} should have ended at {_stamp(w.until)} "
                    f"(watching since {_stamp(w.since)})"]  # fmt: skip
        if w is not None:
            return [f"  watched by pid {w.pid} since {_stamp(w.since)} (until {_stamp(w.until)})"]
        if self.watch_lock == "unreadable":
            return [f"  watcher unknown: {self.watch_problem} (root can tell)"]
        if self.watch_lock == "not believed":
            return [f"  watch lock of {self.name} not believed: {self.watch_problem}"]
        return []

    def _failure_lines(self) -> list[str]:
        f = self.last_failure
        if f is None:
            return []
        action = f.action.replace("_", " ")  # "start failed", as check says it
        what = f"{action}: {f.error} ({f.reason})" if f.error else f"{action}: {f.reason}"
        if not f.current:
            when = _time(f.ts)
            if self.held is not None and self.holding and when and when.timestamp() <= self.held.at:
                return [f"  earlier failure at {f.ts} (before the hold): {_short(what)}"]
            return [f"  earlier failure at {f.ts} (it ran since): {_short(what)}"]
        tail = [f"  | {line}" for line in f.output_tail[-TAIL_SHOWN:]]
        return [f"  last failure at {f.ts}: {what}", *tail]

    def _history(self) -> str:
        if self.last is None:
            return "no audit record yet"
        if self.last.action in _QUIET and not self.starts_24h and not self.failed_starts_24h:
            return ""  # nothing to say: a check found it running (or held), as all day
        s = f"{self.starts_24h} start{'s' * (self.starts_24h != 1)}"
        if self.failed_starts_24h:
            s += f", {self.failed_starts_24h} failed start{'s' * (self.failed_starts_24h != 1)}"
        return f"last {self.last.action} at {self.last.ts}; {s} in 24h"


@dataclass(frozen=True, slots=True)
class Report:
    targets: tuple[TargetStatus, ...]
    cron: tuple[Entry, ...]
    audit_problem: str | None
    unreadable_lines: int  # in the part of the audit log that was read
    history_truncated: bool  # the audit log is longer than HISTORY_BUDGET: older records unseen
    future_records: int = 0  # dated later than now (and FUTURE_SLACK): not believed
    now: datetime | None = None
    last_run: datetime | None = None  # guardian's newest run in the audit log (not a dry run)
    timeout: float = 0.0  # guardian.timeout: a run may take this long
    cron_daemon: CronDaemon | None = None  # looked for when a cron line is installed
    cron_unreadable: tuple[str, ...] = ()  # cron files this user could not read

    @property
    def run_by_cron(self) -> tuple[Entry, ...]:
        """The lines cron runs (not those in a file cron ignores)."""
        return tuple(e for e in self.cron if e.not_run is None)

    @property
    def all_running(self) -> bool:
        """Every target is known to run."""
        return all(t.running is True for t in self.targets)

    @property
    def interval_s(self) -> int | None:
        """How often cron runs guardian (the most often, if several lines)."""
        known = [i for e in self.run_by_cron if (i := interval_of(e.schedule)) is not None]
        return min(known) if known else None

    @property
    def overdue(self) -> str | None:
        """Why guardian is late, if it is: it did not run when its cron line says it would."""
        every = self.interval_s
        if every is None or self.now is None:
            return None
        if self.last_run is None:
            if self.audit_problem or self.history_truncated:
                return None  # cannot tell
            return f"no run of guardian is in the audit log; cron runs it every {_duration(every)}"
        age = (self.now - self.last_run).total_seconds()
        if age <= every + self.timeout + SLACK:
            return None
        ago = f"{_duration(int(age))} ago, at {_stamp(self.last_run)}"
        return f"guardian last ran {ago}; cron runs it every {_duration(every)}"

    @property
    def no_cron_daemon(self) -> bool:
        return bool(self.run_by_cron) and self.cron_daemon is not None and (
            self.cron_daemon.running is False)  # fmt: skip

    @property
    def problems(self) -> list[str]:
        """Why status exits 1 (none: 0)."""
        out = []
        for t in self.targets:
            if t.held is not None and t.holding:
                out.append(f"{t.name}: {t.held.describe()}")  # not running, on purpose
            elif t.running is None:
                pass  # not known to be wrong: said, not counted (root can tell)
            elif not t.running:
                out.append(f"{t.name}: not running")
            elif not t.ok:
                out.append(f"{t.name}: unhealthy (probes failing {t.probe_failures} of "
                           f"{t.probe_threshold})")  # fmt: skip
            if t.hold_file == "not believed":
                out.append(f"{t.name}: hold file not believed ({t.hold_problem}); checks "
                           "keep it running")  # fmt: skip
            if t.watcher is not None and t.watcher_stuck:
                out.append(f"{t.name}: watcher pid {t.watcher.pid} should have ended at "
                           f"{_stamp(t.watcher.until)}")  # fmt: skip
        if self.overdue:
            out.append(self.overdue)
        if self.audit_problem:
            out.append(f"audit log: {self.audit_problem}")
        if self.no_cron_daemon:
            out.append("no cron daemon runs, so cron never runs guardian")
        if self.cron and not self.run_by_cron:
            out.append("guardian's cron line is only where cron never reads it")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        cron = [
            # next_run: when the schedule fires next (if a cron daemon runs: see cron_daemon)
            {
                **asdict(e),
                "next_run": _iso(next_run(e.schedule)),
                "interval_s": interval_of(e.schedule),
            }
            for e in self.cron
        ]
        age = (self.now - self.last_run).total_seconds() if self.now and self.last_run else None
        return {
            "ok": self.ok,
            "problems": self.problems,
            "all_running": self.all_running,
            "targets": [t.to_dict() for t in self.targets],
            "last_run": _iso(self.last_run),
            "last_run_age_s": None if age is None else int(age),
            "interval_s": self.interval_s,
            "overdue": self.overdue is not None,
            "cron": cron,
            "cron_daemon": asdict(self.cron_daemon) if self.cron_daemon else None,
            "cron_unreadable": list(self.cron_unreadable),
            "audit_problem": self.audit_problem,
            "unreadable_lines": self.unreadable_lines,
            "future_records": self.future_records,
            "history_truncated": self.history_truncated,
        }

    def lines(self) -> list[str]:
        out = [line for t in self.targets for line in t.lines()]
        out += self._state_lines()
        if self.audit_problem:
            out.append(f"audit log: {self.audit_problem}")
        if self.unreadable_lines:
            n = self.unreadable_lines
            out.append(f"audit log: {n} line{'s' * (n != 1)} could not be read")
        if self.future_records:
            n = self.future_records
            out.append(f"audit log: {n} record{'s are' if n != 1 else ' is'} dated in the "
                       "future (a clock set back since?): not believed")  # fmt: skip
        if self.history_truncated:
            out.append(f"audit log: only the last {HISTORY_BUDGET >> 20} MiB read")
        if self.overdue:
            out.append(f"WARNING: {self.overdue}")
        elif self.last_run is not None and self.now is not None:
            ago = _duration(int((self.now - self.last_run).total_seconds()))
            out.append(f"guardian: last ran at {_stamp(self.last_run)} ({ago} ago)")
        out += self._cron_lines()
        return out

    def _state_lines(self) -> list[str]:
        """Each problem with state files once, with the targets it concerns."""
        by_problem: dict[tuple[str, str], list[str]] = {}
        for t in self.targets:
            if t.state_problem is not None:
                by_problem.setdefault((t.state_file, t.state_problem), []).append(t.name)
        return [
            f"state file unreadable for {', '.join(names)} ({problem}): health, backoff "
            "and give-up taken from the audit log"
            if kind == "unreadable"
            else f"state file not believed for {', '.join(names)} ({problem}): the next "
            "check starts afresh without it (no backoff or give-up holds)"
            for (kind, problem), names in by_problem.items()
        ]

    def _cron_lines(self) -> list[str]:
        unread = []
        if self.cron_unreadable:
            unread.append(f"cron: could not read {', '.join(self.cron_unreadable)}: guardian's "
                          "line may be in it (status as root can tell)")  # fmt: skip
        if not self.cron:
            return [*unread, "cron: not installed (guardian install --interval 1m)"]
        daemon = self.cron_daemon
        out = unread
        for e in self.cron:
            when = next_run(e.schedule)
            if e.not_run is not None:
                out.append(f"cron: installed in {e.where}: {e.schedule} ({e.not_run})")
                continue
            if when is None:
                nxt = ""
            elif daemon is not None and daemon.running is False:
                nxt = f"; next run (if a cron daemon ran) {_stamp(when)}"
            elif daemon is not None and daemon.running is None:
                nxt = f"; next run (if a cron daemon runs) {_stamp(when)}"
            else:
                nxt = f"; next run {_stamp(when)}"
            out.append(f"cron: installed in {e.where}: {e.schedule}{nxt}")
        if daemon is not None and daemon.running is False:
            out.append(f"WARNING: no cron daemon is running ({daemon.detail}): the cron line "
                       "never fires, so nothing runs guardian")  # fmt: skip
        elif daemon is not None and daemon.running is None:
            out.append(f"cron: cannot tell whether a cron daemon runs ({daemon.detail})")
        return out


def _stamp(when: datetime) -> str:
    """ISO 8601, UTC, "Z": as the audit log's next_try and the cron line's next run."""
    return when.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _iso(when: datetime | None) -> str | None:
    return _stamp(when) if when else None


def _duration(seconds: int) -> str:
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


# --- gathering it ---


def _state_problem(warning: str, path: Path) -> str:
    """A Store warning as status says it: what is wrong with the file, not what check does."""
    text = warning.removeprefix(f"state file {path} ")
    return text.removesuffix("; not believed, rebuilt").removesuffix("; rebuilt")


# This user may not open it; the check (root, or the user cron runs it as) can.
_UNREADABLE = frozenset(
    {"cannot be read (Permission denied)", "cannot be read (Operation not permitted)"}
)
# Not believed for who owns the file (or its folder): a verdict only as the check's own user.
_OWNERSHIP = ("so others could have written it", "which others can write to")


def _state_file(problem: str, path: Path) -> str:
    """What a Store ``problem`` means for the next check: "unreadable" (to this user only:
    the check reads it, and the audit log tells what it says) or "not believed" (the
    check sets it aside too, and starts afresh: no backoff or give-up holds)."""
    if problem in _UNREADABLE:
        return "unreadable"
    if problem.endswith(_OWNERSHIP):
        # Judged as this user: the check's own verdict only if this is the user whose check
        # writes these files (the owner of their folder); else this user cannot judge it.
        try:
            mine = os.stat(path.parent).st_uid == os.geteuid()
        except OSError:
            mine = False
        return "not believed" if mine else "unreadable"
    return "not believed"  # corrupt, impossible values, too large, not a regular file


def _hidden_pid(found: Missing | Unsure, hidden: str | None) -> str | None:
    """The evidence, when the pidfile names a process that runs but that /proc hides
    from this user (``hidden``: why it hides): whether it is the target cannot be told."""
    pid = found.old_pid
    if hidden is None or pid is None or _read(f"/proc/{pid}/stat"):
        return None  # /proc shows it (this user's own, say): discovery's answer stands
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it asks whether the pid exists, as hidepid won't
    except PermissionError:
        return f"pidfile names pid {pid}, which runs, but {hidden}"
    except OSError:
        return None  # no such process: not running, as discovery says
    return None  # pragma: no cover - a process this user may signal is one /proc shows it


def _failure(
    seen: _Seen, ok: bool, since: datetime, held_at: float | None = None
) -> Failure | None:
    """The newest failure: current while the target is not up and has not run since it
    (nor been held since: ``held_at``, when its hold was set); else shown as a past one if
    it is less than a day old."""
    f = seen.failure
    if f is None:
        return None
    before_hold = held_at is not None and f.when.timestamp() <= held_at
    current = not ok and not seen.failure_then_ran and not before_hold
    if not current and f.when < since:
        return None
    return Failure(f.action, _stamp(f.when), f.reason, f.error, f.output_tail, current)


def runner_of(config_path: Path, user: str | None) -> int:
    """Whose guardian a config is, at first sight: the user cron runs it as.

    ``user`` (``status --user``, as for ``install --user``) if given; else, for an
    operator who is not root, the config file's owner (root, for /etc/guardian; the
    user, for theirs); else root. (Never guessed from who owns the state folder: a
    user who owns the state folder of root's config would make root's status
    believe that user's processes and files.)
    """
    if user is not None:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(user).pw_uid
    if os.geteuid() != 0:
        with contextlib.suppress(OSError):  # (then load() says what is wrong with it)
            return os.stat(config_path).st_uid
    return os.geteuid()


def _matcher(target: Target, runner: int) -> Matcher:
    """Who to look for: what a check run by ``runner`` looks for. As a user who is not
    root, the program of another user's process cannot be seen: say so, not "not
    running"."""
    matcher = Matcher.for_target(target)
    if target.user is None:
        matcher.uid = runner
    if os.geteuid() != 0:
        matcher.unverified_ok = True
    return matcher


def _look(
    target: Target,
    config: Config,
    seen: _Seen,
    clock: _Clock,
    since: datetime,
    hidden: str | None = None,
    runner: int | None = None,
) -> TargetStatus:
    """``hidden``: why /proc hides other users' processes from this user, if it does;
    ``runner``: the user guardian runs as (whose state files are believed)."""
    runner = os.geteuid() if runner is None else runner
    hold = _hold_of(config.settings.state_dir, target.name, runner, clock.wall)
    held_at = hold.hold.at if hold.hold is not None and not hold.expired else None
    watch = _watcher_of(config.settings.lock_dir, target.name, runner)
    path = state.path_for(config.settings.state_dir, target.name)
    store = state.Store(path, owner=runner)
    existed = os.path.lexists(path)
    st = store.load()  # fresh (as the next check starts) when not believed
    problem = _state_problem(store.warnings[0], path) if store.warnings else None
    kind = _state_file(problem, path) if problem is not None else "believed"
    kind = kind if existed else "none"
    # As a check finds it: with what guardian remembers of it (a moved symlink, say).
    matcher = _matcher(target, runner)
    found = discover(target, remembered=state.remembered(st), matcher=matcher)
    running: bool | None = isinstance(found, Found)
    if isinstance(found, Found) and matcher.unverified_ok and not found.exe:
        found = found._replace(evidence=f"{found.evidence} (its program not verified: only "
                               "root may see it)")  # fmt: skip
    evidence = found.evidence if isinstance(found, Found) else found.reason
    if not isinstance(found, Found) and (unseen := _hidden_pid(found, hidden)) is not None:
        running, evidence = None, unseen  # not "not running": it may well be
    health = _Health()
    if running and target.health.any and held_at is None:  # (no check probes a held one)
        # A state file never written yet says nothing of probes: the log may.
        health = _health(st if existed and problem is None else None, seen)
    dead = running is False and isinstance(found, Missing)
    if held_at is not None:
        policy = _Policy()  # no check starts it, whatever its crash loop says
    elif kind == "unreadable":
        policy = _policy_from_log(seen, dead, clock)
    else:
        policy = _policy_from_state(st, target, dead, seen, clock)
    last = seen.last
    up = running is True and health.verdict != "failing"
    w = watch.watcher
    late = config.settings.timeout + WATCH_SLACK
    stuck = w is not None and (clock.wall - w.until).total_seconds() > late
    return TargetStatus(
        name=target.name,
        running=running,
        pid=found.pid if isinstance(found, Found) else None,
        uptime_s=int(time.time() - found.create_time) if isinstance(found, Found) else None,
        evidence=evidence,
        last=LastAction(last.action, _stamp(last.when), last.reason) if last else None,
        starts_24h=seen.starts,
        failed_starts_24h=seen.failed_starts,
        health=health.verdict,
        probe_failures=health.failures,
        probe_threshold=target.health.failures if health.verdict else None,
        probes=health.probes,
        gave_up=policy.gave_up,
        backoff=policy.backoff,
        gives_up_next=policy.gives_up_next,
        last_failure=_failure(seen, up, since, held_at),
        state_problem=problem,
        state_file=kind,
        held=hold.hold,
        hold_expired=hold.expired,
        hold_file=hold.file,
        hold_problem=hold.problem,
        hold_path=hold.path,
        watcher=w,
        watch_lock=watch.file,
        watch_problem=watch.problem,
        watcher_stuck=stuck,
    )


def gather(
    config: Config,
    cron: list[Entry],
    *,
    daemons: DaemonNames = CRON_DAEMONS,
    runner: int | None = None,
    cron_unreadable: tuple[str, ...] = (),
) -> Report:
    """Everything status says, read now; ``daemons``: what counts as a cron daemon;
    ``runner``: the user guardian runs as (by default: ``runner_of`` the config)."""
    if runner is None:
        runner = runner_of(config.path, None)
    names = [t.name for t in config.targets]
    clock = _Clock(datetime.now(UTC), state.now())
    since = clock.wall - timedelta(hours=24)
    # A give-up is shown for its whole window, however long: read back that far too.
    window = max((t.restart.window for t in config.targets), default=0.0)
    horizon = min(since, clock.wall - timedelta(seconds=window))
    path = config.settings.audit_log
    history = _History(names, since, horizon, clock.wall)
    problem, unreadable, truncated = None, 0, False
    try:
        tail = read_history(path, max_bytes=HISTORY_BUDGET, stop=history.see, keep=_keep_none)
    except FileNotFoundError:
        pass  # no audit log yet: nothing has happened
    except OSError as e:
        # Half a history would undercount: show none.
        history = _History(names, since, horizon, clock.wall)
        problem = f"cannot read {path}: {e.strerror or e}"
    else:
        unreadable, truncated = tail.unreadable + history.bad, tail.truncated
        if tail.problem is not None:  # a rotated file: what was read before it is kept
            problem = f"cannot read {tail.problem}; the history before it is not shown"
    hidden = hidden_from_me()
    rows = tuple(
        _look(t, config, history.seen[t.name], clock, since, hidden, runner) for t in config.targets
    )
    return Report(
        targets=rows,
        cron=tuple(cron),
        audit_problem=problem,
        unreadable_lines=unreadable,
        history_truncated=truncated,
        future_records=history.in_future,
        now=clock.wall,
        last_run=history.last_run,
        timeout=config.settings.timeout,
        cron_daemon=find_cron_daemon(daemons) if cron else None,
        cron_unreadable=cron_unreadable,
    )

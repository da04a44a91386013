"""`guardian status`: is each target up and healthy, what has guardian done, and does cron run it.

Everything is read, nothing written: /proc (the target, and the cron daemon),
each target's state file (probe failures, backoff and give-up, put through the
same pure policy a check applies), the audit log from its end (what happened
in the last 24 hours, the last failure with its output, when guardian last
ran) and guardian's crontab line. An operator who is not root may be unable to
read root's state files: what they would say is then taken from the audit
log's records, and the report says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from guardian import state
from guardian.audit import ACTIONS, read_backwards
from guardian.config import Config, Target
from guardian.cron import Entry, next_run, step
from guardian.discovery import Found, Matcher, Missing, discover
from guardian.run import ASIDES

_STARTS = frozenset({"started", "restarted_unhealthy", "restarted"})
_SUCCESSES = _STARTS | {"ok", "adopted"}  # the target ran after these
_FAILURES = frozenset({"start_failed", "error", "timeout"})  # records with a failure to show
_HEALTH = _SUCCESSES | {"unhealthy"}  # records that say how its probes went
_BY_HAND = frozenset({"stopped", "restarted", "reset"})  # not a run of cron's
# How much of the audit log, from its end, status reads at most: a log that
# logrotate never reached must not make status slow (or its memory large).
HISTORY_BUDGET = 32 << 20
# A run is overdue once its interval, guardian's own timeout and this have passed.
SLACK = 30.0
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


def _time(value: object) -> datetime | None:
    """An RFC 3339 time with a zone; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _strings(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


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
    target = str(raw["target"])
    return _Record(when, target, action, reason, dry_run, error, tail, next_try, probes)


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
        self._cleared = False  # a reset or stop by hand is newer than the record in hand

    def see(self, r: _Record, recent: bool) -> None:
        self.last = self.last or r
        if recent and r.action in _STARTS:
            self.starts += 1
        if recent and r.action == "start_failed":  # a start that did not come up
            self.failed_starts += 1
        if not self._outcome and r.action not in ASIDES:
            self._outcome = True
            self.backoff = r if r.action == "backoff" and not self._cleared else None
        if self.health is None and r.action in _HEALTH:
            self.health = r
        if self.failure is None and r.action in _FAILURES:
            self.failure, self.failure_then_ran = r, self._ran
        if self.gave_up is None and r.action == "gave_up" and not self._cleared:
            self.gave_up = r
        self._ran = self._ran or r.action in _SUCCESSES
        # (A reset forgets the crash loop; after a stop, the next check starts it regardless.)
        self._cleared = self._cleared or r.action in ("reset", "stopped")


class _History:
    """What status wants from the audit log, folded in record by record, newest first."""

    def __init__(self, names: Iterable[str], since: datetime, horizon: datetime) -> None:
        self.seen = {name: _Seen() for name in names}
        self.since = since  # starts are counted from here
        self.horizon = horizon  # nothing older matters, once every target has a record
        self.last_run: datetime | None = None  # guardian's newest run (by cron, presumably)
        self.bad = 0  # records that are not guardian's: unreadable
        self.past_horizon = False

    def see(self, raw: dict[str, object]) -> bool:
        """Fold in one record; True once no older record can change the answer."""
        r = _record(raw)
        if r is None:
            self.bad += 1
            return False
        seen = self.seen.get(r.target)
        if seen is not None and not r.dry_run:
            seen.see(r, recent=r.when >= self.since)
            if self.last_run is None and r.action not in _BY_HAND:
                self.last_run = r.when
        self.past_horizon = self.past_horizon or r.when < self.horizon
        return (
            self.past_horizon
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


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError:
        return b""


def _is_cron(pid: str, known: DaemonNames, proc: Path) -> bool:
    """Does process ``pid`` run a cron daemon?

    The program the kernel runs (/proc/PID/exe) decides, so a process that merely
    calls itself cron is not one; busybox's crond is busybox called as crond. A
    process this user may not look into (another user's, as non-root) is judged
    by its name instead (/proc/PID/comm, or argv[0]), and only if root runs it.
    """
    argv0 = os.path.basename(
        _read(f"{proc}/{pid}/cmdline").split(b"\0")[0].decode(errors="replace")
    )
    try:
        exe = os.readlink(f"{proc}/{pid}/exe").removesuffix(" (deleted)")  # an upgraded cron
    except PermissionError:
        try:
            owner = os.stat(f"{proc}/{pid}").st_uid
        except OSError:
            return False
        comm = _read(f"{proc}/{pid}/comm").decode(errors="replace").strip()
        return owner == 0 and (comm in known.names or argv0 in known.names)
    except OSError:  # gone, or a kernel thread
        return False
    return exe in known.exes or (os.path.basename(exe) == "busybox" and argv0 in known.names)


def find_cron_daemon(known: DaemonNames = CRON_DAEMONS, proc: Path = Path("/proc")) -> CronDaemon:
    """Whether a cron daemon runs on this host, read from ``proc``."""
    try:
        pids = tuple(int(p) for p in os.listdir(proc) if p.isdigit() and _is_cron(p, known, proc))
    except OSError as e:
        return CronDaemon(None, (), f"cannot read {proc}: {e.strerror or e}")
    if pids:
        shown = ", ".join(map(str, pids))
        return CronDaemon(True, pids, f"pid {shown}")
    if os.geteuid() != 0 and not (proc / "1").exists():
        # /proc mounted with hidepid: other users' processes are hidden from this one.
        return CronDaemon(None, (), f"{proc} hides other users' processes from this user")
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


# --- the report ---


@dataclass(frozen=True, slots=True)
class TargetStatus:
    name: str
    running: bool
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
    held: str | None = None  # issue 9: a hold put on the target by hand; none exist yet

    @property
    def ok(self) -> bool:
        """Running, and not failing its probes (one failing run below the threshold counts)."""
        return self.running and self.health != "failing"

    def lines(self) -> list[str]:
        """The verdict, then indented details when there is something to say."""
        out = [f"{self.name}: {self._verdict()}"]
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
        # (Issue 9: a held target's verdict goes first, here.)
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

    def _failure_lines(self) -> list[str]:
        f = self.last_failure
        if f is None:
            return []
        action = f.action.replace("_", " ")  # "start failed", as check says it
        what = f"{action}: {f.error} ({f.reason})" if f.error else f"{action}: {f.reason}"
        if not f.current:
            return [f"  earlier failure at {f.ts} (it ran since): {_short(what)}"]
        tail = [f"  | {line}" for line in f.output_tail[-TAIL_SHOWN:]]
        return [f"  last failure at {f.ts}: {what}", *tail]

    def _history(self) -> str:
        if self.last is None:
            return "no audit record yet"
        if self.last.action == "ok" and not self.starts_24h and not self.failed_starts_24h:
            return ""  # nothing to say: a check found it running, as it always has today
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
    now: datetime | None = None
    last_run: datetime | None = None  # guardian's newest run in the audit log (not a dry run)
    timeout: float = 0.0  # guardian.timeout: a run may take this long
    cron_daemon: CronDaemon | None = None  # looked for when a cron line is installed

    @property
    def all_running(self) -> bool:
        return all(t.running for t in self.targets)

    @property
    def interval_s(self) -> int | None:
        """How often cron runs guardian (the most often, if several lines)."""
        known = [i for e in self.cron if (i := interval_of(e.schedule)) is not None]
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
        return bool(self.cron) and self.cron_daemon is not None and (
            self.cron_daemon.running is False)  # fmt: skip

    @property
    def problems(self) -> list[str]:
        """Why status exits 1 (none: 0)."""
        out = []
        for t in self.targets:
            if not t.running:
                out.append(f"{t.name}: not running")
            elif not t.ok:
                out.append(f"{t.name}: unhealthy (probes failing {t.probe_failures} of "
                           f"{t.probe_threshold})")  # fmt: skip
        if self.overdue:
            out.append(self.overdue)
        if self.no_cron_daemon:
            out.append("no cron daemon runs, so cron never runs guardian")
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
            "targets": [{**asdict(t), "ok": t.ok} for t in self.targets],
            "last_run": _iso(self.last_run),
            "last_run_age_s": None if age is None else int(age),
            "interval_s": self.interval_s,
            "overdue": self.overdue is not None,
            "cron": cron,
            "cron_daemon": asdict(self.cron_daemon) if self.cron_daemon else None,
            "audit_problem": self.audit_problem,
            "unreadable_lines": self.unreadable_lines,
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
        by_problem: dict[str, list[str]] = {}
        for t in self.targets:
            if t.state_problem is not None:
                by_problem.setdefault(t.state_problem, []).append(t.name)
        return [
            f"state file unreadable for {', '.join(names)} ({problem}): health, backoff "
            "and give-up taken from the audit log"
            for problem, names in by_problem.items()
        ]

    def _cron_lines(self) -> list[str]:
        if not self.cron:
            return ["cron: not installed (guardian install --interval 1m)"]
        daemon = self.cron_daemon
        out = []
        for e in self.cron:
            when = next_run(e.schedule)
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
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _failure(seen: _Seen, ok: bool, since: datetime) -> Failure | None:
    """The newest failure: current while the target is not up and has not run since it;
    else shown as a past one if it is less than a day old."""
    f = seen.failure
    if f is None:
        return None
    current = not ok and not seen.failure_then_ran
    if not current and f.when < since:
        return None
    return Failure(f.action, _stamp(f.when), f.reason, f.error, f.output_tail, current)


def _matcher(target: Target, config: Config) -> Matcher:
    """Who to look for. As root, what a check looks for. As another user, looking at a
    config that names no ``user``: the target runs as the one cron runs guardian as,
    taken to be the config file's owner (root, for /etc/guardian; the user, for theirs),
    and the program of another user's process cannot be seen: say so, not "not running"."""
    matcher = Matcher.for_target(target)
    if os.geteuid() != 0:
        matcher.unverified_ok = True
        if target.user is None:
            # (It was read a moment ago; if it is gone now, look for our own.)
            with contextlib.suppress(OSError):
                matcher.uid = os.stat(config.path).st_uid
    return matcher


def _look(
    target: Target, config: Config, seen: _Seen, clock: _Clock, since: datetime
) -> TargetStatus:
    path = state.path_for(config.settings.state_dir, target.name)
    store = state.Store(path)
    existed = os.path.lexists(path)
    st = store.load()
    problem = _state_problem(store.warnings[0], path) if store.warnings else None
    # As a check finds it: with what guardian remembers of it (a moved symlink, say).
    matcher = _matcher(target, config)
    found = discover(target, remembered=state.remembered(st), matcher=matcher)
    running = isinstance(found, Found)
    if isinstance(found, Found) and matcher.unverified_ok and not found.exe:
        found = found._replace(evidence=f"{found.evidence} (its program not verified: only "
                               "root may see it)")  # fmt: skip
    health = _Health()
    if running and target.health.any:
        # A state file never written yet says nothing of probes: the log may.
        health = _health(st if existed and problem is None else None, seen)
    dead = isinstance(found, Missing)
    policy = (
        _policy_from_log(seen, dead, clock)
        if problem is not None
        else _policy_from_state(st, target, dead, seen, clock)
    )
    last = seen.last
    return TargetStatus(
        name=target.name,
        running=running,
        pid=found.pid if isinstance(found, Found) else None,
        uptime_s=int(time.time() - found.create_time) if isinstance(found, Found) else None,
        evidence=found.evidence if isinstance(found, Found) else found.reason,
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
        last_failure=_failure(seen, running and health.verdict != "failing", since),
        state_problem=problem,
    )


def gather(config: Config, cron: list[Entry], *, daemons: DaemonNames = CRON_DAEMONS) -> Report:
    """Everything status says, read now; ``daemons``: what counts as a cron daemon."""
    names = [t.name for t in config.targets]
    clock = _Clock(datetime.now(UTC), state.now())
    since = clock.wall - timedelta(hours=24)
    # A give-up is shown for its whole window, however long: read back that far too.
    window = max((t.restart.window for t in config.targets), default=0.0)
    horizon = min(since, clock.wall - timedelta(seconds=window))
    path = config.settings.audit_log
    history = _History(names, since, horizon)
    problem, unreadable, truncated = None, 0, False
    try:
        tail = read_backwards(path, max_bytes=HISTORY_BUDGET, stop=history.see, keep=_keep_none)
    except FileNotFoundError:
        pass  # no audit log yet: nothing has happened
    except OSError as e:
        history = _History(names, since, horizon)  # half a history would undercount: show none
        problem = f"cannot read {path}: {e.strerror or e}"
    else:
        unreadable, truncated = tail.unreadable + history.bad, tail.truncated
    rows = tuple(_look(t, config, history.seen[t.name], clock, since) for t in config.targets)
    return Report(
        targets=rows,
        cron=tuple(cron),
        audit_problem=problem,
        unreadable_lines=unreadable,
        history_truncated=truncated,
        now=clock.wall,
        last_run=history.last_run,
        timeout=config.settings.timeout,
        cron_daemon=find_cron_daemon(daemons) if cron else None,
    )

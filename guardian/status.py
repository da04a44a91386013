"""`guardian status`: what each target is doing, what guardian last did, and the cron line."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from guardian import state
from guardian.audit import read_backwards
from guardian.config import Config
from guardian.cron import Entry, next_run
from guardian.discovery import Found, discover

_STARTS = frozenset({"started", "restarted_unhealthy", "restarted"})
# How much of the audit log, from its end, status reads at most: a log that
# logrotate never reached must not make status slow (or its memory large).
HISTORY_BUDGET = 32 << 20


@dataclass(frozen=True, slots=True)
class LastAction:
    action: str
    ts: str
    reason: str


@dataclass(frozen=True, slots=True)
class TargetStatus:
    name: str
    running: bool
    pid: int | None
    uptime_s: int | None
    evidence: str
    last: LastAction | None
    starts_24h: int


@dataclass(frozen=True, slots=True)
class Report:
    targets: tuple[TargetStatus, ...]
    cron: tuple[Entry, ...]
    audit_problem: str | None
    unreadable_lines: int  # in the part of the audit log that was read
    history_truncated: bool  # the audit log is longer than HISTORY_BUDGET: older records unseen

    @property
    def all_running(self) -> bool:
        return all(t.running for t in self.targets)

    def to_dict(self) -> dict[str, object]:
        cron = [{**asdict(e), "next_run": _iso(next_run(e.schedule))} for e in self.cron]
        return {
            "all_running": self.all_running,
            "targets": [asdict(t) for t in self.targets],
            "cron": cron,
            "audit_problem": self.audit_problem,
            "unreadable_lines": self.unreadable_lines,
            "history_truncated": self.history_truncated,
        }

    def lines(self) -> list[str]:
        out = []
        for t in self.targets:
            state = (
                f"running, pid {t.pid}, up {_duration(t.uptime_s or 0)}"
                if t.running
                else f"NOT RUNNING: {t.evidence}"
            )
            last = f"last {t.last.action} at {t.last.ts}" if t.last else "no audit record yet"
            starts = f"{t.starts_24h} start{'s' * (t.starts_24h != 1)} in 24h"
            out.append(f"{t.name}: {state}; {last}; {starts}")
        if self.audit_problem:
            out.append(f"audit log: {self.audit_problem}")
        if self.unreadable_lines:
            n = self.unreadable_lines
            out.append(f"audit log: {n} line{'s' * (n != 1)} could not be read")
        if self.history_truncated:
            out.append(f"audit log: only the last {HISTORY_BUDGET >> 20} MiB read")
        for e in self.cron:
            when = next_run(e.schedule)
            nxt = f"; next run {_iso(when)}" if when else ""
            out.append(f"cron: installed in {e.where}: {e.schedule}{nxt}")
        if not self.cron:
            out.append("cron: not installed (guardian install --interval 1m)")
        return out


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


class _History:
    """What status wants from the audit log, folded in record by record, newest first."""

    def __init__(self, names: Iterable[str], since: datetime) -> None:
        self.wanted = set(names)
        self.since = since
        self.last: dict[str, LastAction] = {}  # each target's last record (not a dry run)
        self.starts = dict.fromkeys(self.wanted, 0)  # its starts since ``since``
        self.bad_time = 0  # records whose "ts" is no time: not ours, so unreadable
        self.old_seen = False

    def see(self, record: dict[str, object]) -> bool:
        """Fold in one record; True once no older record can change the answer."""
        ts = str(record["ts"])
        try:
            old = datetime.fromisoformat(ts) < self.since
        except (ValueError, TypeError):  # TypeError: a time without a zone
            self.bad_time += 1
            return False
        name, action = str(record["target"]), str(record["action"])
        if name in self.wanted and not record.get("dry_run"):
            if name not in self.last:
                self.last[name] = LastAction(action, ts, str(record.get("reason", "")))
            if action in _STARTS and not old:
                self.starts[name] += 1
        self.old_seen = self.old_seen or old
        return self.old_seen and len(self.last) == len(self.wanted)


def _keep_none(record: dict[str, object]) -> bool:
    return False  # _History.see folds each record in: none needs keeping


def gather(config: Config, cron: list[Entry]) -> Report:
    names = [t.name for t in config.targets]
    since = datetime.now(UTC) - timedelta(hours=24)
    path = config.settings.audit_log
    history = _History(names, since)
    problem, unreadable, truncated = None, 0, False
    try:
        tail = read_backwards(path, max_bytes=HISTORY_BUDGET, stop=history.see, keep=_keep_none)
    except FileNotFoundError:
        pass  # no audit log yet: nothing has happened
    except OSError as e:
        history = _History(names, since)  # half a history would undercount: show none
        problem = f"cannot read {path}: {e.strerror or e}"
    else:
        unreadable, truncated = tail.unreadable + history.bad_time, tail.truncated
    rows = []
    now = time.time()
    for target in config.targets:
        # As a check finds it: with what guardian remembers of it (a moved symlink, say).
        memory = state.Store(state.path_for(config.settings.state_dir, target.name)).load()
        found = discover(target, remembered=state.remembered(memory))
        running = isinstance(found, Found)
        rows.append(
            TargetStatus(
                name=target.name,
                running=running,
                pid=found.pid if isinstance(found, Found) else None,
                uptime_s=int(now - found.create_time) if isinstance(found, Found) else None,
                evidence=found.evidence if isinstance(found, Found) else found.reason,
                last=history.last.get(target.name),
                starts_24h=history.starts[target.name],
            )
        )
    return Report(tuple(rows), tuple(cron), problem, unreadable, truncated)

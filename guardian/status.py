"""`guardian status`: what each target is doing, what guardian last did, and the cron line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from guardian.config import Config
from guardian.cron import Entry, next_run
from guardian.discovery import Found, discover

_STARTS = frozenset({"started", "restarted_unhealthy", "restarted"})


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
        for e in self.cron:
            when = next_run(e.schedule)
            nxt = f"; next run {_iso(when)}" if when else ""
            out.append(f"cron: installed in {e.where}: {e.schedule}{nxt}")
        if not self.cron:
            out.append("cron: not installed (guardian install --interval 1m)")
        return out


def _iso(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def _history(
    path: Path, names: Iterable[str], since: datetime
) -> tuple[dict[str, LastAction], dict[str, int]]:
    """Each target's last audit record, and how many times it was started since ``since``."""
    wanted = set(names)
    last: dict[str, LastAction] = {}
    starts = dict.fromkeys(wanted, 0)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
                name, action, ts = record["target"], record["action"], record["ts"]
            except (ValueError, KeyError, TypeError):
                continue  # a line that is not one of ours is no reason to fail
            if name not in wanted or record.get("dry_run"):
                continue
            last[name] = LastAction(action, ts, str(record.get("reason", "")))
            if action in _STARTS and datetime.fromisoformat(ts) >= since:
                starts[name] += 1
    return last, starts


def gather(config: Config, cron: list[Entry]) -> Report:
    names = [t.name for t in config.targets]
    since = datetime.now(UTC) - timedelta(hours=24)
    problem = None
    try:
        last, starts = _history(config.settings.audit_log, names, since)
    except FileNotFoundError:
        last, starts = {}, dict.fromkeys(names, 0)
    except OSError as e:
        last, starts = {}, dict.fromkeys(names, 0)
        problem = f"cannot read {config.settings.audit_log}: {e.strerror}"
    rows = []
    now = time.time()
    for target in config.targets:
        found = discover(target)
        running = isinstance(found, Found)
        rows.append(
            TargetStatus(
                name=target.name,
                running=running,
                pid=found.pid if isinstance(found, Found) else None,
                uptime_s=int(now - found.create_time) if isinstance(found, Found) else None,
                evidence=found.evidence if isinstance(found, Found) else found.reason,
                last=last.get(target.name),
                starts_24h=starts[target.name],
            )
        )
    return Report(tuple(rows), tuple(cron), problem)

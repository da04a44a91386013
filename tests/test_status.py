"""`guardian status` on real audit logs: huge ones, damaged ones, and the 24-hour window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.config import Config, load
from guardian.status import HISTORY_BUDGET, gather

from conftest import write_config


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """Two targets, neither running (no pidfile, no such process)."""
    command = ["/bin/sleep", f"{os.getpid()}.{tmp_path.name}"]  # matches no process
    return write_config(
        tmp_path / "guardian.toml",
        {"state_dir": str(tmp_path / "state"), "audit_log": str(tmp_path / "audit.jsonl")},
        {
            "agent": {"command": command, "pidfile": str(tmp_path / "agent.pid")},
            "worker": {"command": [*command, "w"], "pidfile": str(tmp_path / "worker.pid")},
        },
    )


@pytest.fixture
def config(config_path: Path) -> Config:
    return load(config_path)


@pytest.fixture
def big_log(tmp_path: Path) -> Iterator[Path]:
    """Where a test writes its 100 MB log: removed after, not left in pytest's kept folders."""
    path = tmp_path / "audit.jsonl"
    yield path
    path.unlink(missing_ok=True)


def ts(ago: timedelta) -> str:
    # Now, not at import: the suite takes minutes, and some records sit a minute from 24 h.
    return (datetime.now(UTC) - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def line(ago: timedelta, target: str, action: str, **fields: object) -> str:
    """One record; all of one length whatever the target and action (up to 40 characters)."""
    record = {"ts": ts(ago), "host": "h", "target": target, "action": action,
              "reason": "r" * (40 - len(target) - len(action)), "pid": 7, "dry_run": False,
              **fields}  # fmt: skip
    return json.dumps(record) + "\n"


CYCLE = ("ok", "started", "ok", "unhealthy", "restarted_unhealthy", "restarted")


def write_many(path: Path, ago: timedelta, lines: int) -> list[str]:
    """``lines`` records of both targets (all of one length), fast: one block, repeated."""
    block = [line(ago, target, action) for action in CYCLE for target in ("agent", "worker")]
    assert len({len(b) for b in block}) == 1
    with path.open("a") as f:
        for _ in range(lines // len(block) // 1000):
            f.write("".join(block) * 1000)
    return block


def gather_in_a_process(config_path: Path) -> dict[str, Any]:
    """gather() in a fresh interpreter: its peak RSS is this call's, not the test session's."""
    script = (
        "import json, resource, sys, time; from pathlib import Path\n"
        "from guardian.config import load; from guardian.status import gather\n"
        "config = load(Path(sys.argv[1]))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "began = time.monotonic()\n"
        "report = gather(config, [])\n"
        "seconds = time.monotonic() - began\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(json.dumps({'report': report.to_dict(), 'lines': report.lines(),\n"
        "                  'seconds': seconds, 'grown_mib': grown / 1024}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(config_path)],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_huge_log_is_read_from_its_end_only(config_path: Path, big_log: Path) -> None:
    """600,000 lines (about 100 MB) older than a day, then today's: status reads today's."""
    write_many(big_log, timedelta(days=2), 600_000)
    with big_log.open("a") as f:
        f.write(line(timedelta(hours=3), "worker", "started"))
        f.write(line(timedelta(hours=2), "agent", "restarted"))
        f.write(line(timedelta(hours=1), "agent", "ok"))
    assert big_log.stat().st_size > 90 << 20
    result = gather_in_a_process(config_path)
    report = result["report"]
    agent, worker = report["targets"]
    assert (agent["last"]["action"], agent["starts_24h"]) == ("ok", 1)
    assert (worker["last"]["action"], worker["starts_24h"]) == ("started", 1)
    assert (report["unreadable_lines"], report["history_truncated"]) == (0, False)
    # Generous for two noisy cores: this takes some 30 ms; reading the whole file, 4 s.
    assert result["seconds"] < 2
    assert result["grown_mib"] < 64


def test_a_huge_log_of_today_is_read_up_to_the_budget(config_path: Path, big_log: Path) -> None:
    """Every line within the day: status reads its budget, no more, and says so."""
    block = write_many(big_log, timedelta(hours=1), 600_000)
    result = gather_in_a_process(config_path)
    report = result["report"]
    assert (report["unreadable_lines"], report["history_truncated"]) == (0, True)
    assert "audit log: only the last 32 MiB read" in result["lines"]
    assert result["grown_mib"] < 64  # not the 32 MiB budget as parsed records (some 150 MiB)
    # Exactly the lines wholly inside the budget count (the one cut by it does not).
    whole = (HISTORY_BUDGET - 1) // len(block[0])
    size = big_log.stat().st_size // len(block[0])
    read = [block[i % len(block)] for i in range(size - whole, size)]
    for row in report["targets"]:
        mine = [json.loads(r) for r in read if f'"target": "{row["name"]}"' in r]
        starts = sum(r["action"] in ("started", "restarted_unhealthy", "restarted") for r in mine)
        assert row["starts_24h"] == starts > 10_000
        assert row["last"]["action"] == "restarted"


def test_torn_and_foreign_lines_are_counted_exactly(config: Config) -> None:
    config.settings.audit_log.write_text(
        line(timedelta(hours=5), "agent", "started")
        + '{"ts": "2026-11-27T04:16:24.993Z", "host": "web1", "tar\n'  # torn by a full disk
        + "Nov 27 04:16:25 web1 CRON[5586]: (root) CMD (guardian check)\n"  # foreign
        + line(timedelta(hours=4), "worker", "ok")
        + '{"ts": "yesterday", "target": "agent", "action": "ok"}\n'  # a time that is none
        + '{"ts": "2026-11-27T04:16:24", "target": "agent", "action": "ok"}\n'  # no zone
        + "\n"  # an empty line is no line at all
        + line(timedelta(hours=3), "agent", "ok")[:40]  # torn, then a record on its own line
        + "\n"
        + line(timedelta(hours=2), "agent", "stopped")
    )
    with config.settings.audit_log.open("ab") as f:
        f.write(b"\xff\xfe\x00 not UTF-8\n")
    report = gather(config, [])
    assert (report.unreadable_lines, report.history_truncated) == (6, False)
    agent, worker = report.targets
    assert agent.last is not None
    assert worker.last is not None
    assert (agent.last.action, agent.starts_24h) == ("stopped", 1)
    assert (worker.last.action, worker.starts_24h) == ("ok", 0)
    assert "audit log: 6 lines could not be read" in report.lines()
    assert not any("MiB read" in row for row in report.lines())
    data = report.to_dict()
    assert (data["unreadable_lines"], data["history_truncated"]) == (6, False)


def test_one_unreadable_line_is_said_in_the_singular(config: Config) -> None:
    config.settings.audit_log.write_text("not json\n" + line(timedelta(hours=1), "agent", "ok"))
    assert "audit log: 1 line could not be read" in gather(config, []).lines()


def test_starts_in_24_hours_and_the_last_record(config: Config) -> None:
    config.settings.audit_log.write_text(
        "garbage older than what status needs: never read, so never counted\n"
        + line(timedelta(days=3), "worker", "started")
        + line(timedelta(hours=30), "agent", "started")
        + line(timedelta(hours=25), "agent", "restarted")
        + line(timedelta(hours=24, minutes=1), "agent", "restarted_unhealthy")
        + line(timedelta(hours=23, minutes=59), "agent", "started")
        + line(timedelta(hours=12), "agent", "restarted_unhealthy")
        + line(timedelta(hours=6), "agent", "started", dry_run=True)  # changes nothing
        + line(timedelta(hours=5), "other", "started")  # not a target of this config
        + line(timedelta(hours=4), "agent", "ok")
        + line(timedelta(hours=3), "agent", "restarted")
        + line(timedelta(hours=2), "agent", "unhealthy")
        + line(timedelta(hours=1), "agent", "would_start", dry_run=True)
    )
    report = gather(config, [])
    agent, worker = report.targets
    assert agent.last is not None
    assert worker.last is not None
    assert (agent.last.action, agent.starts_24h) == ("unhealthy", 3)
    assert (worker.last.action, worker.starts_24h) == ("started", 0)  # its last is 3 days old
    assert (report.unreadable_lines, report.history_truncated) == (0, False)
    assert "agent: NOT RUNNING: no pidfile at" in report.lines()[0]
    assert "; last unhealthy at " in report.lines()[0]
    assert report.lines()[0].endswith("; 3 starts in 24h")


def test_an_audit_log_that_is_a_fifo_is_a_problem_not_a_hang(config_path: Path) -> None:
    config = load(config_path)
    os.mkfifo(config.settings.audit_log)
    done = subprocess.run([sys.executable, "-m", "guardian", "status", "--json", "--config",
                           str(config_path), "--cron-file", str(config_path.parent / "none")],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr  # not running
    report = json.loads(done.stdout)
    assert report["audit_problem"] == (
        f"cannot read {config.settings.audit_log}: is a FIFO, not a regular file"
    )
    assert (report["unreadable_lines"], report["history_truncated"]) == (0, False)

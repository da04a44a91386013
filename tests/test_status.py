"""`guardian status`: on real audit logs (huge ones, damaged ones, hostile records, the
24-hour window), and on real targets, a real supervisord, real state files, a real cron
daemon and an operator who is not root."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian import files, holds
from guardian.config import Config, load
from guardian.cron import Entry
from guardian.proc import stat as proc_stat
from guardian.status import (
    HISTORY_BUDGET,
    PAST_IN_A_ROW,
    DaemonNames,
    Watcher,
    WatcherError,
    find_cron_daemon,
    gather,
    interval_of,
    read_watcher,
)

from conftest import (
    AGENT,
    Guardian,
    Reaper,
    Result,
    SharedInstall,
    effective_uid,
    wait_for,
    write_config,
    write_supervisord_conf,
)


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
        # Read, and counted: a few records older than a day do not end the reading.
        "garbage older than what status needs\n"
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
    assert (report.unreadable_lines, report.history_truncated) == (1, False)
    lines = report.lines()
    assert lines[0].startswith("agent: NOT RUNNING: no pidfile at")
    assert re.fullmatch(r"  last unhealthy at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; 3 starts in 24h",
                        lines[1])  # fmt: skip


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


def test_hostile_records_are_counted_never_believed(config: Config) -> None:
    """Records with guardian's three string fields but other fields of the wrong type."""
    good = json.loads(line(timedelta(hours=1), "agent", "start_failed"))
    hostile = [
        {**good, "reason": 5},
        {**good, "dry_run": "no"},
        {**good, "error": ["not", "a", "string"]},
        {**good, "output_tail": "one string"},
        {**good, "output_tail": [1, 2]},
        {**good, "probes": {"http": 1}},
        {**good, "next_try": "soon"},
        {**good, "next_try": 7},
        {**good, "action": "exploded"},  # no action guardian has
        {k: v for k, v in good.items() if k != "reason"},
        {k: v for k, v in good.items() if k != "dry_run"},
    ]
    config.settings.audit_log.write_text(
        line(timedelta(hours=2), "agent", "started")
        + "".join(json.dumps(r) + "\n" for r in hostile)
    )
    report = gather(config, [])
    assert report.unreadable_lines == len(hostile)
    agent, _ = report.targets
    assert agent.last is not None
    assert (agent.last.action, agent.starts_24h, agent.failed_starts_24h) == ("started", 1, 0)
    assert agent.last_failure is None


def test_the_last_failure_is_current_until_the_target_ran_then_past_for_a_day(
    config: Config,
) -> None:
    tail = [f"line {n}" for n in range(8)]
    failed = line(timedelta(hours=3), "agent", "start_failed", error="exited with status 3",
                  output_tail=tail)  # fmt: skip
    reason = json.loads(failed)["reason"]
    log = config.settings.audit_log
    log.write_text(failed)
    agent = gather(config, []).targets[0]
    assert agent.last_failure is not None
    assert agent.last_failure.current  # not running, and has not run since
    lines = agent.lines()
    at = next(i for i, text in enumerate(lines) if text.startswith("  last failure at "))
    assert lines[at].endswith(f"start failed: exited with status 3 ({reason})")
    assert lines[at + 1 : at + 6] == [f"  | line {n}" for n in range(3, 8)]  # the last five
    assert "  | line 2" not in lines

    log.write_text(failed + line(timedelta(hours=2), "agent", "started"))
    agent = gather(config, []).targets[0]
    assert agent.last_failure is not None
    assert not agent.last_failure.current  # it ran since: a past failure, one line
    assert [t for t in agent.lines() if t.startswith("  ") and "failure" in t] == [
        f"  earlier failure at {agent.last_failure.ts} (it ran since): start failed: "
        f"exited with status 3 ({reason})"
    ]
    assert not any(t.startswith("  |") for t in agent.lines())

    log.write_text(line(timedelta(hours=25), "agent", "start_failed", error="long ago")
                   + line(timedelta(hours=24, minutes=30), "agent", "started"))  # fmt: skip
    assert gather(config, []).targets[0].last_failure is None  # past, and more than a day old


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [("* * * * *", 60), ("*/1 * * * *", 60), ("*/5 * * * *", 300), ("*/7 * * * *", 420),
     ("@hourly", 3600), ("0 * * * *", 3600), ("0 */2 * * *", 7200), ("15 */12 * * *", 43200),
     ("@daily", 86400), ("0 0 * * *", 86400), ("@midnight", 86400),
     ("@reboot", None), ("5 4 * * 1", None), ("* 3 * * *", None), ("*/0 * * * *", None),
     ("0 */25 * * *", None), ("0,30 * * * *", None), ("", None)],
)  # fmt: skip
def test_the_interval_of_a_schedule(schedule: str, seconds: int | None) -> None:
    assert interval_of(schedule) == seconds


# --- against a real target, a real supervisord, the real cron daemon ---

BIN = Path(sys.executable).parent
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
# A target that exits at once, given up on after its second start.
GIVE_UP = {"burst": 2, "window": "10m", "backoff": "0s", "min_uptime": "1m"}
NOWHERE = DaemonNames(frozenset({"/nonexistent/sbin/crond"}), frozenset())


def status(g: Guardian, *place: str, wrap: tuple[str, ...] = ()) -> tuple[Result, dict[str, Any]]:
    """`guardian status` for a person, and its JSON (no crontab looked at unless ``place``)."""
    where = list(place) or ["--cron-file", str(g.tmp / "none")]
    shown = g.run("status", *where, wrap=wrap)
    data = g.run("status", "--json", *where, wrap=wrap)
    assert data.rc == shown.rc, data.stderr
    return shown, json.loads(data.stdout)


def test_a_failed_start_shows_its_error_and_output_and_counts(g: Guardian) -> None:
    # A real supervisord whose config has an error: it exits at once, saying why on stderr.
    conf = write_supervisord_conf(g.tmp / "supervisord.conf", g.tmp)
    with conf.open("a") as f:
        f.write("[program:broken]\ncommand=/bin/true\nautostart=maybe\n")
    g.configure(command=[str(BIN / "supervisord"), "-c", str(conf)], daemonizes=True,
                pidfile=str(g.tmp / "supervisord.pid"), start_grace="1s",
                start_timeout="20s")  # fmt: skip
    for _ in range(2):
        assert g.check().rc == 1
    assert g.actions() == ["start_failed", "start_failed"]
    record = g.audit()[-1]
    assert any("not a valid boolean value: 'maybe'" in text for text in record["output_tail"])

    shown, data = status(g)
    assert shown.rc == 1, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("agent: NOT RUNNING: ")
    at = next(i for i, text in enumerate(lines) if text.startswith("  last failure at "))
    assert re.fullmatch(rf"  last failure at {ISO}: start failed: {re.escape(record['error'])} "
                        rf"\({re.escape(record['reason'])}\)", lines[at])  # fmt: skip
    tail = record["output_tail"][-5:]
    assert lines[at + 1 : at + 1 + len(tail)] == [f"  | {text}" for text in tail]
    assert re.search(rf"^  last start_failed at {ISO}; 0 starts, 2 failed starts in 24h$",
                     shown.stdout, re.MULTILINE)  # fmt: skip
    (agent,) = data["targets"]
    failure = agent["last_failure"]
    assert (failure["current"], failure["error"]) == (True, record["error"])
    assert failure["output_tail"] == record["output_tail"]
    assert (agent["starts_24h"], agent["failed_starts_24h"], agent["ok"]) == (0, 2, False)
    assert data["problems"] == ["agent: not running"]


def give_up(g: Guardian) -> dict[str, Any]:
    """Drive ``g``'s target (it exits at once) into gave_up, and one backoff run after it."""
    for _ in range(4):
        assert g.check().rc == 1
    assert g.actions() == ["start_failed", "start_failed", "gave_up", "backoff"]
    record: dict[str, Any] = g.audit()[2]
    return record


def gave_up_line(record: dict[str, Any]) -> str:
    return (f"  gave up at {record['ts'][:19]}Z: started 2 times in 600s (burst 2); "
            f"next try at {record['next_try']}")  # fmt: skip


def test_a_give_up_stays_visible_through_the_backoff_runs_after_it(g: Guardian) -> None:
    g.configure("--exit", "3", restart=GIVE_UP)
    assert [g.check().rc for _ in range(2)] == [1, 1]  # two failed starts: the burst is spent
    shown, data = status(g)
    assert "  the next run gives up: started 2 times in 600s (burst 2)" in shown.stdout
    assert data["targets"][0]["gives_up_next"] == "started 2 times in 600s (burst 2)"
    for _ in range(2):
        assert g.check().rc == 1
    assert g.actions() == ["start_failed", "start_failed", "gave_up", "backoff"]
    record = g.audit()[2]
    shown, data = status(g)
    assert shown.rc == 1
    assert gave_up_line(record) in shown.stdout.splitlines()
    (agent,) = data["targets"]
    assert agent["gave_up"] == {
        "at": record["ts"][:19] + "Z",
        "next_try": record["next_try"],
        "reason": "started 2 times in 600s (burst 2)",
        "source": "state file",
    }
    assert (agent["last"]["action"], agent["backoff"]) == ("backoff", None)
    assert (agent["starts_24h"], agent["failed_starts_24h"]) == (0, 2)

    state_file = g.state / "state" / "agent.json"
    state_file.chmod(0o666)  # not believed: a check sets it aside, and starts afresh
    shown, data = status(g)
    assert "gave up" not in shown.stdout
    assert "state file not believed for agent (is owned by uid 0 with mode 666, so others " \
           "could have written it): the next check starts afresh without it (no backoff or " \
           "give-up holds)" in shown.stdout.splitlines()  # fmt: skip
    assert (data["targets"][0]["gave_up"], data["targets"][0]["state_file"]) == (
        None, "not believed")  # fmt: skip
    assert "agent: would start: " in g.check("--dry-run").stdout  # as status says
    state_file.chmod(0o600)

    assert g.run("reset", "agent").rc == 0  # forgotten: the next check starts it
    shown, data = status(g)
    assert "gave up" not in shown.stdout
    assert data["targets"][0]["gave_up"] is None


def test_a_give_up_is_read_from_the_log_by_one_who_cannot_read_the_state_file(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, reaper: Reaper
) -> None:
    # A non-root operator on root's guardian: given the audit log, not the state files.
    g = Guardian(shared_dir, reaper)
    g.configure("--exit", "3", restart=GIVE_UP)
    record = give_up(g)
    (g.state / "audit.jsonl").chmod(0o644)
    assert (g.state / "state" / "agent.json").stat().st_mode & 0o777 == 0o600

    def status_as_user(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", system_user, "--", shared_install.guardian, "status", *args,
             "--config", str(g.config_path), "--cron-file", str(shared_dir / "none")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    shown, as_json = status_as_user(), status_as_user("--json")
    assert shown.returncode == as_json.returncode == 1, shown.stderr + as_json.stderr
    assert "Traceback" not in shown.stderr + as_json.stderr
    lines = shown.stdout.splitlines()
    assert gave_up_line(record) in lines
    assert [text for text in lines if "state file" in text] == [
        "state file unreadable for agent (cannot be read (Permission denied)): health, "
        "backoff and give-up taken from the audit log"
    ]
    (agent,) = json.loads(as_json.stdout)["targets"]
    assert agent["gave_up"]["source"] == "audit log"
    assert agent["gave_up"]["next_try"] == record["next_try"]
    assert agent["state_problem"] == "cannot be read (Permission denied)"
    assert agent["state_file"] == "unreadable"  # to this user only: root's check reads it

    assert g.run("reset", "agent").rc == 0  # as root; the log says so
    shown, as_json = status_as_user(), status_as_user("--json")
    assert "gave up" not in shown.stdout
    assert "  backoff until" not in shown.stdout  # nor the backoff records before the reset
    (agent,) = json.loads(as_json.stdout)["targets"]
    assert (agent["gave_up"], agent["backoff"]) == (None, None)


def test_a_probe_failing_below_its_threshold_is_unhealthy(g: Guardian) -> None:
    g.configure(health={"command": ["/bin/false"], "failures": 3})
    assert g.check().rc == 0  # started
    assert g.check().rc == 1  # probed: 1 failing run of 3
    assert g.actions() == ["started", "unhealthy"]
    (probes,) = g.audit()[-1]["probes"]
    assert probes.startswith("command: FAILED: /bin/false exited 1 (")
    shown, data = status(g)
    assert shown.rc == 1
    lines = shown.stdout.splitlines()
    assert lines[0] == f"agent: running, UNHEALTHY (probes failing 1 of 3): {probes}"
    assert re.fullmatch(rf"  pid {g.pid()}, up \d+s", lines[1])
    (agent,) = data["targets"]
    assert (agent["running"], agent["health"], agent["ok"]) == (True, "failing", False)
    assert (agent["probe_failures"], agent["probe_threshold"]) == (1, 3)
    assert data["problems"] == ["agent: unhealthy (probes failing 1 of 3)"]

    g.configure(health={"command": ["/bin/true"], "failures": 3})
    assert g.check().rc == 0  # passes now: the count starts again
    shown, data = status(g)
    assert shown.rc == 0, shown.stdout
    assert re.fullmatch(rf"agent: running, healthy, pid {g.pid()}, up \d+s",
                        shown.stdout.splitlines()[0])  # fmt: skip
    assert (data["targets"][0]["health"], data["targets"][0]["probe_failures"]) == ("healthy", 0)


def test_guardian_overdue_is_a_warning_and_exit_1(
    g: Guardian, cron_daemon: int, cron_d: tuple[str, ...]
) -> None:
    # A cron file in /etc/cron.d, as guardian sees it: in a mount namespace of the test's
    # own, where /etc/cron.d is a folder of the test's (the host's cron never sees it).
    cron_file = Path("/etc/cron.d/guardian")
    installed = g.run("install", "--interval", "1m", "--cron-file", str(cron_file), wrap=cron_d)
    assert installed.rc == 0, installed.stderr
    place = ("--cron-file", str(cron_file))
    _, data = status(g, *place, wrap=cron_d)
    assert data["problems"] == [
        "agent: not running",
        "no run of guardian is in the audit log; cron runs it every 1m",
    ]

    assert g.check().rc == 0
    shown, data = status(g, *place, wrap=cron_d)
    assert shown.rc == 0, shown.stdout
    assert re.search(rf"^guardian: last ran at {ISO} \(\d+s ago\)$", shown.stdout, re.MULTILINE)
    assert re.search(rf"^cron: installed in {re.escape(str(cron_file))}: \* \* \* \* \*; "
                     rf"next run {ISO}$", shown.stdout, re.MULTILINE)  # fmt: skip
    assert (data["overdue"], data["interval_s"], data["cron_daemon"]["running"]) == (
        False, 60, True)  # fmt: skip

    # Seventeen minutes without a run: cron (or guardian) has stopped working.
    when = datetime.now(UTC) - timedelta(minutes=17)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    log = g.state / "audit.jsonl"
    log.write_text("".join(json.dumps({**r, "ts": stamp}) + "\n" for r in g.audit()))
    shown, data = status(g, *place, wrap=cron_d)
    assert shown.rc == 1
    warning = (rf"WARNING: guardian last ran 17m( \d+s)? ago, at {stamp[:19]}Z; "
               "cron runs it every 1m")  # fmt: skip
    assert re.search(rf"^{warning}$", shown.stdout, re.MULTILINE), shown.stdout
    assert (data["overdue"], data["last_run"]) == (True, stamp[:19] + "Z")
    assert data["last_run_age_s"] >= 17 * 60
    (problem,) = data["problems"]
    assert re.fullmatch(warning.removeprefix("WARNING: "), problem)


def test_the_running_cron_daemon_is_found(cron_daemon: int) -> None:
    found = find_cron_daemon()
    assert found.running is True
    assert cron_daemon in found.pids


def test_a_process_that_runs_no_cron_program_is_no_cron_daemon(cron_daemon: int) -> None:
    found = find_cron_daemon(NOWHERE)  # cron runs, but is not this program
    assert (found.running, found.pids) == (False, ())
    assert found.detail == "no process runs /nonexistent/sbin/crond or busybox crond"


def test_the_program_decides_not_the_name(
    system_user: str, shared_dir: Path, reaper: Reaper
) -> None:
    """A cron daemon is root's, running a root-owned program that is cron (or busybox
    where a distribution puts it, called as crond). ``cp /bin/sleep ~/busybox; exec -a
    crond ~/busybox`` is none, nor is root's busybox run by a user, nor a user's file
    run by root, nor a program that merely calls itself cron."""
    uid = pwd.getpwnam(system_user).pw_uid
    theirs = shared_dir / "user" / "busybox"  # a user's copy of a program, named busybox
    ours = shared_dir / "root" / "busybox"  # root's: this test's "distribution" put it here
    for copy, owner in ((theirs, uid), (ours, 0)):
        copy.parent.mkdir()
        shutil.copy("/bin/sleep", copy)
        os.chown(copy, owner, -1)

    def run(program: Path, user: int, argv0: str = "crond") -> int:
        proc = subprocess.Popen([argv0, "300"], executable=str(program), user=user,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        reaper.track(proc.pid)
        reaper.children.append(proc)
        return proc.pid

    fake = run(theirs, uid)  # the review's: a user's file, run by the user as crond
    user_runs_busybox = run(ours, uid)
    root_runs_users_file = run(theirs, 0)
    impostor = run(Path("/bin/sleep"), 0, "cron")  # calls itself cron
    real = run(ours, 0)
    not_cron = {fake, user_runs_busybox, root_runs_users_file, impostor}
    busyboxes = frozenset({str(ours.resolve()), str(theirs.resolve())})
    known = DaemonNames(frozenset({"/nonexistent/sbin/cron"}), frozenset({"cron", "crond"}),
                        busybox=busyboxes)  # fmt: skip
    found = find_cron_daemon(known)
    assert real in found.pids
    assert not not_cron & set(found.pids)
    # The real list: busybox counts only where distributions put it.
    assert not (not_cron | {real}) & set(find_cron_daemon().pids)


def test_the_cron_daemon_of_root_is_found_by_name_by_one_who_cannot_see_its_program(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, cron_daemon: int
) -> None:
    # Not root: the kernel will not show root's /proc/PID/exe; cron's name and owner do.
    script = (
        "import json, sys; from pathlib import Path\n"
        "from guardian.status import find_cron_daemon\n"
        "found = [find_cron_daemon(), find_cron_daemon(proc=Path(sys.argv[1]))]\n"
        "print(json.dumps([[d.running, d.pids, d.detail] for d in found]))\n"
    )
    done = subprocess.run(
        ["runuser", "-u", system_user, "--", str(shared_install.prefix / "bin" / "python"),
         "-c", script, str(shared_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (running, pids, _), hidden = json.loads(done.stdout)
    assert running is True
    assert cron_daemon in pids
    # A /proc without pid 1 in it, to one who is not root: hidepid, so it cannot tell.
    assert hidden == [None, [], f"{shared_dir} hides other users' processes from this user"]


def test_a_cron_line_without_a_cron_daemon_is_a_loud_warning(g: Guardian, cron_daemon: int) -> None:
    cron_file = g.tmp / "guardian"
    installed = g.run("install", "--interval", "5m", "--cron-file", str(cron_file))
    assert installed.rc == 0, installed.stderr
    assert g.check().rc == 0
    config = load(g.config_path, acting=False)
    entries = installed_lines(config, cron_file)

    report = gather(config, entries, daemons=NOWHERE)
    text = "\n".join(report.lines())
    assert re.search(r"^WARNING: no cron daemon is running \(no process runs "
                     r"/nonexistent/sbin/crond or busybox crond\): the cron line never fires, "
                     r"so nothing runs guardian$", text, re.MULTILINE)  # fmt: skip
    assert not re.search(r"next run \d", text)
    assert re.search(rf"^cron: installed in .*: \*/5 \* \* \* \*; next run \(if a cron daemon "
                     rf"ran\) {ISO}$", text, re.MULTILINE)  # fmt: skip
    assert report.problems == ["no cron daemon runs, so cron never runs guardian"]
    assert json.loads(json.dumps(report.to_dict()))["cron_daemon"] == {
        "running": False,
        "pids": [],
        "detail": "no process runs /nonexistent/sbin/crond or busybox crond",
    }

    report = gather(config, entries)  # the real one runs
    assert report.ok, report.problems
    assert re.search(rf"; next run {ISO}$", "\n".join(report.lines()), re.MULTILINE)

    assert gather(config, []).cron_daemon is None  # no cron line: no daemon to look for


def installed_lines(config: Config, cron_file: Path) -> list[Entry]:
    """guardian's lines in ``cron_file``, as if it were in /etc/cron.d (where cron reads)."""
    from guardian.cron import Place, installed

    entries = installed(Place(user="root", cron_file=cron_file), config.path)
    return [dataclasses.replace(e, not_run=None) for e in entries]


def test_a_young_death_backoff_from_the_state_file_and_from_the_log(g: Guardian) -> None:
    g.configure("--die-after", "0.5", start_grace="0.1s",
                restart={"backoff": "1h", "max_backoff": "1h", "min_uptime": "1m"})  # fmt: skip
    for _ in range(2):
        assert g.check().rc == 0
        wait_for(lambda: not g.matches(), what="the agent to die")
    assert g.check().rc == 1
    record = g.audit()[-1]
    assert record["action"] == "backoff"
    shown, data = status(g)
    assert shown.rc == 1
    line = f"  backoff until {record['next_try']}: died young 2 times in a row; waiting 3600s"
    assert line in shown.stdout.splitlines()
    (agent,) = data["targets"]
    assert agent["backoff"]["until"] == record["next_try"]
    assert (agent["gave_up"], agent["starts_24h"], agent["failed_starts_24h"]) == (None, 2, 0)

    # A state file that is not believed (others could have written it): the next check
    # sets it aside and starts afresh, whatever backoff the log's last record gave.
    (g.state / "state" / "agent.json").chmod(0o666)
    shown, data = status(g)
    assert "backoff until" not in shown.stdout
    (agent,) = data["targets"]
    assert (agent["backoff"], agent["state_file"]) == (None, "not believed")
    assert agent["state_problem"] == (
        "is owned by uid 0 with mode 666, so others could have written it"
    )
    assert "agent: would start: " in g.check("--dry-run").stdout


def test_probe_failures_from_the_log_and_health_that_nothing_tells(g: Guardian) -> None:
    g.configure(health={"command": ["/bin/false"], "failures": 3})
    assert g.check().rc == 0
    assert g.check().rc == 1  # 1 of 3
    state_file = g.state / "state" / "agent.json"
    state_file.chmod(0o666)  # not believed: the newest record on its probes tells
    config = load(g.config_path)
    (agent,) = gather(config, []).targets
    assert (agent.health, agent.probe_failures, agent.probe_threshold) == ("failing", 1, 3)
    assert agent.probes == tuple(g.audit()[-1]["probes"])
    assert agent.state_problem is not None

    log = g.state / "audit.jsonl"
    log.write_text(log.read_text().splitlines(keepends=True)[0])  # only "started"
    (agent,) = gather(config, []).targets
    assert (agent.health, agent.probe_failures, agent.ok) == ("healthy", 0, True)

    state_file.unlink()
    log.unlink()  # no state file yet, no record: nothing tells
    (agent,) = gather(config, []).targets
    assert (agent.health, agent.probe_failures, agent.ok) == ("unknown", None, True)
    assert re.fullmatch(rf"agent: running, pid {g.pid()}, up \d+s; health unknown \(no record "
                        r"of a probe yet\)", agent.lines()[0])  # fmt: skip
    assert agent.lines()[1] == "  no audit record yet"


def fake_process(proc: Path, pid: int, exe: Path | None, argv: list[str], uid: int = 0) -> None:
    """An entry of a /proc of the test's own: its real user, its exe link and its cmdline."""
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "status").write_text(f"Name:\tx\nState:\tS\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    if exe is not None:
        (folder / "exe").symlink_to(exe)
    if argv:
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_what_counts_as_a_cron_daemon_in_a_proc_of_its_own(tmp_path: Path) -> None:
    programs = tmp_path / "bin"
    programs.mkdir()
    for name in ("cron (deleted)", "crond", "busybox", "sleep", "anacron", "users-busybox"):
        (programs / name).write_bytes(b"")
    os.chown(programs / "users-busybox", 12345, -1)  # in the known places, but not root's
    known = DaemonNames(
        exes=frozenset({str(programs / "cron"), str(programs / "crond")}),
        names=frozenset({"cron", "crond", "fcron"}),
        busybox=frozenset({str(programs / "busybox"), str(programs / "users-busybox")}),
    )
    proc = tmp_path / "proc"
    fake_process(proc, 10, programs / "cron (deleted)", ["/usr/sbin/cron", "-f"])  # upgraded
    fake_process(proc, 11, programs / "busybox", ["crond", "-f"])  # busybox as crond
    fake_process(proc, 12, programs / "busybox", ["/usr/sbin/crond"])
    fake_process(proc, 13, programs / "busybox", ["sh"])  # busybox as something else
    fake_process(proc, 14, programs / "sleep", ["cron"])  # calls itself cron
    fake_process(proc, 15, programs / "anacron", ["anacron", "-d"])
    fake_process(proc, 16, None, [])  # a kernel thread: no program
    fake_process(proc, 17, programs / "crond", [])  # cronie, its argv gone (exiting)
    fake_process(proc, 18, programs / "crond", ["crond"], uid=1000)  # run by a user
    fake_process(proc, 19, programs / "users-busybox", ["crond"])  # a file not root's
    (proc / "self").symlink_to("10")
    found = find_cron_daemon(known, proc=proc)
    assert (found.running, sorted(found.pids)) == (True, [10, 11, 12, 17])
    assert found.detail == "pid " + ", ".join(map(str, found.pids))

    empty = tmp_path / "empty"
    empty.mkdir()
    nobody = find_cron_daemon(proc=empty)
    assert (nobody.running, nobody.pids) == (False, ())
    unreadable = find_cron_daemon(proc=tmp_path / "missing")
    assert (unreadable.running, unreadable.pids) == (None, ())
    assert unreadable.detail == f"cannot read {tmp_path / 'missing'}: No such file or directory"


def test_a_cron_daemon_that_cannot_be_told_is_said_not_warned(
    config: Config, tmp_path: Path
) -> None:
    text = "* * * * * root /bin/true # guardian: " + str(config.path) + "\n"
    cron_file = tmp_path / "guardian"
    cron_file.write_text(text)
    report = gather(config, installed_lines(config, cron_file))
    report = dataclasses.replace(report, cron_daemon=find_cron_daemon(proc=tmp_path / "none"))
    lines = report.lines()
    assert any(re.fullmatch(rf"cron: installed in .*; next run \(if a cron daemon runs\) {ISO}",
                            line) for line in lines)  # fmt: skip
    assert f"cron: cannot tell whether a cron daemon runs (cannot read {tmp_path / 'none'}: " \
           "No such file or directory)" in lines  # fmt: skip
    assert not any(line.startswith("WARNING: no cron daemon") for line in lines)
    assert report.problems[-1] == "no run of guardian is in the audit log; cron runs it every 1m"

    os.mkfifo(config.settings.audit_log)  # the log unreadable: when it last ran is unknown
    report = gather(config, installed_lines(config, cron_file))
    assert report.audit_problem is not None
    assert report.overdue is None
    assert not any(line.startswith(("WARNING: guardian", "guardian: last ran"))
                   for line in report.lines())  # fmt: skip


def test_a_user_who_is_not_root_sees_roots_target_running(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, reaper: Reaper
) -> None:
    """Looking, not acting: root's target (no `user`) is the config owner's, and its
    program, which only root may see, is said to be unverified, not "not running"."""
    g = Guardian(shared_dir, reaper)
    g.configure()
    assert g.check().rc == 0
    pid = g.pid()
    (g.state / "audit.jsonl").chmod(0o644)
    done = subprocess.run(
        ["runuser", "-u", system_user, "--", shared_install.guardian, "status", "--json",
         "--config", str(g.config_path), "--cron-file", str(shared_dir / "none")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (agent,) = json.loads(done.stdout)["targets"]
    assert (agent["running"], agent["pid"]) == (True, pid)
    assert agent["evidence"].endswith("(its program not verified: only root may see it)")
    # As root, the same target is verified.
    (agent,) = json.loads(g.run("status", "--json", "--cron-file", str(shared_dir / "none"))
                          .stdout)["targets"]  # fmt: skip
    assert (agent["running"], agent["pid"]) == (True, pid)
    assert "not verified" not in agent["evidence"]


# --- times the log should not have: out of range, in the future, long ago ---


@pytest.mark.parametrize(
    ("field", "value"),
    [("ts", "0001-01-01T00:00:00+01:00"), ("ts", "9999-12-31T23:59:59-01:00"),
     ("next_try", "0001-01-01T00:00:00+01:00"), ("next_try", "9999-12-31T23:59:59-01:00")],
)  # fmt: skip
def test_a_time_out_of_range_is_an_unreadable_line_not_a_crash(
    config: Config, config_path: Path, field: str, value: str
) -> None:
    # (No time in UTC: year 0, year 10000.) A corrupt state file: the log is what tells.
    (config.settings.state_dir / "state").mkdir(parents=True)
    (config.settings.state_dir / "state" / "agent.json").write_text("not json")
    gave_up = json.loads(line(timedelta(minutes=1), "agent", "gave_up", next_try=ts(-HOUR)))
    config.settings.audit_log.write_text(
        line(timedelta(hours=2), "agent", "started") + json.dumps({**gave_up, field: value}) + "\n"
    )
    report = gather(config, [])
    assert report.unreadable_lines == 1
    agent = report.targets[0]
    assert agent.last is not None
    assert (agent.last.action, agent.gave_up) == ("started", None)
    done = subprocess.run([sys.executable, "-m", "guardian", "status", "--config", str(config_path),
                           "--cron-file", str(config_path.parent / "none")],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr  # not running: no internal error
    assert "audit log: 1 line could not be read" in done.stdout.splitlines()


HOUR = timedelta(hours=1)


def test_a_record_dated_in_the_future_is_not_believed(config: Config, tmp_path: Path) -> None:
    cron_file = tmp_path / "guardian"
    cron_file.write_text(f"* * * * * root /bin/true # guardian: {config.path}\n")
    then = line(timedelta(minutes=17), "agent", "ok")
    config.settings.audit_log.write_text(
        then
        + line(timedelta(minutes=17), "worker", "ok")
        + line(-timedelta(days=1), "agent", "ok")  # a day ahead: not "0s ago"
    )
    report = gather(config, installed_lines(config, cron_file))
    assert report.future_records == 1
    assert report.last_run is not None
    assert datetime.now(UTC) - report.last_run >= timedelta(minutes=17)
    assert report.overdue is not None
    assert report.overdue.startswith("guardian last ran 17m")
    agent = report.targets[0]
    assert agent.last is not None
    assert agent.last.ts == json.loads(then)["ts"][:19] + "Z"  # not the one a day ahead
    lines = report.lines()
    assert "audit log: 1 record is dated in the future (a clock set back since?): not " \
           "believed" in lines  # fmt: skip
    assert any(row.startswith("WARNING: guardian last ran 17m") for row in lines)
    assert report.to_dict()["future_records"] == 1


def test_a_record_stamped_long_ago_does_not_end_the_reading(config: Config) -> None:
    """The newest lines stamped in 2000 (a clock not yet set at boot): the day's starts
    before them still count, and guardian last ran when its latest record says."""
    old = {"host": "h", "reason": "r", "pid": 7, "dry_run": False}
    config.settings.audit_log.write_text(
        line(timedelta(hours=5), "agent", "started")
        + line(timedelta(hours=4), "agent", "restarted")
        + line(timedelta(hours=3), "worker", "started")
        + line(HOUR, "agent", "ok")
        + json.dumps({"ts": "2000-01-01T00:00:05.000Z", "target": "agent", "action": "ok", **old})
        + "\n"
        + json.dumps({"ts": "2000-01-01T00:00:06.000Z", "target": "worker", "action": "ok", **old})
        + "\n"
    )
    report = gather(config, [])
    agent, worker = report.targets
    assert (agent.starts_24h, worker.starts_24h) == (2, 1)
    assert report.last_run is not None
    assert abs(datetime.now(UTC) - HOUR - report.last_run) < timedelta(minutes=5)


def test_the_reading_ends_once_many_records_in_a_row_are_older_than_a_day(
    config: Config,
) -> None:
    for old, unreadable in ((PAST_IN_A_ROW, 0), (PAST_IN_A_ROW - 1, 1)):
        config.settings.audit_log.write_text(
            "garbage at the log's start\n"
            + line(timedelta(days=2), "worker", "ok") * old
            + line(HOUR, "agent", "ok")
        )
        report = gather(config, [])
        assert (report.unreadable_lines, report.history_truncated) == (unreadable, False), old


# --- a report that cannot be written ---


def status_argv(config_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "guardian", "status", *args, "--config", str(config_path),
            "--cron-file", str(config_path.parent / "none")]  # fmt: skip


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_a_report_that_cannot_be_written_is_said_on_stderr(
    config_path: Path, args: tuple[str, ...]
) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(status_argv(config_path, *args), stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stderr) == (
        3, "guardian: cannot write the report to stdout: No space left on device\n")  # fmt: skip


def test_a_full_pipe_nobody_reads_does_not_hang_status(config_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        for size in (1 << 16, 1 << 12, 1):  # full to the last byte
            with contextlib.suppress(BlockingIOError):
                while True:
                    os.write(write_end, b"x" * size)
        os.set_blocking(write_end, True)  # as a stuck reader's pipe is: a write would block
        began = time.monotonic()
        done = subprocess.run(status_argv(config_path), stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)  # fmt: skip
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (done.returncode, done.stderr) == (
        3, "guardian: cannot write the report to stdout: nobody read it for 3s\n")  # fmt: skip
    assert time.monotonic() - began < 30


# --- a state file the next check would rebuild ---


def test_a_state_file_the_next_check_rebuilds_holds_no_give_up(g: Guardian) -> None:
    """Status says what the next check will do: with an impossible state file (given up
    in the future), it starts afresh, whatever give-up the audit log recorded."""
    g.configure("--exit", "3", restart=GIVE_UP)
    record = give_up(g)
    state_file = g.state / "state" / "agent.json"
    data = json.loads(state_file.read_text())
    data["gave_up_at"] = time.clock_gettime(time.CLOCK_BOOTTIME) + 3600
    state_file.write_text(json.dumps(data))  # (its mode stays 600)
    shown, report = status(g)
    lines = shown.stdout.splitlines()
    assert gave_up_line(record) not in lines
    assert not any("gave up" in row or "backoff until" in row for row in lines)
    assert "state file not believed for agent (was corrupt (impossible gave_up_at)): the next " \
           "check starts afresh without it (no backoff or give-up holds)" in lines  # fmt: skip
    (agent,) = report["targets"]
    assert (agent["gave_up"], agent["backoff"], agent["gives_up_next"]) == (None, None, None)
    assert agent["state_file"] == "not believed"
    assert "agent: would start: " in g.check("--dry-run").stdout


# --- /proc mounted hidepid ---


@pytest.fixture(scope="session")
def hidepid_ok() -> None:
    """A private mount namespace with a /proc of its own can be made here (never the host's)."""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           "mount -t proc -o hidepid=2 proc /proc"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a /proc of a private mount namespace: {done.stderr.strip()}")


def under_hidepid(
    options: str, argv: list[str], user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` (as ``user``) in a mount namespace of its own, /proc mounted with ``options``
    there: the host's /proc is never touched, and the mount goes with the namespace."""
    run_as = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t proc -o "$0" proc /proc && exec "$@"', options, *run_as, *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


HIDDEN = r"/proc hides other users' processes from this user \(hidepid=\w+\)"


@pytest.mark.usefixtures("hidepid_ok")
@pytest.mark.parametrize("options", ["hidepid=1", "hidepid=2", "hidepid=2,gid={gid}"])
def test_under_hidepid_one_who_is_not_root_cannot_tell_whether_cron_runs(
    system_user: str, shared_install: SharedInstall, cron_daemon: int, options: str
) -> None:
    options = options.format(gid=pwd.getpwnam(system_user).pw_gid)  # gid=: that group sees all
    script = (
        "import json; from guardian.status import find_cron_daemon\n"
        "d = find_cron_daemon(); print(json.dumps([d.running, d.pids, d.detail]))\n"
    )
    argv = [str(shared_install.prefix / "bin" / "python"), "-c", script]
    as_user = under_hidepid(options, argv, system_user)
    assert as_user.returncode == 0, as_user.stderr
    running, pids, detail = json.loads(as_user.stdout)
    if "gid=" in options:
        assert (running, cron_daemon in pids) == (True, True)
    else:
        assert (running, pids) == (None, [])  # not "no cron daemon is running"
        assert re.fullmatch(HIDDEN, detail), detail
    as_root = under_hidepid(options, argv)
    assert as_root.returncode == 0, as_root.stderr
    running, pids, _ = json.loads(as_root.stdout)
    assert (running, cron_daemon in pids) == (True, True)


@pytest.mark.usefixtures("hidepid_ok")
@pytest.mark.parametrize("options", ["hidepid=1", "hidepid=2"])
def test_under_hidepid_roots_running_target_cannot_be_told_not_said_not_running(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, reaper: Reaper, options: str
) -> None:
    g = Guardian(shared_dir, reaper)
    g.configure()
    assert g.check().rc == 0
    pid = g.pid()
    (g.state / "audit.jsonl").chmod(0o644)

    def status_as(user: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        return under_hidepid(options, [shared_install.guardian, "status", *args, "--config",
                                       str(g.config_path), "--cron-file", str(shared_dir / "none")],
                             user)  # fmt: skip

    shown, as_json = status_as(system_user), status_as(system_user, "--json")
    assert shown.returncode == as_json.returncode == 0, shown.stdout + shown.stderr
    evidence = rf"pidfile names pid {pid}, which runs, but {HIDDEN}"
    assert re.fullmatch(rf"agent: cannot tell whether it runs: {evidence} \(root can tell\)",
                        shown.stdout.splitlines()[0]), shown.stdout  # fmt: skip
    data = json.loads(as_json.stdout)
    (agent,) = data["targets"]
    assert (agent["running"], agent["ok"], agent["pid"]) == (None, None, None)
    assert re.fullmatch(evidence, agent["evidence"])
    assert (data["ok"], data["all_running"], data["problems"]) == (True, False, [])

    as_root = json.loads(status_as(None, "--json").stdout)
    assert (as_root["targets"][0]["running"], as_root["targets"][0]["pid"]) == (True, pid)

    # Once it is gone (its pid with it), that is known, hidepid or not.
    assert g.run("stop", "agent").rc == 0
    # (A zombie's pid still exists, and only root may see that it is one: until its
    # parent, init, reaps it, it cannot be told either.)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="init to reap the agent")
    stopped = status_as(system_user)
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith("agent: NOT RUNNING: ")


def test_root_sees_the_target_of_a_guardian_that_runs_as_another_user(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, reaper: Reaper
) -> None:
    """`install --user U` on root's config: guardian runs as U, and so does its target.
    Root's status with --user U (as for install) finds it, with U's state; without,
    it looks for root's, and never guesses from who owns the state folder."""
    pw = pwd.getpwnam(system_user)
    state_dir = shared_dir / "state"
    state_dir.mkdir()
    os.chown(state_dir, pw.pw_uid, pw.pw_gid)
    config = write_config(
        shared_dir / "g.toml",
        {"state_dir": str(state_dir)},
        {"agent": {"command": ["/bin/sleep", "3001"],  # the user's: no other test's
                   "start_grace": "0.3s", "health": {"command": ["/bin/false"]}}},
    )  # fmt: skip
    config.chmod(0o644)
    run = ["runuser", "-u", system_user, "--", shared_install.guardian]
    for _ in range(2):  # a start, then a failing probe
        subprocess.run([*run, "check", "--config", str(config)], capture_output=True,
                       timeout=60, check=False)  # fmt: skip
    pid = int((state_dir / "pids" / "agent.pid").read_text())
    reaper.track(pid)
    assert Path(f"/proc/{pid}/status").read_text().count(f"\t{pw.pw_uid}\t") >= 1

    def status_json(*extra: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "guardian", "status", "--json", "--config", str(config),
             *extra], capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1  # failing its probe, or not root's
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    (agent,) = status_json("--user", system_user)["targets"]
    assert (agent["running"], agent["pid"]) == (True, pid), agent
    assert agent["state_file"] == "believed"  # the user's own, believed for the user
    assert (agent["health"], agent["probe_failures"]) == ("failing", 1)
    # Without --user: root's guardian is what it reports on. The user's process with the
    # command line is not root's target, and the user's files are not believed as root's.
    (agent,) = status_json("--cron-file", str(shared_dir / "none"))["targets"]
    assert agent["running"] is False
    assert (
        f"is owned by user {system_user}, who is neither root nor the target's user, so "
        "it is not believed; no process has the command line" in agent["evidence"]
    )


def test_a_cron_file_cron_never_reads_is_said_and_is_a_problem(g: Guardian) -> None:
    """Installed with --cron-file somewhere cron does not look: no "next run", no
    overdue guess, and status is not ok: nothing will ever run guardian from there."""
    cron_file = g.tmp / "guardian"
    installed = g.run("install", "--interval", "1m", "--cron-file", str(cron_file))
    assert installed.rc == 0
    assert "cron reads only /etc/crontab and the files in /etc/cron.d" in installed.stderr
    assert g.check().rc == 0
    shown, data = status(g, "--cron-file", str(cron_file))
    assert shown.rc == 1
    said = (f"cron: installed in {cron_file}: * * * * * (cron reads only /etc/crontab and "
            "the files in /etc/cron.d: this file is not run)")  # fmt: skip
    assert said in shown.stdout.splitlines()
    assert "next run" not in shown.stdout
    assert data["problems"] == ["guardian's cron line is only where cron never reads it"]
    assert (data["interval_s"], data["overdue"]) == (None, False)


def broken_supervisord(g: Guardian, **target: object) -> Path:
    """``g`` guarding a real supervisord whose config has an error (it exits at once)."""
    conf = write_supervisord_conf(g.tmp / "supervisord.conf", g.tmp)
    with conf.open("a") as f:
        f.write("[program:broken]\ncommand=/bin/true\nautostart=maybe\n")
    g.configure(command=[str(BIN / "supervisord"), "-c", str(conf)], daemonizes=True,
                pidfile=str(g.tmp / "supervisord.pid"), start_grace="1s",
                start_timeout="20s", **target)  # fmt: skip
    return conf


def test_a_real_supervisord_that_keeps_failing_is_given_up_on_and_status_says_so(
    g: Guardian,
) -> None:
    broken_supervisord(g, restart=GIVE_UP)
    record = give_up(g)
    dry = g.check("--dry-run")  # and a dry run says when, not "would start"
    assert dry.stdout.startswith("agent: backoff: would wait: ")
    assert f"next try at {record['next_try']}" in dry.stdout
    shown, data = status(g)
    assert shown.rc == 1
    lines = shown.stdout.splitlines()
    assert gave_up_line(record) in lines
    # Why: supervisord's own words, from its output, under the last failure.
    at = next(i for i, text in enumerate(lines) if text.startswith("  last failure at "))
    assert any("not a valid boolean value: 'maybe'" in text for text in lines[at + 1 :])
    (agent,) = data["targets"]
    assert agent["gave_up"]["next_try"] == record["next_try"]
    assert agent["failed_starts_24h"] == 2


def test_a_real_supervisords_probe_failing_below_the_threshold_is_unhealthy(
    g: Guardian,
) -> None:
    """`supervisorctl status` as the probe, with one program stopped on purpose: it fails
    (exit 3) though supervisord is well: status says unhealthy, 1 of 3, exit 1."""
    conf = write_supervisord_conf(g.tmp / "supervisord.conf", g.tmp)
    with conf.open("a") as f:
        f.write(f"[program:spare]\ncommand={sys.executable} {AGENT} --tag {g.tmp}/spare\n"
                "autostart=false\n")  # fmt: skip
    probe = [str(BIN / "supervisorctl"), "-c", str(conf), "status"]
    g.configure(command=[str(BIN / "supervisord"), "-c", str(conf)], daemonizes=True,
                pidfile=str(g.tmp / "supervisord.pid"), start_grace="1s", start_timeout="20s",
                health={"command": probe, "timeout": "10s", "failures": 3})  # fmt: skip
    assert g.check().rc == 0
    pid = int((g.tmp / "supervisord.pid").read_text())
    g.reaper.track(pid)
    assert g.check().rc == 1
    assert g.actions()[-1] == "unhealthy"
    shown, data = status(g)
    assert shown.rc == 1
    first = shown.stdout.splitlines()[0]
    assert first.startswith("agent: running, UNHEALTHY (probes failing 1 of 3): command: ")
    assert "supervisorctl exited 3" in first
    (agent,) = data["targets"]
    assert (agent["pid"], agent["health"], agent["probe_failures"]) == (pid, "failing", 1)
    assert data["problems"] == ["agent: unhealthy (probes failing 1 of 3)"]


# --- holds (`guardian stop`) and watchers (`guardian check --watch`): issue 9 ---


def hold_for(seconds: float | None, reason: str = "kernel upgrade") -> holds.Hold:
    """A hold as `guardian stop agent --for ...` makes it, read back (to the second)."""
    hold = holds.make("agent", seconds=seconds, reason=reason)
    return hold._replace(at=int(hold.at), until=None if seconds is None else int(hold.at) + seconds)


def test_a_held_target_is_said_first_and_exits_1_until_released(g: Guardian) -> None:
    hold = hold_for(7200)
    holds.write(g.state, hold)
    shown, data = status(g)
    assert shown.rc == 1, shown.stdout
    lines = shown.stdout.splitlines()
    assert hold.until is not None
    # To the second for people; to the millisecond in --json (below).
    assert lines[0] == f"agent: HELD by {holds.who()} since {holds._wall(hold.at)} until " \
                       f"{holds._wall(hold.until)}: kernel upgrade"  # fmt: skip
    assert lines[1].startswith(f"  not running (held): no pidfile at {g.pidfile}")
    assert "NOT RUNNING" not in shown.stdout  # down on purpose: said, not shouted
    (agent,) = data["targets"]
    assert agent["held"] == {**hold.to_dict(), "expired": False}
    assert (agent["hold_file"], agent["hold_problem"]) == ("believed", None)
    assert agent["hold_path"] == str(g.state / "holds" / "agent.json")
    assert (agent["running"], agent["ok"], data["ok"]) == (False, False, False)
    assert data["problems"] == [f"agent: {hold.describe()}"]

    holds.write(g.state, hold_for(None, reason=""))  # until `guardian start agent`
    shown, data = status(g)
    assert shown.stdout.splitlines()[0] == (
        f"agent: HELD by {holds.who()} since {since_of(shown)} until `guardian start agent` "
        "(no reason given)"
    )
    assert data["targets"][0]["held"]["until"] is None

    assert holds.release(g.state, "agent")
    shown, data = status(g)
    assert shown.stdout.startswith("agent: NOT RUNNING: ")
    assert (data["targets"][0]["held"], data["targets"][0]["hold_file"]) == (None, "none")
    assert data["problems"] == ["agent: not running"]


def since_of(shown: Result) -> str:
    """The time a HELD line gives as its since."""
    m = re.search(rf" since ({ISO}) ", shown.stdout)
    assert m, shown.stdout
    return m[1]


def test_a_held_target_that_runs_is_said_running_though_held(g: Guardian) -> None:
    g.configure(health={"command": ["/bin/false"], "failures": 3})
    assert g.check().rc == 0
    assert g.check().rc == 1  # its probe failed once: no check probes it while held
    hold = hold_for(600)
    holds.write(g.state, hold)
    shown, data = status(g)
    assert shown.rc == 1
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"agent: HELD by {holds.who()} since ")
    assert re.fullmatch(rf"  running though held: pid {g.pid()}, up \d+s", lines[1])
    assert "UNHEALTHY" not in shown.stdout
    (agent,) = data["targets"]
    assert (agent["running"], agent["pid"], agent["ok"], agent["health"]) == (
        True, g.pid(), False, None)  # fmt: skip
    assert data["problems"] == [f"agent: {hold.describe()}"]


def test_a_failure_before_the_hold_is_not_said_as_current(config: Config) -> None:
    config.settings.audit_log.write_text(
        line(HOUR * 2, "agent", "start_failed", error="exited with status 3")
    )
    at = time.time() - 3600
    holds.write(config.settings.state_dir, holds.Hold("agent", "root (uid 0)", at, None, "fix"))
    agent, _ = gather(config, []).targets
    assert agent.last_failure is not None
    assert not agent.last_failure.current
    assert [t for t in agent.lines() if "failure at" in t] == [
        f"  earlier failure at {agent.last_failure.ts} (before the hold): start failed: "
        f"exited with status 3 ({agent.last_failure.reason})"
    ]
    assert (agent.gave_up, agent.backoff, agent.gives_up_next) == (None, None, None)


def test_an_expired_hold_is_said_and_is_no_problem_by_itself(g: Guardian) -> None:
    now = time.time()
    expired = holds.Hold("agent", "root (uid 0)", int(now) - 7200, int(now) - 3600, "done")
    holds.write(g.state, expired)
    shown, data = status(g)  # not running: the next run starts it
    said = expired.to_dict()
    hold_line = (f"  hold expired at {said['until']}; the next run starts it (held by root "
                 f"(uid 0) since {said['at']}: done)")  # fmt: skip
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("agent: NOT RUNNING: ")
    assert lines[1] == hold_line
    assert data["problems"] == ["agent: not running"]  # that, not the hold
    assert data["targets"][0]["held"] == {**said, "expired": True}

    holds.release(g.state, "agent")
    assert g.check().rc == 0
    holds.write(g.state, expired)  # running, and still there: said without "starts it"
    shown, data = status(g)
    assert shown.rc == 0, shown.stdout
    assert hold_line.replace("; the next run starts it", "") in shown.stdout.splitlines()
    assert (data["ok"], data["problems"], data["targets"][0]["ok"]) == (True, [], True)


def test_a_hold_file_that_cannot_be_believed_is_a_problem_and_said(g: Guardian) -> None:
    assert g.check().rc == 0
    holds.write(g.state, hold_for(600))
    path = g.state / "holds" / "agent.json"
    path.chmod(0o666)
    shown, data = status(g)
    assert shown.rc == 1
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("agent: running, pid ")  # the check keeps it running
    why = "is owned by uid 0 with mode 666, so others could have written it"
    assert lines[1] == (f"  hold file {path} not believed: {why}; checks ignore it and keep "
                        "the target running")  # fmt: skip
    (agent,) = data["targets"]
    assert (agent["held"], agent["hold_file"], agent["hold_problem"]) == (
        None, "not believed", why)  # fmt: skip
    assert data["problems"] == [f"agent: hold file not believed ({why}); checks keep it running"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_hold_file_that_is_no_file_is_not_believed_never_a_hang(g: Guardian, kind: str) -> None:
    holds.write(g.state, hold_for(600))
    path = g.state / "holds" / "agent.json"
    if kind == "symlink":  # to a good hold, even
        path.rename(g.tmp / "good.json")
        path.symlink_to(g.tmp / "good.json")
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path, 0o600)
    else:
        path.unlink()
        path.mkdir(mode=0o700)
    shown, data = status(g)  # (a hang would time out)
    assert shown.rc == 1
    word = {"symlink": "a symlink", "fifo": "a FIFO", "folder": "a folder"}[kind]
    why = f"cannot be read (is {word}, not a regular file)"
    assert f"  hold file {path} not believed: {why}; checks ignore it and keep the target " \
           "running" in shown.stdout.splitlines()  # fmt: skip
    assert data["targets"][0]["hold_problem"] == why
    assert "agent: NOT RUNNING: " in shown.stdout  # not held: it should run, and does not


def test_one_who_may_not_read_roots_holds_and_locks_cannot_tell(shared_dir: Path) -> None:
    """Root's guardian, status by a user who is not root: whether it is held, and whether
    a watcher runs, cannot be told (root's folders are root's alone); neither is a problem."""
    state_dir = shared_dir / "state"
    config = load(write_config(shared_dir / "g.toml", {"state_dir": str(state_dir)},
                               {"agent": {"command": ["/bin/sleep", "3002"]}}))  # fmt: skip
    holds.write(state_dir, hold_for(600))
    files.make_dirs(config.settings.lock_dir, 0o700)
    state_dir.chmod(0o755)
    with effective_uid(65534):
        report = gather(config, [], runner=0)
    (agent,) = report.targets
    hold_path = state_dir / "holds" / "agent.json"
    assert (agent.held, agent.hold_file) == (None, "unreadable")
    assert (agent.watcher, agent.watch_lock) == (None, "unreadable")
    lines = agent.lines()
    assert f"  cannot tell whether it is held: hold file {hold_path} cannot be read " \
           "(Permission denied) (root can tell)" in lines  # fmt: skip
    lock_dir = config.settings.lock_dir
    assert f"  watcher unknown: cannot read {lock_dir / 'agent.watch.lock'} (Permission " \
           "denied) (root can tell)" in lines  # fmt: skip
    assert report.problems == ["agent: not running"]  # not held, as far as this user knows


# A watcher as `guardian check --watch` is one: it holds its watch lock (flock) for as
# long as it watches, and writes its pid, start ticks and times into it.
WATCHER = """
import fcntl, os, sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from guardian import proc
from guardian.status import Watcher
path, since, until = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
now = datetime.now(UTC)
me = Watcher(os.getpid(), proc.stat(os.getpid()).start_ticks,
             now + timedelta(seconds=since), now + timedelta(seconds=until))
os.ftruncate(fd, 0)
os.write(fd, me.to_json())
print("watching", flush=True)
time.sleep(120)
"""


def watch_lock(g: Guardian) -> Path:
    lock_dir = g.state / "locks"
    files.make_dirs(lock_dir, 0o700)
    return lock_dir / "agent.watch.lock"


def watcher(g: Guardian, since: float = -10, until: float = 60) -> int:
    """A watcher of the test's own (ended by its pid at teardown), begun ``since`` seconds
    from now, ending ``until`` seconds from now; its pid."""
    proc = g.spawn([sys.executable, "-c", WATCHER, str(watch_lock(g)), str(since), str(until)],
                   stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"watching\n"
    return proc.pid


def test_a_running_watcher_is_said_with_its_times(g: Guardian) -> None:
    assert g.check().rc == 0
    pid = watcher(g)
    shown, data = status(g)  # while the watcher holds its lock: status never locks it
    assert shown.rc == 0, shown.stdout
    line = next(t for t in shown.stdout.splitlines() if "watched" in t)
    m = re.fullmatch(rf"  watched by pid {pid} since ({ISO}) \(until ({ISO})\)", line)
    assert m, line
    (agent,) = data["targets"]
    assert agent["watcher"] == {"pid": pid, "since": m[1], "until": m[2], "stuck": False}
    assert (agent["watch_lock"], agent["watch_problem"]) == ("believed", None)
    assert data["problems"] == []


def test_a_watcher_past_its_end_is_stuck_and_a_problem(g: Guardian) -> None:
    assert g.check().rc == 0
    pid = watcher(g, since=-600, until=-100)  # guardian.timeout (30s) and 60s ago
    shown, data = status(g)
    assert shown.rc == 1
    (agent,) = data["targets"]
    until = agent["watcher"]["until"]
    assert agent["watcher"]["stuck"] is True
    assert f"  WARNING: watcher pid {pid} should have ended at {until} (watching since " \
           f"{agent['watcher']['since']})" in shown.stdout.splitlines()  # fmt: skip
    assert data["problems"] == [f"agent: watcher pid {pid} should have ended at {until}"]


def test_a_watcher_a_little_past_its_end_is_not_stuck(g: Guardian) -> None:
    assert g.check().rc == 0
    pid = watcher(g, since=-150, until=-80)  # its last action may take guardian.timeout
    shown, data = status(g)
    assert shown.rc == 0, shown.stdout
    assert f"  watched by pid {pid} since " in shown.stdout
    assert data["targets"][0]["watcher"]["stuck"] is False


def write_watch_lock(g: Guardian, text: str | bytes) -> Path:
    path = watch_lock(g)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    return path


def watcher_line(pid: int, ticks: int) -> bytes:
    now = datetime.now(UTC)
    return Watcher(pid, ticks, now - HOUR, now + HOUR).to_json()


def no_watcher_said(g: Guardian) -> dict[str, Any]:
    shown, data = status(g)
    assert shown.rc == 0, shown.stdout
    assert "watch" not in shown.stdout
    (agent,) = data["targets"]
    assert (agent["watcher"], agent["watch_lock"], agent["watch_problem"]) == (None, "none", None)
    return agent


def test_a_watch_lock_naming_an_ended_process_is_no_watcher(g: Guardian) -> None:
    """A watcher killed by SIGKILL leaves its file (the lock goes with it): that is
    normal, and nothing is said."""
    assert g.check().rc == 0
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    write_watch_lock(g, watcher_line(gone.pid, 12345))
    no_watcher_said(g)


def test_a_live_pid_that_started_at_another_time_is_no_watcher(g: Guardian) -> None:
    assert g.check().rc == 0
    sleeper = g.spawn(["/bin/sleep", "60"])
    found = proc_stat(sleeper.pid)
    assert found is not None
    write_watch_lock(g, watcher_line(sleeper.pid, found.start_ticks + 1))  # its pid, reused
    no_watcher_said(g)
    write_watch_lock(g, watcher_line(sleeper.pid, found.start_ticks))  # the very process
    _, data = status(g)
    assert data["targets"][0]["watcher"]["pid"] == sleeper.pid


def test_no_watch_lock_or_an_empty_one_is_no_watcher_and_none_is_made(g: Guardian) -> None:
    assert g.check().rc == 0
    path = g.state / "locks" / "agent.watch.lock"
    no_watcher_said(g)
    assert not path.exists()  # status never creates it
    write_watch_lock(g, "")  # locked, its line not written yet
    no_watcher_said(g)


SPOILT_WATCH_LOCKS = {
    "owner": "is owned by uid 65534 with mode 600, so others could have written it",
    "mode": "is owned by uid 0 with mode 622, so others could have written it",
    "folder": "mode 777, so others could have written it",
    "symlink": "cannot be read (is a symlink, not a regular file)",
    "fifo": "cannot be read (is a FIFO, not a regular file)",
    "huge": "is larger than 4096 bytes, so not a watcher's",
    "torn": "is not a watcher's line (",
    "bool pid": "is not a watcher's line (pid True, start_ticks",
    "no zone": "is not a watcher's line (since ",
}


@pytest.mark.parametrize("spoil", SPOILT_WATCH_LOCKS)
def test_a_watch_lock_that_cannot_be_believed_is_said_not_a_problem(
    g: Guardian, spoil: str
) -> None:
    sleeper = g.spawn(["/bin/sleep", "60"])  # a live process it names: still not believed
    found = proc_stat(sleeper.pid)
    assert found is not None
    good = watcher_line(sleeper.pid, found.start_ticks)
    path = write_watch_lock(g, good)
    if spoil == "owner":
        os.chown(path, 65534, 65534)
    elif spoil == "mode":
        path.chmod(0o622)
    elif spoil == "folder":
        path.parent.chmod(0o777)
    elif spoil == "symlink":
        path.rename(g.tmp / "good.lock")
        path.symlink_to(g.tmp / "good.lock")
    elif spoil == "fifo":
        path.unlink()
        os.mkfifo(path, 0o600)
    elif spoil == "huge":
        write_watch_lock(g, good.rstrip() + b" " * 5000)
    elif spoil == "torn":
        write_watch_lock(g, good[:30])
    elif spoil == "bool pid":
        write_watch_lock(g, good.replace(f'"pid": {sleeper.pid}'.encode(), b'"pid": true'))
    else:
        write_watch_lock(g, re.sub(rb'"since": "([^"Z]*)Z"', rb'"since": "\1"', good))
    shown, data = status(g)  # (a FIFO must not hang it: that would time out)
    assert data["problems"] == ["agent: not running"]  # that, not the watch lock
    (agent,) = data["targets"]
    assert (agent["watcher"], agent["watch_lock"]) == (None, "not believed")
    assert SPOILT_WATCH_LOCKS[spoil] in agent["watch_problem"]
    assert f"  watch lock of agent not believed: {agent['watch_problem']}" in shown.stdout


def test_read_watcher_raises_permission_error_when_this_user_cannot_tell(g: Guardian) -> None:
    pid = watcher(g)
    lock_dir = g.state / "locks"
    assert read_watcher(lock_dir, "agent", owner=0) == read_watcher(lock_dir, "agent", owner=0)
    found = read_watcher(lock_dir, "agent", owner=0)
    assert found is not None
    assert found.pid == pid
    with pytest.raises(WatcherError, match="owned by uid 0"):
        read_watcher(lock_dir, "agent", owner=65534)
    g.tmp.chmod(0o755)  # (pytest's own folders above are root's: nobody passes them)
    with effective_uid(65534), pytest.raises(PermissionError):
        read_watcher(lock_dir, "agent", owner=0)


# --- the audit log's records of holds and watches ---


def hold_field(at: timedelta, until: timedelta | None = None) -> dict[str, object]:
    return {"by": "root (uid 0)", "at": ts(at)[:19] + "Z",
            "until": None if until is None else ts(until)[:19] + "Z", "reason": "r"}  # fmt: skip


def test_a_holds_later_held_records_are_runs_its_stops_is_not(config: Config) -> None:
    """`guardian stop` writes a `held` record (by hand), and every run after it one more,
    quietly: those are guardian's runs (else a config whose every target is held looks
    overdue); the stop's is none."""
    first, second = hold_field(HOUR * 3), hold_field(timedelta(minutes=30))
    log = config.settings.audit_log
    log.write_text(line(HOUR * 3, "agent", "held", hold=first))
    report = gather(config, [])
    assert report.last_run is None  # only the stop's record: no run of guardian's
    assert report.unreadable_lines == 0
    with log.open("a") as f:
        f.write(line(HOUR * 2, "agent", "held", hold=first))
        f.write(line(HOUR, "agent", "held", hold=first))
        f.write(line(timedelta(minutes=30), "agent", "held", hold=second))  # a stop again
    report = gather(config, [])
    assert report.last_run is not None
    assert abs(datetime.now(UTC) - HOUR - report.last_run) < timedelta(minutes=5)
    agent = report.targets[0]
    assert agent.last is not None
    assert (agent.last.action, agent.starts_24h) == ("held", 0)
    assert not any("last held" in t for t in agent.lines())  # the hold says it (if any)


def test_a_hold_clears_a_give_up_and_a_watch_end_hides_no_backoff(
    shared_dir: Path,
) -> None:
    """As one who cannot read root's state files (from the log): a give-up before a hold
    is over; a backoff before a watch's end still holds (the end is no outcome)."""
    state_dir = shared_dir / "state"
    commands = {"agent": ["/bin/sleep", "3003"], "worker": ["/bin/sleep", "3004"]}
    targets = {name: {"command": argv} for name, argv in commands.items()}
    config = load(write_config(shared_dir / "g.toml", {"state_dir": str(state_dir)}, targets))
    (state_dir / "state").mkdir(parents=True)
    for name in ("agent", "worker"):
        (state_dir / "state" / f"{name}.json").write_text("{}")  # root's alone (0600)
        (state_dir / "state" / f"{name}.json").chmod(0o600)
    ahead = (datetime.now(UTC) + HOUR).isoformat(timespec="seconds").replace("+00:00", "Z")
    config.settings.audit_log.write_text(
        line(HOUR * 2, "agent", "gave_up", next_try=ahead)
        + line(HOUR, "agent", "held", hold=hold_field(HOUR, timedelta(minutes=1)))
        + line(HOUR, "worker", "backoff", next_try=ahead)
        + line(timedelta(minutes=5), "worker", "watch_ended")
    )
    config.settings.audit_log.chmod(0o644)
    with effective_uid(65534):
        report = gather(config, [], runner=0)
    agent, worker = report.targets
    assert agent.state_file == worker.state_file == "unreadable"
    assert agent.gave_up is None
    assert worker.backoff is not None
    assert worker.backoff.until == ahead
    assert report.last_run is not None  # the watch's end: a run's
    assert abs(datetime.now(UTC) - timedelta(minutes=5) - report.last_run) < timedelta(minutes=2)
    assert not any("last watch_ended" in t for t in worker.lines())


def test_hold_fields_of_the_wrong_shape_are_counted_never_believed(config: Config) -> None:
    good = json.loads(line(HOUR, "agent", "held", hold=hold_field(HOUR)))
    hostile = [
        {**good, "hold": "kernel upgrade"},
        {**good, "hold": {**good["hold"], "at": "yesterday"}},
        {**good, "hold": {**good["hold"], "until": 5}},
        {**good, "hold": {**good["hold"], "by": None}},
        {k: v for k, v in good.items() if k != "hold"} | {"hold": {"by": "x"}},
    ]
    config.settings.audit_log.write_text("".join(json.dumps(r) + "\n" for r in [good, *hostile]))
    report = gather(config, [])
    assert report.unreadable_lines == len(hostile)
    assert report.targets[0].last is not None


def test_the_history_goes_on_into_the_rotated_logs_after_a_rotation(config: Config) -> None:
    log = config.settings.audit_log
    old = [  # in .2.gz: the day's first start and failure, and what is older
        line(timedelta(days=3), "worker", "started"),
        line(timedelta(hours=20), "agent", "start_failed", error="exited with status 3"),
        line(timedelta(hours=19), "agent", "started"),
    ]
    middle = [  # in .1
        line(timedelta(hours=10), "agent", "start_failed", error="exited with status 4"),
        line(timedelta(hours=9), "agent", "started"),
        line(timedelta(hours=8), "worker", "started"),
    ]
    Path(f"{log}.2.gz").write_bytes(gzip.compress("".join(old).encode()))
    Path(f"{log}.1").write_text("".join(middle))
    log.write_text(line(timedelta(minutes=2), "agent", "ok"))  # rotated a minute ago
    report = gather(config, [])
    agent, worker = report.targets
    assert (agent.starts_24h, agent.failed_starts_24h) == (2, 2)
    assert agent.last is not None
    assert agent.last.action == "ok"
    assert agent.last_failure is not None
    assert agent.last_failure.error == "exited with status 4"
    assert (worker.starts_24h, worker.last and worker.last.action) == (1, "started")
    assert report.last_run is not None
    assert (datetime.now(UTC) - report.last_run) < timedelta(minutes=3)
    assert (report.audit_problem, report.history_truncated, report.unreadable_lines) == (
        None, False, 0)  # fmt: skip
    # Read only from the live log, as before rotation was read: one start, one failure less.
    Path(f"{log}.2.gz").unlink()
    agent = gather(config, []).targets[0]
    assert (agent.starts_24h, agent.failed_starts_24h) == (1, 1)


def test_a_damaged_rotated_gz_keeps_what_the_live_log_says_and_is_a_problem(
    config: Config,
) -> None:
    log = config.settings.audit_log
    Path(f"{log}.2.gz").write_bytes(gzip.compress(line(timedelta(hours=20), "agent",
                                                       "started").encode())[:-10])  # fmt: skip
    Path(f"{log}.1").write_text(line(timedelta(hours=10), "agent", "started"))
    log.write_text(line(timedelta(minutes=2), "agent", "ok"))
    report = gather(config, [])
    agent = report.targets[0]
    assert agent.last is not None
    assert agent.last.action == "ok"
    assert agent.starts_24h == 1  # the one in .1, read before the damaged file
    assert report.last_run is not None
    assert report.audit_problem is not None
    assert report.audit_problem.startswith(f"cannot read {log}.2.gz: ")
    assert f"audit log: {report.audit_problem}" in report.problems
    assert not report.ok

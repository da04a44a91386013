"""guardian report: real runs (starts, kills, holds, probes, a watcher) and the figures the
report gives for them; synthetic logs for the arithmetic (gaps, torn, rotated, future lines).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from guardian import report
from guardian.audit import MAX_LINE

from conftest import Guardian, wait_for


def _t(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _report(g: Guardian, *args: str) -> dict[str, Any]:
    r = g.run("report", "--json", "--width", "60", *args)
    assert r.rc == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def _watching(g: Guardian, seconds: str) -> subprocess.Popen[bytes]:
    """``guardian check --watch SECONDS``, once it watches the target (its lock named)."""
    watcher = g.spawn(
        [sys.executable, "-m", "guardian", "check", "--watch", seconds, "--config",
         str(g.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lock = g.state / "locks" / "agent.watch.lock"
    wait_for(lambda: lock.exists() and lock.read_text().strip(), what="the watcher to watch")
    return watcher


def test_a_kill_a_hold_and_a_start_by_hand_are_counted_as_they_happened(g: Guardian) -> None:
    assert g.check().rc == 0  # started: the first start ("other")
    assert g.check().rc == 0  # ok
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    assert g.check().rc == 0  # started after a death: last_seen and down_since
    assert g.run("stop", "agent", "--for", "1m", "--reason", "test").rc == 0
    time.sleep(1)
    assert g.check().rc == 0  # held
    assert g.run("start", "agent").rc == 0  # by hand
    assert g.check().rc == 0
    records = g.audit()
    assert [r["action"] for r in records] == [
        "started", "ok", "started", "held", "held", "started", "ok"
    ]  # fmt: skip
    death = records[2]
    data = _report(g, "--since", "1h")
    (t,) = data["targets"]
    assert t["starts"] == {"died": 1, "unhealthy": 0, "by_hand": 1, "other": 1}
    assert t["outages"] == 1
    assert t["down_now_since"] is None
    rec = t["recovery_s"]
    assert rec["recovered"] == 1
    # Counted from when it was last seen alive (the ok run) to ready again.
    assert abs(rec["longest"] - (_t(death["ts"]) - _t(death["last_seen"]))) < 0.002
    assert abs(rec["longest_at_least"] - (_t(death["ts"]) - _t(death["down_since"]))) < 0.002
    # Runs a second apart: the death is known to within that second (cron's: a minute).
    precision = _t(death["down_since"]) - _t(death["last_seen"])
    assert abs(rec["worst_precision_s"] - precision) < 0.002
    assert rec["within_a_second" if precision < 1 else "wider"] == 1
    held = _t(records[5]["ts"]) - _t(records[3]["ts"])
    assert abs(t["seconds"]["held"] - held) < 0.002
    assert abs(t["seconds"]["down"] - rec["longest"]) < 0.05  # from the ok record, not before
    up, down = t["seconds"]["up"], t["seconds"]["down"]
    assert abs(t["availability"] - up / (up + down)) < 0.001
    assert t["last_failure"]["action"] == "died"
    assert t["last_failure"]["at"] == death["ts"]
    assert t["timeline"][-1] == "^"  # starts in the last minute
    assert set(t["timeline"][:-2]) == {"."}  # nothing recorded before: unknown
    assert data["unreadable_lines"] == 0


def test_a_death_a_watcher_saw_is_timed_to_the_millisecond(g: Guardian) -> None:
    assert g.check().rc == 0
    watcher = _watching(g, "4s")
    time.sleep(0.3)
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: g.actions().count("started") == 2, what="the watcher's start")
    watcher.wait(timeout=30)
    g.track()
    death = [r for r in g.audit() if r["action"] == "started"][1]
    assert _t(death["down_since"]) - _t(death["last_seen"]) < 1.0
    (t,) = _report(g, "--since", "1h")["targets"]
    assert t["outages"] == 1
    assert t["starts"]["died"] == 1
    rec = t["recovery_s"]
    assert rec["within_a_second"] == 1
    assert rec["wider"] == 0
    assert rec["worst_precision_s"] < 1.0
    assert rec["longest"] < 5


def test_a_failing_probe_restart_is_by_cause_unhealthy_and_no_outage(g: Guardian) -> None:
    flag = g.tmp / "healthy"
    flag.touch()
    g.configure(health={"command": ["/usr/bin/test", "-e", str(flag)], "failures": 2})
    assert g.check().rc == 0
    flag.unlink()
    g.check()  # unhealthy, 1 of 2
    g.check()  # restarted_unhealthy
    assert g.actions() == ["started", "unhealthy", "restarted_unhealthy"]
    (t,) = _report(g, "--since", "1h")["targets"]
    assert t["starts"] == {"died": 0, "unhealthy": 1, "by_hand": 0, "other": 1}
    assert t["unhealthy_runs"] == 1
    assert t["outages"] == 0
    assert t["seconds"]["down"] == 0
    assert t["last_failure"]["action"] == "unhealthy"


def test_the_text_report_is_plain_when_piped_and_names_the_target(g: Guardian) -> None:
    assert g.check().rc == 0
    r = g.run("report", "--since", "2h", "--width", "40")
    assert r.rc == 0, r.stderr
    assert "\x1b[" not in r.stdout
    assert r.stdout.splitlines()[2].startswith("agent: 100.000% available")
    assert "= up   ^ restarted   X down   H held   . unknown" in r.stdout


def test_unknown_target_and_bad_since_are_usage_errors(g: Guardian) -> None:
    assert g.run("report", "--target", "nope").rc == 2
    assert g.run("report", "--since", "soon").rc == 2


# --- synthetic logs: the arithmetic ---

END = datetime(2026, 12, 7, tzinfo=UTC)


def _line(t: datetime, action: str, target: str = "agent", **extra: object) -> str:
    data: dict[str, object] = {
        "ts": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "host": "h",
        "guardian_pid": 1, "version": "0.1.0", "target": target, "action": action,
        "reason": "r", "pid": 5, "old_pid": None, "duration_ms": 0, "dry_run": False,
    }  # fmt: skip
    data.update(extra)
    return json.dumps(data, separators=(", ", ": "))


def _oks(start: datetime, minutes: int) -> list[str]:
    return [_line(start + timedelta(minutes=i), "ok") for i in range(minutes)]


def _build(log: Path, since: float = 86400, cells: int = 24) -> report.Report:
    return report.build(log, ["agent"], since=since, cells=cells, now=END.timestamp())


def test_a_gap_longer_than_three_intervals_is_unknown(tmp_path: Path) -> None:
    day = END - timedelta(days=1)
    lines = _oks(day, 600) + _oks(day + timedelta(hours=12), 720)  # 2h of nothing between
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    (t,) = _build(log).targets
    assert t.interval == 60
    up = t.seconds[report.UP]
    # 600 + 720 minutes, each ok credited to the next (or one interval at the end).
    assert abs(up - (600 + 720) * 60) < 1
    cells = t.timeline.states()
    assert cells[:10] == ["up"] * 10
    assert cells[10:12] == ["unknown", "unknown"]
    assert cells[12:] == ["up"] * 12
    assert t.to_dict()["availability"] == 1.0


def test_torn_foreign_future_and_huge_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    start = END - timedelta(hours=2)
    lines = _oks(start, 60)
    lines.insert(10, lines[10][:40])  # torn
    lines.insert(20, "not json at all")
    lines.insert(30, _line(start, "ok", target="stranger"))
    lines.insert(40, _line(END + timedelta(days=1), "started"))  # in the future
    lines.insert(50, '{"ts": "' + "x" * (MAX_LINE + 10) + '"}')  # longer than MAX_LINE
    lines.insert(55, _line(start, "no_such_action"))
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines))  # and no newline at the end
    made = _build(log)
    assert made.unreadable_lines == 4
    assert made.future_records == 1
    assert made.foreign == {"stranger": 1}
    (t,) = made.targets
    assert t.starts["other"] == 0  # the future start was not believed
    assert abs(t.seconds[report.UP] - 60 * 60) < 1


def test_a_torn_line_a_record_joined_is_unreadable_not_the_torn_record(tmp_path: Path) -> None:
    """A record torn by a full disk after its first optional field, then the next record's
    first copy joined to it (audit.append writes it again, whole): the joined line ends in
    "}", as a whole record does, and the fast path took it for the torn one (an unhealthy
    run counted, no line unreadable); status counted it unreadable."""
    start = END - timedelta(hours=1)
    torn = _line(start + timedelta(minutes=30), "unhealthy", error="probe failed: x" * 9)
    after = _line(start + timedelta(minutes=31), "ok")
    lines = [*_oks(start, 30), torn[: torn.index('"error": ') + 20] + after, after,
             *_oks(start + timedelta(minutes=32), 28)]  # fmt: skip
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    made = _build(log)
    assert made.unreadable_lines == 1
    (t,) = made.targets
    assert t.unhealthy_runs == 0
    whole = tmp_path / "whole.jsonl"  # the same record, whole: the fast path counts it
    whole.write_text("\n".join([*_oks(start, 30), torn, after]) + "\n")
    assert [t.unhealthy_runs for t in _build(whole).targets] == [1]


def test_rotated_and_gzipped_files_are_read_oldest_first(tmp_path: Path) -> None:
    start = END - timedelta(hours=3)
    log = tmp_path / "audit.jsonl"
    older = _oks(start, 60)
    dead = start + timedelta(minutes=60, seconds=30)
    seen = _iso(start + timedelta(minutes=59))
    started = _line(start + timedelta(minutes=62), "started", last_seen=seen, down_since=_iso(dead))
    middle = [started, *_oks(start + timedelta(minutes=63), 57)]
    newest = _oks(start + timedelta(minutes=120), 60)
    (tmp_path / "audit.jsonl.2.gz").write_bytes(gzip.compress(("\n".join(older) + "\n").encode()))
    (tmp_path / "audit.jsonl.1").write_text("\n".join(middle) + "\n")
    log.write_text("\n".join(newest) + "\n")
    made = _build(log)
    assert [Path(f).name for f in made.files] == [
        "audit.jsonl.2.gz",
        "audit.jsonl.1",
        "audit.jsonl",
    ]
    (t,) = made.targets
    d = t.to_dict()
    assert d["outages"] == 1
    assert t.starts["died"] == 1
    assert d["recovery_s"]["longest"] == 180.0  # last seen at minute 59, ready at 62
    assert d["recovery_s"]["longest_at_least"] == 90.0
    assert abs(t.seconds[report.DOWN] - 180) < 0.01


def test_a_rotated_file_older_than_the_period_is_skipped_by_its_mtime(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    old = tmp_path / "audit.jsonl.1"
    old.write_text(_line(END - timedelta(days=30), "gave_up") + "\n")
    stamp = (END - timedelta(days=30)).timestamp()
    os.utime(old, (stamp, stamp))
    log.write_text("\n".join(_oks(END - timedelta(hours=1), 60)) + "\n")
    made = _build(log)
    assert made.skipped_files == [str(old)]
    assert made.targets[0].gave_up == 0


def test_down_held_and_start_failures_shape_the_cells(tmp_path: Path) -> None:
    start = END - timedelta(hours=4)
    hold = {"by": "root", "at": _iso(start), "until": None, "reason": "x"}
    lines = _oks(start, 60)  # hour 0: up
    lines += [_line(start + timedelta(minutes=60 + i), "start_failed", error="exit 3")
              for i in range(60)]  # hour 1: down  # fmt: skip
    lines += [_line(start + timedelta(minutes=120 + i), "held", hold=hold) for i in range(60)]
    lines += [_line(start + timedelta(minutes=180), "started", reason="started by hand: x")]
    lines += _oks(start + timedelta(minutes=181), 59)
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    made = report.build(log, ["agent"], since=4 * 3600, cells=4, now=END.timestamp())
    (t,) = made.targets
    # The first hour ends with a minute down: a short outage in it.
    assert t.timeline.states() == ["restarted", "down", "held", "restarted"]
    assert t.failed_starts == 60
    assert t.to_dict()["outages"] == 1  # ended by the hold, never recovered
    assert t.recovered == 0
    assert t.last_failure is not None
    assert t.last_failure.action == "start_failed"
    assert abs(t.seconds[report.HELD] - 3600) < 1
    # Up 59 + 60 minutes, down 61 (from the last ok): held time is left out.
    assert abs(t.to_dict()["availability"] - 119 / 180) < 0.001


def test_the_timeline_is_coloured_only_when_asked() -> None:
    states = ["up", "down", "unknown"]
    assert report.draw(states, colour=False) == "=X."
    coloured = report.draw(states, colour=True)
    assert "\x1b[32m█" in coloured
    assert "\x1b[31;1mX" in coloured
    assert coloured.endswith("\x1b[0m")


def test_no_color_turns_colour_off_even_on_a_terminal(monkeypatch: Any) -> None:
    primary, secondary = os.openpty()
    try:
        assert report.is_colour(secondary)
        monkeypatch.setenv("NO_COLOR", "1")
        assert not report.is_colour(secondary)
    finally:
        os.close(primary)
        os.close(secondary)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- what a hostile review found ---


def test_a_gzip_bomb_or_a_file_of_newlines_is_left_quickly_and_the_report_says_partial(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(_oks(END - timedelta(minutes=30), 30)) + "\n")
    (tmp_path / "audit.jsonl.2.gz").write_bytes(gzip.compress(b"x\n" * (10 << 20), 9))
    (tmp_path / "audit.jsonl.3.gz").write_bytes(gzip.compress(b"\n" * (400 << 20), 9))
    made = _build(log)  # (took 21 s and 1m47s before it was bounded; now it stops early)
    problems = "\n".join(made.unreadable_files)
    assert "audit.jsonl.2.gz: mostly not records" in problems
    assert "audit.jsonl.3.gz: decompresses to more than 64 MiB" in problems
    assert made.targets[0].records == 30  # what the log holds, still counted


def test_the_whole_report_stops_at_its_time_budget_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(_oks(END - timedelta(hours=20), 1200)) + "\n")
    (tmp_path / "audit.jsonl.1").write_text("\n".join(_oks(END - timedelta(hours=23), 60)) + "\n")
    made = _build(log, since=86400)
    assert made.unreadable_files == []
    made = report.build(log, ["agent"], since=86400, cells=24, now=END.timestamp(), budget=0)
    assert made.unreadable_files[0].endswith("not read to its end, the report's 0s ran out")
    assert made.unreadable_files[1] == f"{log}: not read, the report's 0s ran out"


def test_a_rotation_while_the_report_opens_its_files_neither_drops_nor_doubles_one(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The reviewer's race.py: a rotation just after the report opened its first file."""
    from guardian import audit

    log = tmp_path / "audit.jsonl"
    now = datetime.now(UTC)
    for m in range(600, 0, -1):  # ten hours, rotated at 64K
        r = audit.AuditRecord("t", "ok", "running: pidfile names pid 5", pid=5)
        r.ts = _iso(now - timedelta(minutes=m))
        audit.append(log, r, max_bytes=65536, keep=20)
    assert len(audit.log_files(log)) >= 3

    def summary(made: report.Report) -> tuple[list[int], int]:
        t = made.targets[0]
        return [round(x) for x in t.seconds], t.timeline.states().count("unknown")

    quiet = summary(report.build(log, ["t"], since=12 * 3600, cells=48))
    real, done = audit.open_log, [False]

    def racing(path: Path) -> Any:
        f = real(path)
        if not done[0]:
            done[0] = True
            audit.rotate(log, os.stat(log), 20)
        return f

    monkeypatch.setattr(audit, "open_log", racing)
    monkeypatch.setattr(report, "open_log", racing, raising=False)  # (where it was imported)
    made = report.build(log, ["t"], since=12 * 3600, cells=48)
    assert done[0]
    assert summary(made) == quiet
    assert made.unreadable_files == []


def test_unhealthy_held_and_backoff_lines_with_their_fields_take_the_fast_path(
    tmp_path: Path, monkeypatch: Any
) -> None:
    start = END - timedelta(hours=3)
    hold = {"by": "root (uid 0)", "since": _iso(start), "until": None, "reason": "x"}
    lines = (
        _oks(start, 60)
        + [
            _line(start + timedelta(minutes=60 + i), "unhealthy", probes=["command: exited 1"])
            for i in range(30)
        ]
        + [_line(start + timedelta(minutes=90 + i), "held", hold=hold) for i in range(30)]
        + [
            _line(start + timedelta(minutes=120 + i), "backoff", next_try=_iso(END))
            for i in range(30)
        ]
    )
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    slow = []
    real = report._record
    monkeypatch.setattr(report, "_record", lambda *a: slow.append(1) or real(*a))
    (t,) = _build(log).targets
    assert slow == []  # not one line decoded as JSON
    assert t.unhealthy_runs == 30
    assert [round(x) for x in t.seconds] == [90 * 60, 30 * 60, 30 * 60]  # up, down, held


def test_overlapping_runs_records_a_moment_out_of_order_are_not_a_clock_set_back(
    tmp_path: Path,
) -> None:
    start = END - timedelta(hours=2)
    lines = _oks(start, 60)
    # Two runs overlapping: the second's record dated 40 ms before the first's.
    lines += [_line(start + timedelta(minutes=60, milliseconds=40), "ok"),
              _line(start + timedelta(minutes=60), "ok")]  # fmt: skip
    lines += _oks(start + timedelta(minutes=61), 20)
    lines.append(_line(start + timedelta(minutes=70), "ok"))  # eleven minutes back
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    (t,) = _build(log).targets
    assert t.out_of_order == 1
    assert "1 record(s) more than a minute older than the one before" in "\n".join(
        report.lines(_build(log), colour=False))  # fmt: skip


def test_no_log_at_all_says_so_and_exits_1(g: Guardian) -> None:
    r = g.run("report")
    assert r.rc == 1
    assert f"no audit log at {g.state / 'audit.jsonl'} (is audit_log right?)" in r.stderr
    assert g.run("report", "--since", "soon").stderr.count('"7d"') == 1


def test_records_dated_1970_and_absurd_last_seen_and_down_since_are_not_believed(
    tmp_path: Path,
) -> None:
    start = END - timedelta(hours=2)
    lines = _oks(start, 30)
    lines.append(_line(datetime(1970, 1, 1, tzinfo=UTC), "start_failed"))
    lines += [_line(start + timedelta(minutes=30 + i), "start_failed") for i in range(5)]
    # last_seen after down_since, and in 2100: neither is believed; the outage runs from
    # the last ok (minute 29) as for a start without them.
    lines.append(_line(start + timedelta(minutes=35), "started", last_seen="2100-01-01T00:00:00Z",
                       down_since=_iso(start)))  # fmt: skip
    lines += _oks(start + timedelta(minutes=36), 30)
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    made = _build(log)
    (t,) = made.targets
    assert made.old_records == 1
    assert t.recovered == 1
    assert abs(t.rec_max - 6 * 60) < 1  # from the last ok, not from 1970 or 2100
    assert t.worst_precision <= 6 * 60 + 1


# --- what a second hostile review found ---


def test_a_death_a_watcher_saw_ending_in_backoff_then_a_hold_is_down_from_the_death(
    g: Guardian,
) -> None:
    """The reviewer's rep/a.toml: the watcher's proof of life counts, a backoff and a hold
    after a death say when it died, and a hold's time ends at its ``until``."""
    g.configure(start_grace="0.2s", restart={"backoff": "30s"})
    assert g.check().rc == 0
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    assert g.check().rc == 0  # started after a death (young once: at once)
    assert g.check().rc == 0  # ok: the last record of it alive
    watcher = _watching(g, "3s")
    time.sleep(1.0)  # alive all along, seen through its pidfd: in no record but the state's
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: "backoff" in g.actions(), what="the watcher's backoff (young twice)")
    watcher.wait(timeout=30)
    assert g.run("stop", "agent", "--for", "2s", "--reason", "test").rc == 0
    time.sleep(3)  # the hold expires before the next check
    assert g.check().rc == 0  # started: found not running, its hold expired
    assert g.check().rc == 0
    records = [r for r in g.audit() if r["action"] != "watch_ended"]
    assert [r["action"] for r in records] == [
        "started", "started", "ok", "ok", "backoff", "held", "started", "ok"
    ]  # fmt: skip
    death1, ok, backoff, held, after = records[1], records[3], records[4], records[5], records[6]
    # The watcher saw it alive until the kill (a second after its first look's ok), and
    # saw it die: known to the millisecond.
    assert _t(backoff["last_seen"]) - _t(ok["ts"]) > 0.9
    assert _t(backoff["down_since"]) - _t(backoff["last_seen"]) < 1.0
    # The stop found it dead: its hold ends that outage, and says when it died.
    assert (held["last_seen"], held["down_since"]) == (backoff["last_seen"], backoff["down_since"])
    assert "last_seen" not in after  # a start after a hold ends no outage
    until = _t(held["hold"]["until"])
    assert _t(held["ts"]) < until < _t(after["ts"])

    (t,) = _report(g, "--since", "1h")["targets"]
    secs = t["seconds"]
    down = (
        (_t(death1["ts"]) - _t(death1["last_seen"]))  # the first outage
        + (_t(held["ts"]) - _t(backoff["last_seen"]))  # the second: from the death to the hold
        + (_t(after["ts"]) - until)  # the hold over, not running until the next check
    )
    # (To 20 ms: each figure is rounded to the millisecond, and so is each record's time;
    # the fault this catches was two seconds.)
    assert abs(secs["down"] - down) < 0.02, (secs, down)
    assert abs(secs["held"] - (until - _t(held["ts"]))) < 0.02, secs
    assert t["outages"] == 2
    assert t["down_now_since"] is None
    assert t["recovery_s"]["recovered"] == 1  # the second was ended by the hold
    assert t["starts"] == {"died": 1, "unhealthy": 0, "by_hand": 0, "other": 2}
    up = secs["up"]
    assert abs(t["availability"] - up / (up + secs["down"])) < 0.001


def test_backoff_and_held_lines_after_a_death_are_decoded_and_a_hold_ends_at_its_until(
    tmp_path: Path, monkeypatch: Any
) -> None:
    start = END - timedelta(hours=2)

    def at(minute: float) -> datetime:
        return start + timedelta(minutes=minute)

    death = {"last_seen": _iso(at(60 + 10 / 60)), "down_since": _iso(at(60 + 20 / 60))}
    # As guardian writes it (by, at, until, reason), with a brace and a quote in a string.
    hold = {"by": 'root (uid 0) {"x"}', "at": _iso(at(65)), "until": "2026-12-06T23:10:00Z",
            "reason": "}"}  # fmt: skip
    assert _t(hold["until"]) == at(70).timestamp()
    lines = _oks(start, 60)
    lines += [_line(at(60.5 + i), "backoff", next_try=_iso(at(70)), **death) for i in range(4)]
    lines.append(_line(at(65), "held", hold=hold, **death))  # the stop found it dead
    lines += [_line(at(66 + i), "held", hold=hold) for i in range(4)]  # checks: held
    lines.append(_line(at(72), "started", reason="x; its hold has expired (...)"))
    lines += _oks(at(73), 47)
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    decoded: list[bytes] = []
    real = report._record
    monkeypatch.setattr(report, "_record", lambda line, d: decoded.append(line) or real(line, d))
    (t,) = _build(log).targets
    assert len(decoded) == 6  # four backoffs and the stop's held (after a death), the start
    up, down, held = t.seconds
    # Up to its last_seen (not the last ok), down to the hold; held to 70, then down
    # until the start at 72 (the hold over, nobody had started it); up to the end.
    assert abs(down - (290 + 120)) < 0.01, t.seconds
    assert abs(held - 300) < 0.01, t.seconds
    assert abs(up - (3610 + 48 * 60)) < 0.01, t.seconds
    d = t.to_dict()
    assert d["outages"] == 1
    assert t.recovered == 0  # ended by the hold
    assert t.starts["other"] == 1

    # A hold that ended after the last record: held to its until, unknown after.
    log.write_text("\n".join(lines[:69]) + "\n")
    (t,) = report.build(log, ["agent"], since=7200, cells=120, now=END.timestamp()).targets
    assert [round(x) for x in t.seconds] == [3610, 290, 300]
    assert t.timeline.states()[65:] == ["held"] * 5 + ["unknown"] * 50  # a cell a minute

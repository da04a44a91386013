"""How long does `guardian report` take over a year of one-minute records?

    .venv/bin/python bench/report_speed.py [--runs 5] [--smoke]

A synthetic year for one target, one record a minute as guardian writes them
(525,600 lines): `ok` lines, an outage every ~3 days (`started` with last_seen and
down_since), a two-hour hold every ~2 weeks (`held` records each minute, then a
start by hand), a burst of unhealthy runs ending in a restart, and some torn,
foreign (another target, not JSON) lines. Two layouts of the same records: one
plain log, and logrotate's (`audit.jsonl`, `.1`, then `.2.gz` ...); and a third log,
a year of nothing but `held` (with its `hold`) and `unhealthy` (with its `probes`)
records, by the week, the common lines that are not `ok`. Each is
reported on by the real command (`guardian report --since 366d --json`, a whole
process, bytecode cached), interleaved; the median wall time and the peak RSS
(ru_maxrss from wait4). The goal (issue 10): under 2 s, bounded memory.
``--smoke``: a month, two runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import benchlib

GOAL_S = 2.0


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _line(t: datetime, action: str, reason: str, **extra: object) -> str:
    data: dict[str, object] = {
        "ts": _ts(t), "host": "web1", "guardian_pid": 4000 + t.minute, "version": "0.1.0",
        "target": extra.pop("target", "supervisord"), "action": action, "reason": reason,
        "pid": extra.pop("pid", 4861), "old_pid": extra.pop("old_pid", None),
        "duration_ms": extra.pop("duration_ms", 0), "dry_run": False,
    }  # fmt: skip
    data.update(extra)
    return json.dumps(data, separators=(", ", ": "))


def generate(minutes: int, end: datetime) -> tuple[list[str], dict[str, int]]:
    """The log's lines, oldest first, and what was put in (for the report to find)."""
    t0 = end - timedelta(minutes=minutes)
    lines: list[str] = []
    put = {"outages": 0, "held_minutes": 0, "torn": 0, "foreign": 0, "unhealthy_restarts": 0}
    hold_left = 0
    last_ok = t0
    for i in range(minutes):
        t = t0 + timedelta(minutes=i, milliseconds=100 + i * 37 % 800)
        if hold_left:
            hold_left -= 1
            put["held_minutes"] += 1
            hold = {"by": "root", "at": _ts(t), "until": None, "reason": "maintenance"}
            if hold_left:
                lines.append(_line(t, "held", "held by root: maintenance", hold=hold))
            else:
                lines.append(_line(t, "started", "started by hand: it was not running",
                                   duration_ms=1100))  # fmt: skip
            continue
        if i % 4320 == 2000:  # every 3 days: it died since the last run
            put["outages"] += 1
            dead = _ts(t - timedelta(seconds=1.2))
            lines.append(_line(t, "started", "pidfile names pid 4861, which is not running; "
                               "ready after 1.1s", old_pid=4861, duration_ms=1100,
                               last_seen=_ts(last_ok), down_since=dead))  # fmt: skip
        elif i % 20160 == 10000:  # every 2 weeks: a hold of two hours
            hold_left = 120
        elif i % 10080 == 500:  # weekly: unhealthy, then restarted
            lines.append(_line(t, "unhealthy", "command: exited 1 (1 of 2 failing runs)",
                               probes=["command: FAILED: exited 1 (12 ms)"]))  # fmt: skip
        elif i % 10080 == 501:
            put["unhealthy_restarts"] += 1
            lines.append(_line(t, "restarted_unhealthy", "unhealthy: ...; ready after 1.0s",
                               old_pid=4861, duration_ms=3000))  # fmt: skip
        else:
            lines.append(_line(t, "ok", "running: pidfile names pid 4861"))
            last_ok = t
        if i % 9973 == 7:
            put["torn"] += 1
            lines.append(_line(t, "ok", "running")[:57])
        if i % 7919 == 3:
            put["foreign"] += 2
            lines.append(_line(t, "ok", "running", target="another"))
            lines.append("Dec  7 04:14:57 web1 CRON[123]: (root) CMD (guardian check)")
    return lines, put


def not_ok(minutes: int, end: datetime) -> list[str]:
    """A week held, a week unhealthy, and so on: every line a held or unhealthy one."""
    t0 = end - timedelta(minutes=minutes)
    lines = []
    for i in range(minutes):
        t = t0 + timedelta(minutes=i, milliseconds=100 + i * 37 % 800)
        if i // 10080 % 2:
            hold = {"by": "root", "at": _ts(t0), "until": None, "reason": "maintenance"}
            lines.append(_line(t, "held", "held by root: maintenance", hold=hold, pid=None))
        else:
            lines.append(_line(t, "unhealthy", "command: exited 1 (1 of 3 failing runs)",
                               probes=["command: FAILED: exited 1 (12 ms)"]))  # fmt: skip
    return lines


def write_layouts(folder: Path, lines: list[str], others: list[str]) -> dict[str, Path]:
    """One plain log; and the same rotated: the live log the newest 10%, `.1` the
    next, and the rest in `.2.gz` (mtimes as logrotate would leave them)."""
    configs = {}
    for name in ("plain", "rotated", "held+unhealthy"):
        state = folder / name / "state"
        state.mkdir(parents=True)
        log = state / "audit.jsonl"
        if name == "plain":
            log.write_text("\n".join(lines) + "\n")
        elif name == "held+unhealthy":
            log.write_text("\n".join(others) + "\n")
        else:
            n = len(lines)
            parts = [(log.with_name("audit.jsonl.2.gz"), lines[: n * 8 // 10]),
                     (log.with_name("audit.jsonl.1"), lines[n * 8 // 10 : n * 9 // 10]),
                     (log, lines[n * 9 // 10 :])]  # fmt: skip
            for path, chunk in parts:
                text = ("\n".join(chunk) + "\n").encode()
                if path.name.endswith(".gz"):
                    path.write_bytes(gzip.compress(text, compresslevel=6))
                else:
                    path.write_bytes(text)
        config = folder / name / "guardian.toml"
        config.write_text(f'[guardian]\nstate_dir = "{state}"\n\n[targets.supervisord]\n'
                          f'command = ["{sys.executable}", "-c", "pass"]\n')  # fmt: skip
        configs[name] = config
    return configs


def main() -> int:  # noqa: PLR0915
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="a month, two runs")
    p.add_argument("--baseline", metavar="DIR",
                   help="also time the guardian source tree in DIR (git worktree add DIR REV), "
                   "interleaved, on the plain log")  # fmt: skip
    p.add_argument("--write", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--minutes", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        lines, put = generate(args.minutes, end)
        write_layouts(Path(args.write), lines, not_ok(args.minutes, end))
        print(json.dumps([len(lines), put]))
        return 0
    minutes = 30 * 1440 if args.smoke else 365 * 1440
    runs = 2 if args.smoke else args.runs
    print(f"machine: {benchlib.machine()}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardian-report-bench-") as tmp:
        # Written by a child: ru_maxrss counts what a forked child inherits, so this
        # process must stay small for the reports' peak memory to be theirs.
        write = [sys.executable, __file__, "--write", tmp, "--minutes", str(minutes)]
        said = subprocess.run(write, check=True, capture_output=True, text=True)
        count, put = json.loads(said.stdout)
        configs = {name: Path(tmp) / name / "guardian.toml"
                   for name in ("plain", "rotated", "held+unhealthy")}  # fmt: skip
        if args.baseline:
            configs["baseline: plain"] = configs["plain"]
        size = (Path(tmp) / "plain" / "state" / "audit.jsonl").stat().st_size
        print(f"log: {count} lines, {size / 2**20:.1f} MiB ({minutes} minutes); "
              f"written in {time.perf_counter() - began:.1f}s; put in: {put}")  # fmt: skip
        since = f"{minutes // 1440 + 1}d"
        times: dict[str, list[float]] = {k: [] for k in configs}
        rss: dict[str, float] = dict.fromkeys(configs, 0.0)
        last: dict[str, dict[str, object]] = {}
        for i in range(runs + 1):  # the first round writes the bytecode: not timed
            for name, config in configs.items():
                argv = [benchlib.GUARDIAN, "report", "--since", since, "--json",
                        "--width", "100", "--config", str(config)]  # fmt: skip
                env = None
                if name.startswith("baseline"):  # the other tree's package, first on the path
                    argv[:1] = [sys.executable, "-m", "guardian"]
                    env = {**benchlib.ENV, "PYTHONPATH": str(Path(args.baseline).resolve())}
                seconds, peak, out = _measure(argv, env)
                if i:
                    times[name].append(seconds)
                    rss[name] = max(rss[name], peak)
                last[name] = json.loads(out)
    print("| log | median wall time | peak RSS |\n| --- | ---: | ---: |")
    for name in configs:
        print(f"| {name} ({count} lines) | {statistics.median(times[name]) * 1000:.0f} ms "
              f"| {rss[name]:.1f} MiB |")  # fmt: skip
    if args.baseline:
        ratio = statistics.median(times["plain"]) / statistics.median(times["baseline: plain"])
        print(f"plain vs. baseline ({args.baseline}), medians: {ratio:.2f}x")
    worst = max(statistics.median(v) for k, v in times.items() if not k.startswith("baseline"))
    print(f"goal under {GOAL_S:g} s (whole command): worst median {worst * 1000:.0f} ms: "
          f"{benchlib.verdict(worst < GOAL_S)}")  # fmt: skip
    for name, data in last.items():
        (t,) = data["targets"]  # type: ignore[misc]
        if name == "held+unhealthy":
            print(f"{name}: availability {t['availability']}, unhealthy runs "
                  f"{t['unhealthy_runs']}, held {t['seconds']['held']:.0f}s")  # fmt: skip
            continue
        print(f"{name}: availability {t['availability']}, outages {t['outages']}, starts "
              f"{t['starts']}, unreadable lines {data['unreadable_lines']}, foreign "
              f"{data['foreign_targets']}")  # fmt: skip
    return 0


def _measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, bytes]:
    """Wall seconds, peak RSS (MiB) and stdout of one run, which must exit 0."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env or benchlib.ENV, cwd="/")
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed ({proc.returncode}): {err.read().decode()}")
        return seconds, usage.ru_maxrss / 1024, out.read()


if __name__ == "__main__":
    raise SystemExit(main())

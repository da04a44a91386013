"""The benchmarks in bench/ run, end to end, at their --smoke size, and measure something.

Only that a number was measured: whether it meets issue 9's goal is the full
benchmark's business (bench/RESULTS.md), not a test's on two noisy cores. A
second copy of a target or a death started twice does fail a benchmark (exit 1),
and so these tests.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
NUMBER = r"(\d+(?:\.\d+)?)"


def smoke(script: str, *args: str, timeout: float = 120.0) -> str:
    """Run ``bench/<script> --smoke``; its stdout, once it has exited 0."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / script), "--smoke", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Ctrl-C: the benchmark ends what it started (its finally blocks), then exits.
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{script} --smoke took over {timeout:g}s:\n{out}\n{err}")
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{out}\n{err}"
    return out


def measured(pattern: str, out: str) -> list[float]:
    """The numbers ``pattern`` finds in ``out``; at least one line must match."""
    found = re.findall(pattern, out)
    assert found, f"no line matches {pattern!r} in:\n{out}"
    return [float(x) for m in found for x in ((m,) if isinstance(m, str) else m)]


def test_recovery() -> None:
    out = smoke("recovery.py")
    running = measured(rf"guardian, kill -> new process running: p50 {NUMBER} ms", out)
    ready = measured(rf"guardian, kill -> ready .*: p50 {NUMBER} ms", out)
    assert running[0] > 0
    assert ready[0] >= running[0]
    assert re.search(r"goal p50 <= 100 ms \(running\): .*: (MET|MISSED)", out), out
    assert measured(r"pids started twice: (\d+);", out) == [0]
    if "comparison skipped" not in out:  # supervisord is installed (CI: .venv/bin)
        assert measured(rf"supervisord .*kill -> new child running: p50 {NUMBER} ms", out)[0] > 0
        measured(rf"ratio of medians, supervisord / guardian \(running\): {NUMBER}x", out)


def test_recovery_without_supervisord(tmp_path: Path) -> None:
    out = smoke("recovery.py", "--supervisord", str(tmp_path / "no-supervisord"))
    assert "supervisord: comparison skipped:" in out
    assert measured(rf"guardian, kill -> new process running: p50 {NUMBER} ms", out)[0] > 0
    assert "ratio of medians" not in out


def test_handover() -> None:
    out = smoke("handover.py")
    p50, p99, worst = measured(
        rf"kill -> new process running: p50 {NUMBER} ms, p99 {NUMBER} ms, worst {NUMBER} ms", out
    )
    assert 0 < p50 <= p99 <= worst
    most, looks = measured(rf"copies: at most {NUMBER} at once in {NUMBER} looks", out)
    assert most == 1
    assert looks > 100
    assert measured(rf"`started` records: {NUMBER} for", out)[0] >= 2
    assert measured(r"deaths started twice: (\d+)", out) == [0]


def test_cold_start() -> None:
    out = smoke("cold_start.py")
    cold = measured(rf"cold start, \d+ targets .*: median {NUMBER} ms", out)
    healthy = measured(rf"healthy check, \d+ targets: median {NUMBER} ms", out)
    assert len(cold) == 2
    assert len(healthy) == 2
    assert all(x > 0 for x in cold + healthy)
    measured(rf"goal healthy \d+ <= 2x healthy 1: {NUMBER}x", out)


def test_watch_cost() -> None:
    out = smoke("watch_cost.py")
    cpu = measured(rf"cpu per hour, (?:1 target|10 targets): {NUMBER} s", out)
    assert len(cpu) == 2
    assert all(x >= 0 for x in cpu)
    growth = measured(r"peak memory growth, .*: (-?\d+) KiB", out)
    assert len(growth) == 2
    rss = measured(rf"\| 1 target \| {NUMBER} s \| {NUMBER} s \| {NUMBER} s \| {NUMBER} MiB", out)
    assert rss[3] > 1  # MiB at the first sample: a real process was measured
    assert "exit(s) noticed" in out  # each watcher's watch_ended record, shown


def test_report_speed() -> None:
    out = smoke("report_speed.py")
    wall = measured(rf"\| (?:plain|rotated) \(\d+ lines\) \| {NUMBER} ms \| {NUMBER} MiB \|", out)
    assert len(wall) == 4
    assert all(x > 0 for x in wall)
    assert re.search(r"goal under 2 s \(whole command\): .*: (MET|MISSED)", out), out
    assert "outages 10," in out  # the month's ten deaths, found in both layouts

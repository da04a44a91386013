"""The agent's side of a heartbeat probe (guardian.heartbeat), and the demo agent that uses it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from guardian.heartbeat import beat, keep_beating

from conftest import Guardian, wait_for

LONG_AGO = 1_000_000_000.0  # 2001


def test_beat_makes_the_file_then_moves_its_time_to_now(tmp_path: Path) -> None:
    path = tmp_path / "agent.heartbeat"
    beat(path)
    assert path.is_file()
    os.utime(path, (LONG_AGO, LONG_AGO))
    beat(path)
    assert time.time() - path.stat().st_mtime < 60


def test_keep_beating_beats_until_told_to_stop(tmp_path: Path) -> None:
    path = tmp_path / "agent.heartbeat"
    stop = keep_beating(path, every=0.05)
    try:
        wait_for(path.exists, what="the first beat")
        os.utime(path, (LONG_AGO, LONG_AGO))
        wait_for(lambda: path.stat().st_mtime > LONG_AGO, what="the next beat")
    finally:
        stop.set()
    time.sleep(0.2)  # a beat under way ends
    os.utime(path, (LONG_AGO, LONG_AGO))
    time.sleep(0.3)  # six beats' time
    assert path.stat().st_mtime == LONG_AGO  # stopped


def test_the_heartbeat_command_is_what_a_heartbeat_probe_reads(g: Guardian) -> None:
    """A shell agent's `guardian heartbeat PATH`, and guardian's probe of that file."""
    path = g.tmp / "agent.heartbeat"
    g.configure(health={"heartbeat_file": str(path), "max_age": "30s", "failures": 1})
    assert g.check().rc == 0  # started (a start is not probed)
    done = subprocess.run([sys.executable, "-m", "guardian", "heartbeat", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert g.check().rc == 0  # fresh: healthy
    os.utime(path, (LONG_AGO, LONG_AGO))
    pid = g.pid()
    assert g.check().rc == 0  # stale, failures = 1: restarted
    assert g.actions()[-1] == "restarted_unhealthy"
    assert g.pid() != pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_demo_agent_answers_beats_and_ends_on_sigterm(tmp_path: Path) -> None:
    port, path = free_port(), tmp_path / "demo.heartbeat"
    agent = subprocess.Popen(
        [sys.executable, "-m", "guardian.demo_agent", "--port", str(port), "--heartbeat",
         str(path)], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline() == f"demo agent {agent.pid} listening on 127.0.0.1:{port}\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            assert answer.status == 200
            assert answer.read() == f"demo agent {agent.pid} is alive\n".encode()
        wait_for(path.exists, what="its heartbeat")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        assert agent.stdout.readline().startswith(f"demo agent {agent.pid} stopping after ")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        agent.stdout.close()  # type: ignore[union-attr]


def test_an_agent_that_imports_guardian_keeps_its_own_ctrl_c(tmp_path: Path) -> None:
    # guardian's command ends a start-up Ctrl-C in one line; an agent importing the
    # heartbeat module must keep Python's own handling (its cleanup, its traceback).
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import sys\nimport guardian.heartbeat\n"
        "assert sys.excepthook is sys.__excepthook__\nraise KeyboardInterrupt\n"
    )
    result = subprocess.run(
        [sys.executable, str(agent)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == -signal.SIGINT, result.stderr  # as Python ends on Ctrl-C
    assert "Traceback" in result.stderr
    assert "KeyboardInterrupt" in result.stderr

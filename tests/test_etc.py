"""The shipped configs load, and the demo works as the README says: none of them rots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from guardian.config import load

from conftest import Reaper, alive, wait_for

ETC = Path(__file__).parent.parent / "etc"


def test_example_config_loads() -> None:
    config = load(ETC / "guardian.toml")
    (target,) = config.targets
    assert target.name == "supervisord"
    assert target.command == ("/usr/bin/supervisord", "-c", "/etc/supervisor/supervisord.conf")
    assert target.daemonizes
    assert target.env["LANG"] == "C.UTF-8"
    assert config.settings.timeout == 50
    assert config.settings.audit_log == Path("/var/lib/guardian/audit.jsonl")


def test_demo_starts_finds_healthy_and_restarts_after_a_kill(
    tmp_path: Path, reaper: Reaper
) -> None:
    # The README's first command, on a copy of etc/ whose ../.venv is this virtualenv.
    (tmp_path / "etc").mkdir()
    shutil.copy(ETC / "demo.toml", tmp_path / "etc" / "demo.toml")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    config = tmp_path / "etc" / "demo.toml"
    text = config.read_text().replace('"8765"', '"18765"')  # not the port of a demo you run
    config.write_text(text)
    guardian = [sys.executable, "-m", "guardian", "check", "-v", "--config", str(config)]
    pidfile = tmp_path / ".demo-state" / "pids" / "demo-agent.pid"

    def check() -> subprocess.CompletedProcess[str]:
        result = subprocess.run(guardian, capture_output=True, text=True, timeout=60, check=False)
        if pidfile.exists():
            reaper.track(int(pidfile.read_text()))
        return result

    first = check()
    assert first.returncode == 0, first.stderr
    assert "demo-agent: started" in first.stderr
    pid = int(pidfile.read_text())
    heartbeat = tmp_path / ".demo-state" / "demo-agent.heartbeat"
    wait_for(heartbeat.exists, what="the heartbeat file")
    second = check()
    assert "demo-agent: ok: running" in second.stderr
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: not alive(pid), what="the demo agent to die")
    third = check()
    assert "demo-agent: started" in third.stderr
    assert int(pidfile.read_text()) != pid

"""The shipped configs load, and the demo works as the README says: none of them rots."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guardian.config import load

from conftest import Guardian, Reaper, SharedInstall, alive, wait_for

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
    text = config.read_text().replace("8765", "18765")  # not the port of a demo you run
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


def test_cron_d_example_is_what_install_writes() -> None:
    from guardian import cron

    lines = [
        line
        for line in (ETC / "cron.d" / "guardian").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    config = Path("/etc/guardian/guardian.toml")
    command = shlex.join(["/opt/guardian/bin/guardian", "check", "--config", str(config)])
    every = cron.parse_interval("1m")
    assert lines == [cron.render_line(every.schedule, command, config, system_user="root")]
    cron.check_cron_file_path(ETC / "cron.d" / "guardian")  # a name cron reads


def _systemd_copy(tmp_path: Path, config: Path) -> Path:
    guardian = Path(sys.executable).parent / "guardian"
    for name in ("guardian.service", "guardian.timer"):
        text = (ETC / "systemd" / name).read_text()
        text = text.replace("/opt/guardian/bin/guardian", str(guardian))
        text = text.replace("/etc/guardian/guardian.toml", str(config))
        (tmp_path / name).write_text(text)
    return tmp_path / "guardian.service"


def test_systemd_units_verify_and_their_command_runs(g: Guardian) -> None:
    service = _systemd_copy(g.tmp, g.config_path)
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(service), str(g.tmp / "guardian.timer")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
    unit = configparser.ConfigParser(strict=False)
    unit.read_string(service.read_text())
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["KillMode"] == "process"  # the target outlives the run
    # ExecStart, as systemd would run it, is a working guardian check.
    result = subprocess.run(
        shlex.split(unit["Service"]["ExecStart"]), capture_output=True, text=True, check=False
    )
    g.track()
    assert result.returncode == 0, result.stderr
    assert alive(g.pid())


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate (.ci/run has it)")
def test_logrotate_rotates_the_audit_log_and_guardian_writes_a_new_one(g: Guardian) -> None:
    audit = g.state / "audit.jsonl"
    assert g.check().rc == 0
    assert g.check().rc == 0
    conf = g.tmp / "logrotate.conf"
    conf.write_text(
        (ETC / "logrotate.d" / "guardian")
        .read_text()
        .replace("/var/lib/guardian/audit.jsonl", str(audit))
    )
    rotate = subprocess.run(
        ["logrotate", "--force", "--state", str(g.tmp / "logrotate.state"), str(conf)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert rotate.returncode == 0, rotate.stderr
    assert len((g.state / "audit.jsonl.1").read_text().splitlines()) == 2
    assert audit.read_text() == ""  # `create`: a fresh, empty log
    assert g.check().rc == 0
    assert [json.loads(line)["action"] for line in audit.read_text().splitlines()] == ["ok"]


def test_install_sh_system_install_copies_the_config_once(shared_install: SharedInstall) -> None:
    assert f"wrote the example config to {shared_install.config}" in shared_install.output
    assert shared_install.config.read_text() == (ETC / "guardian.toml").read_text()
    # Every user can run it: that is what a crontab of another user needs.
    probe = subprocess.run(
        ["runuser", "-u", "nobody", "--", shared_install.guardian, "--version"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    # Rerun: the operator's config is never overwritten.
    shared_install.config.write_text(
        shared_install.config.read_text().replace('timeout = "50s"', 'timeout = "40s"')
    )
    again = subprocess.run(
        ["sh", str(ETC.parent / "install.sh"), "--prefix", str(shared_install.prefix),
         "--config", str(shared_install.config), "--no-cron"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"keeping the existing {shared_install.config}" in again.stdout
    assert 'timeout = "40s"' in shared_install.config.read_text()


def test_install_sh_refuses_a_bad_config(shared_install: SharedInstall, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[guardian]\ntimeout = 'soon'\n")
    result = subprocess.run(
        ["sh", str(ETC.parent / "install.sh"), "--prefix", str(shared_install.prefix),
         "--config", str(bad), "--no-cron"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "guardian.timeout: 'soon' is not a duration" in result.stderr
    assert f"install.sh: {bad} needs fixing" in result.stderr


def test_readme_documents_every_audit_action() -> None:
    from guardian.audit import ACTIONS

    readme = (ETC.parent / "README.md").read_text()
    assert [a for a in ACTIONS if f"`{a}`" not in readme] == []

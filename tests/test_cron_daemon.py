"""The proof: the real cron daemon runs guardian, which brings a killed supervisord back.

These tests wait for cron's minute boundaries, so each takes one to two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from guardian.discovery import Matcher, scan

from conftest import (
    Reaper,
    SharedInstall,
    alive,
    wait_for,
    write_config,
    write_supervisord_conf,
)


def test_cron_restarts_a_killed_supervisord_and_two_entries_never_start_two(
    cron_daemon: int,
    system_user: str,
    shared_install: SharedInstall,
    shared_dir: Path,
    reaper: Reaper,
) -> None:
    work = shared_dir / "work"
    work.mkdir()
    shutil.chown(work, system_user)  # supervisord and guardian's state belong to the user
    conf = write_supervisord_conf(shared_dir / "supervisord.conf", work)
    supervisord = [str(shared_install.prefix / "bin" / "supervisord"), "-c", str(conf)]
    pidfile = work / "supervisord.pid"
    config = write_config(
        shared_dir / "guardian.toml",
        {"state_dir": str(work / "state"), "timeout": "50s"},
        {"supervisord": {"command": supervisord, "daemonizes": True, "pidfile": str(pidfile),
                         "start_grace": "1s"}},
    )  # fmt: skip
    config.chmod(0o644)
    cron_file = Path(f"/etc/cron.d/guardian-test-{system_user}")
    g = shared_install.guardian

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    installed = run(
        g, "install", "--interval", "1m", "--user", system_user, "--config", str(config)
    )
    assert installed.returncode == 0, installed.stderr
    try:
        # A second entry for the same config: both fire at the same second, every minute.
        second = run(g, "install", "--interval", "1m", "--cron-file", str(cron_file),
                     "--user", system_user, "--config", str(config))  # fmt: skip
        assert second.returncode == 0, second.stderr
        first = run("runuser", "-u", system_user, "--", g, "check", "--config", str(config))
        assert first.returncode == 0, first.stderr
        # (If cron fired at that very second, this run was `skipped` and cron's is starting it.)
        old = wait_for(lambda: pidfile.exists() and int(pidfile.read_text()), what="a pidfile")
        reaper.track(old)

        audit = work / "state" / "audit.jsonl"
        before_kill = len(audit.read_text().splitlines())
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not alive(old), what="supervisord to die")
        most = 0

        def back() -> int | None:
            nonlocal most
            copies = scan(Matcher(tuple(supervisord)))
            for copy in copies:
                reaper.track(copy.pid)
            most = max(most, len(copies))
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError):
                return None
            return pid if pid != old and alive(pid) else None

        new = wait_for(back, timeout=125, what="cron to run guardian and restart supervisord")
        # Keep watching through the minute in which both entries raced.
        end = time.monotonic() + 10
        while time.monotonic() < end:
            back()
            time.sleep(0.1)
        assert most == 1, f"{most} supervisords ran at once"
        assert len(scan(Matcher(tuple(supervisord)))) == 1

        lines = audit.read_text().splitlines()[before_kill:]
        since_kill = [json.loads(line) for line in lines]
        started = [r for r in since_kill if r["action"] == "started"]
        assert len(started) == 1, since_kill
        assert started[0]["pid"] == new
        assert started[0]["old_pid"] == old
        # The other entry's run of that minute saw the lock held, or the new supervisord.
        assert {r["action"] for r in since_kill} <= {"started", "skipped", "ok"}, since_kill
        assert len(since_kill) >= 2, since_kill
    finally:
        run(g, "uninstall", "--user", system_user, "--config", str(config))
        cron_file.unlink(missing_ok=True)
        for copy in scan(Matcher(tuple(supervisord))):  # whatever cron started, however it ended
            reaper.track(copy.pid)

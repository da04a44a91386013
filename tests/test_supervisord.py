"""A real supervisord (PyPI's supervisor) guarded by guardian: kill -9 it, get it back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import AGENT, Guardian, alive, wait_for

BIN = Path(sys.executable).parent


def supervisorctl(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def write_supervisord_conf(folder: Path) -> Path:
    conf = folder / "supervisord.conf"
    conf.write_text(
        f"""\
[unix_http_server]
file=%(here)s/supervisor.sock

[supervisord]
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/supervisor.sock

[program:worker]
command={sys.executable} {AGENT} --tag {folder}/worker
"""
    )
    return conf


def worker_pid(conf: Path) -> int:
    answer = supervisorctl(conf, "pid", "worker").stdout.strip()
    return int(answer) if answer.isdigit() and answer != "0" else 0


def test_killed_supervisord_is_restarted_and_answers(g: Guardian) -> None:
    conf = write_supervisord_conf(g.tmp)
    pidfile = g.tmp / "supervisord.pid"
    g.configure(
        command=[str(BIN / "supervisord"), "-c", str(conf)],
        daemonizes=True,
        pidfile=str(pidfile),
        start_grace="1s",
        start_timeout="20s",
    )
    first = g.check()
    assert first.rc == 0, first.stderr
    old = int(pidfile.read_text())
    g.reaper.track(old)
    # supervisord is a #! script: it runs as `python .../supervisord -c conf`, and is found so.
    assert Path(f"/proc/{old}/cmdline").read_bytes().split(b"\0")[1].endswith(b"supervisord")
    wait_for(lambda: "RUNNING" in supervisorctl(conf, "status").stdout, what="worker RUNNING")
    g.reaper.track(worker_pid(conf))
    assert g.check().stderr == ""  # healthy: left alone, quietly

    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="supervisord to die")
    again = g.check()
    assert again.rc == 0, again.stderr
    new = int(pidfile.read_text())
    g.reaper.track(new)
    assert new != old
    record = g.audit()[-1]
    assert (record["action"], record["pid"], record["old_pid"]) == ("started", new, old)
    status = wait_for(
        lambda: (r := supervisorctl(conf, "status")).returncode == 0 and r,
        what="supervisorctl status to answer",
    )
    g.reaper.track(worker_pid(conf))
    assert "worker" in status.stdout
    assert [m.pid for m in g.matches()] == [new]

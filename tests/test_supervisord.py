"""A real supervisord (PyPI's supervisor) guarded by guardian: kill -9 it, get it back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import AGENT, Guardian, alive, wait_for, write_supervisord_conf

BIN = Path(sys.executable).parent


def supervisorctl(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def worker_pid(conf: Path) -> int:
    answer = supervisorctl(conf, "pid", "worker").stdout.strip()
    return int(answer) if answer.isdigit() and answer != "0" else 0


def guard_supervisord(g: Guardian, conf: Path, **target: object) -> Path:
    """Point ``g``'s target at a supervisord with ``conf``; its pidfile's path."""
    pidfile = g.tmp / "supervisord.pid"
    g.configure(
        command=[str(BIN / "supervisord"), "-c", str(conf)],
        daemonizes=True,
        pidfile=str(pidfile),
        start_grace="1s",
        start_timeout="20s",
        **target,
    )
    return pidfile


def test_killed_supervisord_is_restarted_and_answers(g: Guardian) -> None:
    worker = [sys.executable, str(AGENT), "--tag", f"{g.tmp}/worker"]
    conf = write_supervisord_conf(g.tmp / "supervisord.conf", g.tmp, programs={"worker": worker})
    pidfile = guard_supervisord(g, conf)
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hung_supervisord_is_restarted_and_each_agent_runs_once(g: Guardian) -> None:
    from guardian.discovery import Matcher, scan

    port = free_port()
    agents = {name: [sys.executable, str(AGENT), "--tag", f"{g.tmp}/{name}"]
              for name in ("one", "two")}  # fmt: skip
    conf = write_supervisord_conf(
        g.tmp / "supervisord.conf", g.tmp, programs=agents, http_port=port
    )
    pidfile = guard_supervisord(
        g,
        conf,
        stop_timeout="5s",
        health={"http": f"http://127.0.0.1:{port}/", "timeout": "2s", "failures": 2},
    )

    def copies() -> dict[str, list[int]]:
        found = {n: [m.pid for m in scan(Matcher(tuple(argv)))] for n, argv in agents.items()}
        for pids in found.values():
            for pid in pids:
                g.reaper.track(pid)
        return found

    def each_agent_once() -> bool:
        return all(len(pids) == 1 for pids in copies().values())

    assert g.check().rc == 0
    old = int(pidfile.read_text())
    g.reaper.track(old)
    wait_for(each_agent_once, timeout=30, what="both agents running")
    assert g.check().stderr == ""  # answers its http port: healthy

    # Hung: SIGSTOP. Its port still accepts connections (the kernel completes them),
    # so only a probe that waits for an answer can tell.
    os.kill(old, signal.SIGSTOP)
    one = g.check()
    assert one.rc == 1
    assert g.audit()[-1]["action"] == "unhealthy"
    assert "http: FAILED: GET" in g.audit()[-1]["probes"][0]
    two = g.check()
    assert two.rc == 0, two.stderr
    record = g.audit()[-1]
    assert (record["action"], record["old_pid"]) == ("restarted_unhealthy", old)
    new = int(pidfile.read_text())
    g.reaper.track(new)
    assert not alive(old)
    wait_for(each_agent_once, timeout=30, what="each agent running once under the new supervisord")
    assert status_ok(conf)

    # Killed outright, supervisord leaves its agents behind: they are ended before the
    # new supervisord starts its own, so there is still one copy of each.
    before = copies()
    os.kill(new, signal.SIGKILL)
    wait_for(lambda: not alive(new), what="supervisord to die")
    assert copies() == before  # orphans: still running
    assert g.check().rc == 0
    record = g.audit()[-1]
    assert record["action"] == "started"
    assert sorted(record["orphans"]) == sorted(pid for pids in before.values() for pid in pids)
    g.reaper.track(int(pidfile.read_text()))
    wait_for(each_agent_once, timeout=30, what="each agent running once again")
    assert all(set(pids).isdisjoint(before[n]) for n, pids in copies().items())


def status_ok(conf: Path) -> bool:
    return wait_for(lambda: supervisorctl(conf, "status").returncode == 0, timeout=15)


def test_supervisord_started_by_its_init_script_is_adopted_and_cleaned_up_after(
    g: Guardian,
) -> None:
    # As Debian's package does: supervisord started outside guardian, daemonizing itself
    # into a session of its own, its pidfile its own. Killed, it leaves its agents;
    # guardian learnt it at first sight, so it ends them before starting a new one.
    from guardian.discovery import Matcher, scan

    worker = [sys.executable, str(AGENT), "--tag", f"{g.tmp}/worker"]
    conf = write_supervisord_conf(g.tmp / "supervisord.conf", g.tmp, programs={"worker": worker})
    pidfile = guard_supervisord(g, conf)

    def workers() -> list[int]:
        pids = [m.pid for m in scan(Matcher(tuple(worker)))]
        for pid in pids:
            g.reaper.track(pid)
        return pids

    subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True, timeout=30)
    old = wait_for(lambda: pidfile.exists() and int(pidfile.read_text()), what="its pidfile")
    g.reaper.track(old)
    first_worker = wait_for(lambda: (w := workers()) and w[0], timeout=30, what="its agent")
    assert g.check().rc == 0
    assert g.actions() == ["ok"]  # found by its pidfile: quiet, and learnt

    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="supervisord to die")
    assert workers() == [first_worker]  # its agent lives on, an orphan
    again = g.check()
    assert again.rc == 0, again.stderr
    record = g.audit()[-1]
    assert (record["action"], record["orphans"]) == ("started", [first_worker])
    g.reaper.track(int(pidfile.read_text()))
    wait_for(lambda: (w := workers()) and first_worker not in w, timeout=30,
             what="a new agent")  # fmt: skip
    assert len(workers()) == 1  # each agent once, never twice


def test_frozen_supervisord_without_its_pidfile_is_probed_and_replaced(g: Guardian) -> None:
    # Its pidfile gone (supervisord does not write it again): found by the process-table
    # scan, it is probed as one found by its pidfile would be, and remembered.
    port = free_port()
    conf = write_supervisord_conf(g.tmp / "supervisord.conf", g.tmp, http_port=port)
    pidfile = guard_supervisord(
        g, conf, health={"http": f"http://127.0.0.1:{port}/", "timeout": "1s", "failures": 2}
    )
    subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True, timeout=30)
    old = wait_for(lambda: pidfile.exists() and int(pidfile.read_text()), what="its pidfile")
    g.reaper.track(old)
    assert status_ok(conf)
    pidfile.unlink()
    os.kill(old, signal.SIGSTOP)
    one = g.check()
    assert one.rc == 1, one.stderr
    record = g.audit()[-1]  # found by the scan, and probed
    assert (record["action"], record["pid"]) == ("unhealthy", old)
    assert "(1 of 2 failing runs)" in record["reason"]
    two = g.check()
    assert two.rc == 0, two.stderr
    record = g.audit()[-1]
    assert (record["action"], record["old_pid"]) == ("restarted_unhealthy", old)
    g.reaper.track(int(pidfile.read_text()))
    assert not alive(old)
    assert status_ok(conf)


def with_a_program_stopped_on_purpose(g: Guardian) -> tuple[Path, dict[str, list[str]]]:
    """A supervisord config with two programs: `worker` runs, `spare` is never started
    (autostart=false), as an agent stopped by hand is."""
    agents = {name: [sys.executable, str(AGENT), "--tag", f"{g.tmp}/{name}"]
              for name in ("worker", "spare")}  # fmt: skip
    conf = write_supervisord_conf(
        g.tmp / "supervisord.conf", g.tmp, programs={"worker": agents["worker"]}
    )
    with conf.open("a") as f:
        f.write(f"[program:spare]\ncommand={' '.join(agents['spare'])}\nautostart=false\n")
    return conf, agents


def guarded_by_the_recipes_probe(g: Guardian, timeout: str) -> tuple[Path, list[str], Path, int]:
    """A supervisord with a program stopped on purpose, started by guardian and probed as
    the recipes probe it (`supervisorctl -c CONF pid`), at its strictest (one failing run
    restarts): its config, the probe, its pidfile and its pid."""
    conf, _ = with_a_program_stopped_on_purpose(g)
    probe = [str(BIN / "supervisorctl"), "-c", str(conf), "pid"]
    pidfile = guard_supervisord(g, conf, health={"command": probe, "timeout": timeout,
                                                 "failures": 1})  # fmt: skip
    assert g.check().rc == 0
    pid = int(pidfile.read_text())
    g.reaper.track(pid)
    return conf, probe, pidfile, pid


def test_the_recipes_pid_probe_leaves_supervisord_alone_when_a_program_is_stopped(
    g: Guardian,
) -> None:
    # One program STOPPED on purpose is no reason to restart anything.
    conf, probe, pidfile, pid = guarded_by_the_recipes_probe(g, "10s")
    wait_for(lambda: "RUNNING" in supervisorctl(conf, "status", "worker").stdout,
             what="worker RUNNING")  # fmt: skip
    g.reaper.track(worker_pid(conf))
    for _ in range(3):
        run = g.check()
        assert (run.rc, run.stderr) == (0, "")
    assert int(pidfile.read_text()) == pid
    assert alive(pid)
    assert g.actions() == ["started", "ok", "ok", "ok"]
    # (With failures = 1, one failing probe would have restarted it: each one passed.)
    assert all("exited 0" in p for r in g.audit()[1:] for p in r["probes"])

    # Side by side, in that very state: `pid` exits 0, `status` does not (3: a program is
    # not RUNNING), which is why the recipes do not probe with it.
    status = supervisorctl(conf, "status")
    assert status.returncode == 3, status.stdout
    assert re.search(r"^spare +STOPPED", status.stdout, re.MULTILINE), status.stdout
    assert supervisorctl(conf, "pid").returncode == 0

    # And what `status` as the probe would do: restart supervisord, and every agent with it.
    worker = worker_pid(conf)
    guard_supervisord(g, conf, health={"command": [*probe[:-1], "status"], "timeout": "10s",
                                       "failures": 1})  # fmt: skip
    wrong = g.check()
    g.track()
    record = g.audit()[-1]
    assert (record["action"], record["old_pid"]) == ("restarted_unhealthy", pid), wrong.stderr
    assert "supervisorctl exited 3" in record["probes"][0]
    g.reaper.track(int(pidfile.read_text()))
    assert not alive(pid)
    assert not alive(worker)  # the agent went down with it
    g.reaper.track(wait_for(lambda: worker_pid(conf), what="the new supervisord's worker"))


def test_the_recipes_pid_probe_notices_a_hung_or_dead_supervisord(g: Guardian) -> None:
    conf, _, pidfile, old = guarded_by_the_recipes_probe(g, "2s")
    g.reaper.track(wait_for(lambda: worker_pid(conf), what="its worker"))
    assert g.check().rc == 0
    # Hung (SIGSTOP): its socket still accepts a connection, but no answer comes.
    os.kill(old, signal.SIGSTOP)
    hung = g.check()
    assert hung.rc == 0, hung.stderr
    record = g.audit()[-1]
    assert (record["action"], record["old_pid"]) == ("restarted_unhealthy", old)
    assert "gave no answer within 2s" in record["probes"][0]
    new = int(pidfile.read_text())
    g.reaper.track(new)
    assert not alive(old)
    wait_for(lambda: supervisorctl(conf, "pid").stdout.strip() == str(new),
             what="the new supervisord to answer")  # fmt: skip
    g.reaper.track(wait_for(lambda: worker_pid(conf), what="its worker"))
    # Dead: its socket file is left behind, nobody listens; `pid` exits non-zero.
    os.kill(new, signal.SIGKILL)
    wait_for(lambda: not alive(new), what="supervisord to die")
    dead = supervisorctl(conf, "pid")
    assert dead.returncode != 0
    assert "refused connection" in dead.stdout + dead.stderr

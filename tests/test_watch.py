"""check --watch: sub-second recovery, hand-overs between runs, holds, parallel starts.

Real watchers (``guardian check --watch``) as cron would start them, real targets
killed with SIGKILL, real locks. Each watcher is ended by its pid (or waited for).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guardian.discovery import Matcher, scan

from conftest import Guardian, alive, wait_for, write_config

_RUNNING: list[Watch] = []


@pytest.fixture(autouse=True)
def _end_watchers(g: Guardian) -> Iterator[None]:
    """Whatever a test leaves (a failed assertion included): its watchers ended by their
    pids, then what they started handed to the reaper (which ends it by its pid)."""
    yield
    while _RUNNING:
        watch = _RUNNING.pop()
        if watch.proc.poll() is None:
            watch.proc.kill()
        watch.proc.communicate()
    # A worker outlives a watcher killed under it, to finish its start: wait for it (it has
    # its own time limit) before handing what it started to the reaper.
    config = str(g.config_path).encode()

    def workers() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if entry.isdigit() and b"guardian" in argv and config in argv and alive(int(entry)):
                found.append(int(entry))
        return found

    wait_for(lambda: not workers(), timeout=40, what="the watchers' workers to end")
    g.track()


class Watch:
    """A ``guardian check --watch`` run in the background, as cron starts one."""

    def __init__(self, g: Guardian, seconds: str, *args: str, env: dict[str, str] | None = None):
        _RUNNING.append(self)
        self.g = g
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "guardian", "check", "--watch", seconds, *args,
             "--config", str(g.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        g.reaper.track(self.proc.pid)
        g.reaper.children.append(self.proc)

    def watching(self, name: str = "agent") -> bool:
        """Has it taken the watch lock (and said so in the lock file)?"""
        try:
            info = json.loads((self.g.state / "locks" / f"{name}.watch.lock").read_text())
        except (OSError, ValueError):
            return False
        return bool(info.get("pid") == self.proc.pid)

    def end(self, timeout: float = 30) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        self.g.track()
        return self.proc.returncode, err


def kill_and_time(g: Guardian, pid: int, timeout: float = 10) -> float:
    """SIGKILL the target; seconds until another process with its command line runs (as
    its pidfile names it: a scan of /proc per look would itself take longer than that)."""
    want = ("\0".join(g.command) + "\0").encode()
    began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while time.monotonic() - began < timeout:
        try:
            new = int(g.pidfile.read_text())
            if new != pid and Path(f"/proc/{new}/cmdline").read_bytes() == want:
                return time.monotonic() - began
        except (OSError, ValueError):
            pass
        time.sleep(0.002)
    pytest.fail(f"not restarted within {timeout}s")


def new_pid(g: Guardian, old: int) -> int | None:
    """The pid of the one target running, if it is another than ``old``."""
    found = g.matches()
    return found[0].pid if len(found) == 1 and found[0].pid != old else None


def started(g: Guardian) -> list[dict[str, Any]]:
    return [r for r in g.audit() if r["action"] == "started"]


def test_a_kill_during_a_watch_is_recovered_well_within_a_second(g: Guardian) -> None:
    g.configure(start_grace="0.1s", restart={"min_uptime": "0.2s"})
    watch = Watch(g, "30s")
    wait_for(watch.watching, what="the watcher to watch")
    times = []
    for n in range(1, 4):
        time.sleep(0.4)  # past min_uptime: each death is not a young one
        times.append(kill_and_time(g, g.pid()))
        wait_for(lambda n=n: len(started(g)) == 1 + n, what="its started record")
    watch.proc.send_signal(signal.SIGTERM)
    rc, err = watch.end()
    assert max(times) < 1.0, times  # typically 0.05s; a second is the promise
    assert len(started(g)) == 1 + 3
    assert len(g.matches()) == 1
    (ended,) = [r for r in g.audit() if r["action"] == "watch_ended"]
    assert "ended early: guardian got SIGTERM" in ended["reason"]
    assert "watching through pidfd: 3 exit(s) noticed" in ended["reason"]
    assert rc == 128 + signal.SIGTERM, err


def test_without_pidfds_it_polls_proc_and_says_so(g: Guardian) -> None:
    g.configure(start_grace="0.1s", restart={"min_uptime": "0.2s"})
    watch = Watch(g, "3s", env={"GUARDIAN_NO_PIDFD": "1"})
    wait_for(watch.watching, what="the watcher to watch")
    time.sleep(0.4)
    assert kill_and_time(g, g.pid()) < 1.0
    rc, err = watch.end()
    assert rc == 0, err
    (ended,) = [r for r in g.audit() if r["action"] == "watch_ended"]
    assert "polling /proc every 100 ms (pidfd_open: pidfds turned off" in ended["reason"]
    assert len(g.matches()) == 1


def test_two_watchers_never_watch_one_target_at_once_and_hand_over(g: Guardian) -> None:
    """The second run waits for the first to end, then watches: a kill at the hand-over
    and after it is recovered, once each, by exactly one of them."""
    g.configure(start_grace="0.1s", restart={"min_uptime": "0.2s"})
    first = Watch(g, "3s")
    wait_for(first.watching, what="the first watcher")
    second = Watch(g, "6s")
    time.sleep(1.0)
    assert first.watching()
    assert not second.watching()  # waiting, not watching beside it
    assert kill_and_time(g, g.pid()) < 1.0  # recovered by the first
    wait_for(second.watching, timeout=10, what="the second to take over")
    assert first.end()[0] == 0
    time.sleep(0.3)
    assert kill_and_time(g, g.pid()) < 1.0  # recovered by the second
    assert second.end()[0] == 0
    assert len(g.matches()) == 1
    assert len(started(g)) == 3
    ends = {r["guardian_pid"]: r["reason"] for r in g.audit() if r["action"] == "watch_ended"}
    assert "1 exit(s) noticed" in ends[first.proc.pid]
    assert "waited" in ends[second.proc.pid]
    assert "1 exit(s) noticed" in ends[second.proc.pid]


def test_a_watcher_and_plain_runs_never_both_act(g: Guardian) -> None:
    g.configure(start_grace="0.5s", restart={"min_uptime": "0.2s"})
    watch = Watch(g, "20s")
    wait_for(watch.watching, what="the watcher")
    for n in range(3):
        wait_for(lambda n=n: len(started(g)) == 1 + n, what="its start to be recorded")
        time.sleep(0.3)  # past min_uptime
        old = g.pid()
        os.kill(old, signal.SIGKILL)
        runs = [subprocess.Popen([sys.executable, "-m", "guardian", "check", "--config",
                                  str(g.config_path)], stderr=subprocess.DEVNULL)
                for _ in range(3)]  # fmt: skip
        for run in runs:
            run.wait(timeout=30)
        wait_for(lambda old=old: new_pid(g, old), what="a restart")
        assert len(g.matches()) == 1
    wait_for(lambda: len(started(g)) == 1 + 3, what="the last start to be recorded")
    watch.proc.send_signal(signal.SIGTERM)
    watch.end()
    assert len(started(g)) == 1 + 3  # one start per death, whoever made it
    assert len(g.matches()) == 1


def test_a_killed_watcher_leaves_nothing_in_the_next_ones_way(g: Guardian) -> None:
    g.configure(start_grace="0.1s")
    first = Watch(g, "60s")
    wait_for(first.watching, what="the first watcher")
    first.proc.kill()
    first.end()
    began = time.monotonic()
    second = Watch(g, "5s")
    wait_for(second.watching, what="the next watcher")
    assert time.monotonic() - began < 10  # not a minute: the kernel let its lock go
    time.sleep(0.3)
    assert kill_and_time(g, g.pid()) < 1.0
    assert second.end()[0] == 0


def test_stop_start_restart_by_hand_work_at_once_and_are_not_undone(g: Guardian) -> None:
    g.configure(start_grace="0.1s", restart={"min_uptime": "0.2s"})
    watch = Watch(g, "30s")
    wait_for(watch.watching, what="the watcher")
    old = g.pid()
    stopped = g.run("stop", "agent", "--for", "1h", "--reason", "maintenance")
    assert stopped.rc == 0, stopped.stderr
    assert stopped.seconds < 5  # at once, not after the watch
    assert not alive(old)
    time.sleep(2)  # the watcher saw it die, and left it down: it is held
    assert g.matches() == []
    held = [r for r in g.audit() if r["action"] == "held"]
    assert held[0]["hold"]["reason"] == "maintenance"
    assert held[0]["hold"]["until"] is not None

    assert g.run("start", "agent").rc == 0
    assert len(g.matches()) == 1
    time.sleep(1.5)  # the watcher finds the new one (within a second of the release)
    restarted = g.run("restart", "agent")
    assert restarted.rc == 0, restarted.stderr
    time.sleep(0.5)
    assert kill_and_time(g, g.pid()) < 1.0  # and it watches the new one
    watch.proc.send_signal(signal.SIGTERM)
    watch.end()
    assert len(g.matches()) == 1


def test_a_hold_outlives_a_watcher_a_reboot_and_ends_by_itself(g: Guardian) -> None:
    g.configure(start_grace="0.1s")
    assert g.check().rc == 0
    assert g.run("stop", "agent", "--for", "4s").rc == 0
    # A reboot forgets the state file (another boot id): never the hold.
    state_file = g.state / "state" / "agent.json"
    data = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**data, "boot_id": "another-boot"}))
    quiet = g.check()
    assert (quiet.rc, quiet.stderr, g.actions()[-1]) == (0, "", "held")
    assert g.matches() == []
    watch = Watch(g, "8s")
    wait_for(watch.watching, what="the watcher")
    wait_for(g.matches, timeout=8, what="the hold to expire and the watcher to start it")
    rc, err = watch.end()
    assert rc == 0, err
    (start,) = [r for r in g.audit() if r["action"] == "started"][-1:]
    assert "its hold has expired" in start["reason"]
    assert not (g.state / "holds" / "agent.json").exists()  # removed once it let a start by


def test_a_backoff_inside_a_watch_waits_its_time_exactly(g: Guardian) -> None:
    g.configure("--die-after", "0.2", start_grace="0.05s",
                restart={"backoff": "2s", "max_backoff": "2s", "min_uptime": "1m",
                         "burst": 10})  # fmt: skip
    watch = Watch(g, "7s")
    rc, _ = watch.end()
    starts = [r for r in g.audit() if r["action"] == "started"]
    times = [time.mktime(time.strptime(r["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
             + float("0." + r["ts"][20:23]) for r in starts]  # fmt: skip
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # First death: at once (0.2s of life + start_grace); then 2s of backoff each time,
    # not a storm, and not a cron interval.
    assert gaps, starts
    assert gaps[0] < 1.5, gaps
    assert all(1.9 < gap < 3.5 for gap in gaps[1:]), gaps
    assert len(starts) >= 3
    assert rc == 1  # it kept dying: the run says so


def test_probes_run_every_interval_during_a_watch(g: Guardian) -> None:
    beat = g.tmp / "beat"
    beat.touch()
    g.configure(start_grace="0.1s",
                health={"heartbeat_file": str(beat), "max_age": "1s", "failures": 2,
                        "interval": "1s"})  # fmt: skip
    watch = Watch(g, "12s")
    wait_for(watch.watching, what="the watcher")
    old = g.pid()
    # Nobody beats: stale after 1s, two failing rounds a second apart, then replaced.
    wait_for(lambda: new_pid(g, old), timeout=10, what="the hung target to be replaced")
    wait_for(lambda: "restarted_unhealthy" in g.actions(), what="its record")
    watch.proc.send_signal(signal.SIGTERM)
    watch.end()
    assert g.actions().count("unhealthy") == 1  # one failing round below the threshold


def test_a_cold_start_of_many_targets_is_side_by_side(g: Guardian) -> None:
    targets = {
        f"t{i}": {"command": [*g.agent(f"--delay=0.{i}")], "pidfile": str(g.tmp / f"t{i}.pid"),
                  "start_grace": "1s"}
        for i in range(8)
    }  # fmt: skip
    write_config(g.config_path, {"state_dir": str(g.state), "timeout": "30s"}, targets)
    began = time.monotonic()
    result = g.check()
    took = time.monotonic() - began
    for i in range(8):
        g.reaper.track(int((g.tmp / f"t{i}.pid").read_text()))
    assert result.rc == 0, result.stderr
    assert g.actions().count("started") == 8
    assert took < 6, took  # one after another: over 8s (1s of start_grace each, and more)
    assert len({r["guardian_pid"] for r in g.audit()}) == 8  # each in a worker of its own


def test_watch_and_dry_run_do_not_mix(g: Guardian) -> None:
    result = g.check("--dry-run", "--watch", "5s")
    assert result.rc == 2
    assert "--watch cannot be used with --dry-run" in result.stderr


def test_the_config_can_ask_for_the_watch(g: Guardian, tmp_path: Path) -> None:
    g.configure(start_grace="0.1s", guardian={"watch": "2s"})
    began = time.monotonic()
    result = g.check()
    assert result.rc == 0, result.stderr
    assert time.monotonic() - began >= 2
    assert g.actions()[-1] == "watch_ended"


# --- found by the hostile review ---


def test_a_target_that_cannot_start_is_tried_again_on_its_backoff_within_the_watch(
    g: Guardian,
) -> None:
    """A failed start is a young death counted when it fails: the watcher waits its
    backoff from then, exactly, and tries again (it once put it off for ever)."""
    # (A shell, not Python: it fails within start_grace however busy the machine is.)
    g.configure(command=["/bin/sh", "-c", "exit 3", str(g.tmp)], start_grace="1s",
                restart={"backoff": "1s", "max_backoff": "1s", "burst": 100})  # fmt: skip
    rc, _ = Watch(g, "6s").end()
    failed = [r for r in g.audit() if r["action"] == "start_failed"]
    assert len(failed) >= 4, g.actions()  # at once, then about every second
    assert rc == 1


def test_many_targets_in_a_short_run_each_get_one_record_and_nothing_left_half_started(
    g: Guardian,
) -> None:
    """Thirty workers, the last forked a while after the first: each ends with the run's
    time, not its own, so each ends what it started (none is told SIGTERM)."""
    never = g.tmp / "never.pid"
    targets: dict[str, dict[str, object]] = {}
    for i in range(30):
        if i % 2:  # a daemon that never writes its pidfile: never ready
            targets[f"t{i}"] = {"command": g.agent(f"--delay={i}", "--daemonize", str(never),
                                                  "--no-pidfile"),
                                "daemonizes": True, "pidfile": str(never),
                                "start_timeout": "30s"}  # fmt: skip
        else:
            targets[f"t{i}"] = {"command": g.agent(f"--delay=0.0{i}"), "start_grace": "0.1s",
                                "pidfile": str(g.tmp / f"t{i}.pid")}  # fmt: skip
    write_config(g.config_path, {"state_dir": str(g.state), "timeout": "8s"}, targets)
    try:
        result = g.check()
    finally:
        for fields in targets.values():  # whatever runs, ended by its pid after the test
            for found in scan(Matcher(tuple(fields["command"]))):  # type: ignore[arg-type]
                g.reaper.track(found.pid)
    assert result.rc == 124, result.stderr
    assert result.seconds < 8 + 3
    actions = g.actions()
    assert len(actions) == 30  # one record each
    assert actions.count("timeout") == 15, result.stderr
    assert "interrupted" not in actions
    daemons = [fields["command"] for name, fields in targets.items() if int(name[1:]) % 2]
    assert [c for c in daemons if scan(Matcher(tuple(c)))] == []  # type: ignore[arg-type]


def test_a_stopped_worker_never_costs_the_watchers_records(g: Guardian) -> None:
    """A worker that hangs (SIGSTOP) is killed in time for the watcher to write its
    records and exit by the watch and its timeout; it never exits 124 without them."""
    g.configure("--delay", "0.5", start_grace="3s", guardian={"timeout": "6s"})
    watch = Watch(g, "3s")
    wait_for(watch.watching, what="the watcher")
    os.kill(g.pid(), signal.SIGKILL)
    worker = wait_for(lambda: workers_of(watch.proc.pid), what="its worker")[0]
    os.kill(worker, signal.SIGSTOP)
    began = time.monotonic()
    rc, err = watch.end(timeout=30)
    assert time.monotonic() - began < 3 + 6 + 3, err
    assert rc != 124, err
    assert "watch_ended" in g.actions()
    assert not alive(worker)


def workers_of(pid: int) -> list[int]:
    """The watcher's workers: its children running guardian (forked: the same argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def test_a_restart_by_hand_longer_than_half_the_timeout_is_waited_for(g: Guardian) -> None:
    g.configure(start_grace="3s", guardian={"timeout": "6s"})
    assert g.check().rc == 0  # started before the watch: all is well, so it says nothing
    watch = Watch(g, "10s")
    wait_for(watch.watching, what="the watcher")
    restarted = g.run("restart", "agent")
    assert restarted.rc == 0, restarted.stderr
    rc, err = watch.end()
    assert (rc, err) == (0, ""), err  # no "error: another guardian held its lock"
    assert "error" not in g.actions()
    assert len(g.matches()) == 1


def test_install_refuses_a_config_watch_that_would_pile_runs_up(g: Guardian) -> None:
    g.configure(guardian={"watch": "1h", "timeout": "20s"})
    refused = g.run("install", "--interval", "1m", "--dry-run")
    assert refused.rc == 2
    assert "guardian.watch: 3600s is longer than the interval 1m and 10s of overlap" in (
        refused.stderr
    )
    line = g.run("install", "--interval", "1m", "--dry-run", "--watch")
    assert line.rc == 0, line.stderr
    assert " check --watch 70s --config " in line.stdout
    g.configure(guardian={"watch": "70s", "timeout": "20s"})
    assert g.run("install", "--interval", "1m", "--dry-run").rc == 0


def test_a_watch_lock_that_is_not_a_file_is_said_and_the_run_exits_3(g: Guardian) -> None:
    g.configure(start_grace="0.1s")
    (g.state / "locks").mkdir(parents=True, mode=0o700)
    os.mkfifo(g.state / "locks" / "agent.watch.lock")
    rc, err = Watch(g, "1s").end()
    assert rc == 3, err
    assert "not watched: lock" in err
    assert "is not a regular file" in err


def test_stop_refuses_to_hold_where_the_hold_would_not_be_believed(g: Guardian) -> None:
    assert g.check().rc == 0
    pid = g.pid()
    (g.state / "holds").mkdir(mode=0o700)
    (g.state / "holds").chmod(0o777)
    refused = g.run("stop", "agent", "--reason", "maintenance")
    assert refused.rc == 1
    assert "cannot write its hold file" in refused.stderr
    assert "not stopped, as the next run would start it again" in refused.stderr
    assert alive(pid)


def test_start_goes_ahead_past_a_hold_file_no_check_believes(g: Guardian) -> None:
    (g.state / "holds" / "agent.json").mkdir(parents=True)  # a folder: believed by nobody
    started_by_hand = g.run("start", "agent")
    assert started_by_hand.rc == 0, started_by_hand.stderr
    assert g.actions()[-1] == "started"
    assert "but no check believes it" in g.audit()[-1]["reason"]
    assert len(g.matches()) == 1


def test_a_run_that_a_later_run_overtook_stops_waiting(g: Guardian) -> None:
    """Two runs waiting for one watcher (a check slower than the overlap): should the later
    win the lock, the earlier has nothing left to wait for, and ends at once."""
    g.configure(start_grace="0.1s")
    first = Watch(g, "3s")
    wait_for(first.watching, what="the first watcher")
    earlier = Watch(g, "30s")
    time.sleep(1.0)  # its check done, it waits
    later = Watch(g, "30s")
    time.sleep(1.0)
    earlier.proc.send_signal(signal.SIGSTOP)  # so that the later one wins the lock
    try:
        wait_for(later.watching, timeout=15, what="the later run to take over")
    finally:
        earlier.proc.send_signal(signal.SIGCONT)
    began = time.monotonic()
    rc, err = earlier.end(timeout=20)
    assert time.monotonic() - began < 5, err  # not its whole watch
    assert rc == 0, err
    ends = {r["guardian_pid"]: r["reason"] for r in g.audit() if r["action"] == "watch_ended"}
    assert f"a later run (pid {later.proc.pid}) took the watch over" in ends[earlier.proc.pid]
    later.proc.send_signal(signal.SIGTERM)
    later.end()
    first.end()


# --- found by the second hostile review ---


def test_a_watcher_sleeps_on_a_target_whose_program_moved_since_it_started(g: Guardian) -> None:
    """The symlink to its program moved (a new release): the target guardian remembers is
    still the target, watched through its pidfd; the watcher once looked again and again."""
    release = g.tmp / "release"
    release.symlink_to(sys.executable)
    g.configure(command=[str(release), *g.agent()[1:]], start_grace="0.1s")
    assert g.check().rc == 0
    other = g.tmp / "python-other"
    other.symlink_to(Path(sys.executable).resolve())
    os.replace(g.tmp / "python-other", release)  # now another path to the same program...
    release.unlink()
    copy = g.tmp / "python-copy"
    copy.write_bytes(Path(sys.executable).resolve().read_bytes())
    copy.chmod(0o755)
    release.symlink_to(copy)  # ...and now another program: the running one moved away
    watch = Watch(g, "4s")
    wait_for(watch.watching, what="the watcher")
    time.sleep(2)
    fields = Path(f"/proc/{watch.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rc, err = watch.end()
    assert rc == 0, err
    assert cpu < 1.0, cpu  # its check and a second of sleeping in poll(2), not a spin
    (ended,) = [r for r in g.audit() if r["action"] == "watch_ended"]
    assert "watching through pidfd" in ended["reason"]


def test_sigterm_while_the_workers_are_forked_leaves_every_target_its_record(
    g: Guardian,
) -> None:
    targets = {
        f"t{i}": {"command": g.agent(f"--delay=0.{i:03d}"), "start_grace": "8s",
                  "pidfile": str(g.tmp / f"t{i}.pid")}
        for i in range(60)
    }  # fmt: skip
    write_config(g.config_path, {"state_dir": str(g.state), "timeout": "20s"}, targets)
    run = subprocess.Popen([sys.executable, "-m", "guardian", "check", "--config",
                            str(g.config_path)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: any((g.tmp / f"t{i}.pid").exists() for i in range(60)), what="a start")
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    for fields in targets.values():  # an interrupted start stays up: the reaper ends it
        for found in scan(Matcher(tuple(fields["command"]))):  # type: ignore[arg-type]
            g.reaper.track(found.pid)
    assert run.returncode == 128 + signal.SIGTERM, err
    records = g.audit()
    assert sorted(r["target"] for r in records) == sorted(targets), err  # one each
    assert {r["action"] for r in records} == {"interrupted"}


def test_a_give_up_inside_a_watch_is_recorded_and_told_once(g: Guardian) -> None:
    told = g.tmp / "told"
    hook = g.tmp / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$GUARDIAN_ACTION" >> {told}\n')
    hook.chmod(0o755)
    g.configure(command=["/bin/sh", "-c", "exit 3", str(g.tmp)], start_grace="1s",
                on_give_up=[str(hook)],
                restart={"backoff": "0.2s", "max_backoff": "0.2s", "burst": 3,
                         "window": "1h"})  # fmt: skip
    rc, _ = Watch(g, "5s").end()
    assert rc == 1
    actions = [a for a in g.actions() if a != "watch_ended"]
    assert actions.count("start_failed") == 3
    assert actions.count("gave_up") == 1
    assert told.read_text() == "gave_up\n"


SIGNAL_AT_THE_HAND_OVER = """
import signal, sys
from guardian import check, cli
from guardian.errors import RunTimeout
from guardian.run import Interrupted

def cut(*args, **kwargs):  # the signal (or the run's end) lands as the workers' turn begins
    raise Interrupted(signal.SIGTERM) if sys.argv[2] == "signal" else RunTimeout()

check.in_workers = cut
sys.exit(cli.main(["check", "--config", sys.argv[1]]))
"""


@pytest.mark.parametrize("cut", ["signal", "timeout"])
def test_a_signal_as_the_first_looks_hand_over_to_workers_leaves_each_target_a_record(
    g: Guardian, cut: str
) -> None:
    # Three targets that need starting: each first look hands it to a worker. A signal or
    # the run's end between those looks and the workers' own handling must not leave them
    # without a record (they had none: the workers that would have written it never ran).
    targets = {
        f"t{i}": {"command": ["/bin/sleep", str(400000 + i)], "pidfile": str(g.tmp / f"t{i}.pid")}
        for i in range(3)
    }
    write_config(g.config_path, {"state_dir": str(g.state), "timeout": "20s"}, targets)
    run = subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_THE_HAND_OVER, str(g.config_path), cut],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == (128 + signal.SIGTERM if cut == "signal" else 124), run.stderr
    records = g.audit()
    assert sorted(r["target"] for r in records) == sorted(targets)  # one each
    why = "interrupted" if cut == "signal" else "timeout"
    assert {r["action"] for r in records} == {why}
    assert all(r["reason"].startswith("not checked: ") for r in records)
    assert not any((g.tmp / f"t{i}.pid").exists() for i in range(3))  # nothing started

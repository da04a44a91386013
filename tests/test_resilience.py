"""When things go wrong: hung targets, crash loops, orphans, stopping, hooks, signals, disks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Guardian, alive, tmpfs, wait_for


def hook_script(folder: Path, name: str, body: str) -> list[str]:
    script = folder / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return [str(script)]


def test_crash_loop_is_spaced_out_then_given_up_and_hook_told(g: Guardian) -> None:
    gave_up = g.tmp / "gave-up.env"
    g.configure(
        "--exit", "1",
        restart={"burst": 3, "window": "1h", "backoff": "0s", "max_backoff": "0s"},
        on_give_up=hook_script(g.tmp, "page", f"env | grep ^GUARDIAN_ > {gave_up}"),
    )  # fmt: skip
    codes = [g.check().rc for _ in range(6)]
    assert codes == [1] * 6
    actions = g.actions()
    assert actions == ["start_failed"] * 3 + ["gave_up", "backoff", "backoff"]
    records = g.audit()
    assert "started 3 times in 3600s (burst 3)" in records[3]["reason"]
    assert records[3]["next_try"].endswith("Z")
    assert records[4]["next_try"] == records[3]["next_try"]
    env = dict(line.split("=", 1) for line in gave_up.read_text().splitlines())
    assert env["GUARDIAN_TARGET"] == "agent"
    assert env["GUARDIAN_ACTION"] == "gave_up"
    assert records[3]["hooks"] == [f"on_give_up (gave_up): {g.tmp / 'page'}: exited 0"]
    # By hand: reset, and it is tried again at once.
    assert g.run("reset", "agent").rc == 0
    assert g.check().rc == 1
    assert g.actions()[-2:] == ["reset", "start_failed"]


def test_dying_young_waits_backoff_and_the_first_restart_does_not(g: Guardian) -> None:
    g.configure("--die-after", "0.3", start_grace="0.1s",
                restart={"backoff": "2s", "min_uptime": "1m"})  # fmt: skip

    def dead() -> bool:
        return not g.matches()

    assert g.check().rc == 0
    wait_for(dead, what="the agent to die")
    assert g.check().rc == 0  # first restart: at once
    wait_for(dead, what="the agent to die again")
    held = g.check()
    assert held.rc == 1
    assert held.stderr == ""  # backoff is quiet: cron would mail it every minute otherwise
    assert g.actions()[-1] == "backoff"
    assert "died young 2 times in a row; waiting 2s" in g.audit()[-1]["reason"]
    time.sleep(2.2)
    assert g.check().rc == 0
    assert g.actions() == ["started", "started", "backoff", "started"]


def test_stale_heartbeat_restarts_after_failures_runs(g: Guardian) -> None:
    beat = g.tmp / "agent.heartbeat"
    g.configure(health={"heartbeat_file": str(beat), "max_age": "5s", "failures": 2})
    beat.touch()
    assert g.check().rc == 0
    first = g.pid()
    assert g.check().stderr == ""  # fresh heartbeat: healthy, quiet
    hour_ago = time.time() - 3600
    os.utime(beat, (hour_ago, hour_ago))
    one = g.check()
    assert one.rc == 1
    assert "unhealthy" in one.stderr
    assert g.audit()[-1]["probes"][0].startswith(f"heartbeat_file: FAILED: {beat} is 3600s old")
    assert alive(first)  # one failing run is not enough
    two = g.check()
    g.track()
    assert two.rc == 0, two.stderr
    record = g.audit()[-1]
    assert (record["action"], record["old_pid"]) == ("restarted_unhealthy", first)
    assert "ended on SIGTERM" in record["reason"]
    assert not alive(first)
    assert g.pid() != first
    os.utime(beat)  # the new agent beats: the count starts again
    assert g.check().rc == 0
    assert g.actions()[-1] == "ok"


def test_probes_that_hang_or_fail_are_time_boxed(g: Guardian) -> None:
    g.configure(health={"command": ["/bin/sleep", "60"], "tcp": "127.0.0.1:1",
                        "unix": str(g.tmp / "no.sock"), "timeout": "1s",
                        "failures": 5})  # fmt: skip
    assert g.check().rc == 0
    result = g.check()
    assert result.rc == 1
    assert result.seconds < 10
    probes = g.audit()[-1]["probes"]
    assert probes[0].startswith("tcp: FAILED: connect to 127.0.0.1:1:")
    assert probes[1].startswith(
        f"unix: FAILED: connect to {g.tmp / 'no.sock'}: No such file or directory ("
    )
    assert probes[2].startswith("command: FAILED: /bin/sleep gave no answer within 1s (")


def test_stop_escalates_to_sigkill_and_checks_identity(g: Guardian) -> None:
    g.configure("--ignore-term", stop_timeout="1s")
    assert g.check().rc == 0
    pid = g.pid()
    stopped = g.run("stop", "agent")
    assert stopped.rc == 0, stopped.stderr
    assert f"pid {pid} ignored SIGTERM for 1s; killed" in g.audit()[-1]["reason"]
    assert not alive(pid)
    # The pidfile now names a dead pid; give it an unrelated live process instead.
    bystander = g.spawn(["sleep", "300"])
    g.pidfile.write_text(str(bystander.pid))
    assert g.run("stop", "agent").rc == 0
    assert "it was not running" in g.audit()[-1]["reason"]
    assert bystander.poll() is None  # never signalled: not the target
    # Stopped by hand is held: checks leave it down, quietly, until it is started by hand.
    assert (g.check().rc, g.actions()[-1]) == (0, "held")
    assert g.run("start", "agent").rc == 0
    assert g.actions()[-1] == "started"
    # And a stop that expires is not a crash either: the check then starts it, no backoff.
    assert g.run("stop", "agent", "--for", "0.5s").rc == 0
    time.sleep(0.6)
    assert g.check().rc == 0
    assert g.actions()[-1] == "started"
    assert "its hold has expired" in g.audit()[-1]["reason"]


def test_restart_by_hand(g: Guardian) -> None:
    assert g.check().rc == 0
    old = g.pid()
    result = g.run("restart", "agent")
    g.track()
    assert result.rc == 0, result.stderr
    assert g.pid() != old
    record = g.audit()[-1]
    assert (record["action"], record["old_pid"]) == ("restarted", old)


@pytest.mark.parametrize("policy", ["kill", "keep"])
def test_what_a_dead_target_left_behind(g: Guardian, policy: str) -> None:
    child_pidfile = g.tmp / "child.pid"
    g.configure("--spawn-child", str(child_pidfile), orphans=policy)
    assert g.check().rc == 0
    child = wait_for(lambda: child_pidfile.exists() and int(child_pidfile.read_text()))
    g.reaper.track(child)
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the agent to die")
    assert alive(child)  # re-parented, still running: an orphan
    assert g.check().rc == 0
    g.track()
    record = g.audit()[-1]
    assert record["action"] == "started"
    assert record["orphans"] == [child]
    if policy == "kill":
        assert "ended 1 process(es) it left behind" in record["reason"]
        wait_for(lambda: not alive(child), what="the orphan to be ended")
    else:
        assert alive(child)


def test_hooks_run_after_a_start_and_a_hanging_hook_does_not_block(g: Guardian) -> None:
    seen = g.tmp / "hook.env"
    g.configure(
        on_start=hook_script(g.tmp, "tell", f"echo $GUARDIAN_ACTION $GUARDIAN_PID > {seen}"),
        on_failure=hook_script(g.tmp, "hang", "sleep 60"),
        hook_timeout="1s",
    )
    assert g.check().rc == 0
    assert seen.read_text().split() == ["started", str(g.pid())]
    g.configure("--exit", "2", on_failure=hook_script(g.tmp, "hang", "sleep 60"),
                hook_timeout="1s")  # fmt: skip
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the agent to die")
    failed = g.check()
    assert failed.rc == 1
    assert failed.seconds < 10
    # on_failure runs twice: for the death it found (before the restart), and for the
    # start that failed; each hangs, and each is killed at hook_timeout.
    assert g.audit()[-1]["hooks"] == [
        f"on_failure ({event}): {g.tmp / 'hang'}: still running after 1s; killed"
        for event in ("died", "start_failed")
    ]


def test_sigterm_mid_start_records_interrupted_and_the_target_stays(g: Guardian) -> None:
    daemon_pid = g.tmp / "slow.pid"
    g.configure("--daemonize", str(daemon_pid), "--delay", "3", daemonizes=True,
                pidfile=str(daemon_pid))  # fmt: skip
    run = subprocess.Popen(
        [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(g.matches, what="the start")
    g.track()
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM
    record = g.audit()[-1]
    assert record["action"] == "interrupted"
    assert "guardian got SIGTERM while waiting for pid" in record["reason"]
    assert "interrupted" in err
    # What it had started stays up, becomes ready, and the next run finds it.
    pid = wait_for(lambda: daemon_pid.exists() and int(daemon_pid.read_text()), timeout=10)
    g.reaper.track(pid)
    assert g.check().rc == 0
    assert g.actions()[-1] == "ok"
    assert not list(g.tmp.rglob("*.tmp"))  # no half-written file left behind


def test_sigkill_at_random_points_then_one_healthy_target(g: Guardian) -> None:
    # Killing it again and again looks like a crash loop: let this test's target be.
    g.configure(start_grace="0.5s", restart={"burst": 100, "backoff": "0s"})
    rng = random.Random(2026)  # noqa: S311 - repeatable timing, not cryptography
    for _ in range(12):
        run = subprocess.Popen(
            [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.8))
        run.kill()
        run.wait()
        g.track()
        after = g.check()
        assert after.rc == 0, after.stderr
        assert len(g.matches()) == 1
        assert alive(g.pid())
        # Whole files only: a write cut by SIGKILL leaves at most a temporary file of a
        # dead writer (swept by the next write of that file), never a half-written one.
        state_file = g.state / "state" / "agent.json"
        assert not state_file.exists() or json.loads(state_file.read_text())
        for debris in g.tmp.rglob("*.tmp"):
            assert not Path(f"/proc/{debris.name.split('.')[-3]}").exists()
        os.kill(g.pid(), signal.SIGKILL)  # and again, from dead
        wait_for(lambda: not g.matches(), what="the agent to die")


def test_corrupt_state_file_is_rebuilt_with_a_warning(g: Guardian) -> None:
    state_file = g.state / "state" / "agent.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    result = g.check()
    assert result.rc == 3  # started, but something was wrong: the exit code says so
    assert g.actions() == ["warning", "started"]
    assert "was corrupt (Expecting property name" in g.audit()[0]["reason"]
    json.loads(state_file.read_text())
    assert g.check().rc == 0


def test_config_others_can_change_is_refused_as_root(g: Guardian) -> None:
    if os.geteuid() != 0:
        pytest.skip("the rule is for guardian running as root")
    g.config_path.chmod(0o664)
    writable = g.check()
    assert writable.rc == 2
    assert "writable by group or others (mode 664)" in writable.stderr
    g.config_path.chmod(0o644)
    os.chown(g.config_path, 65534, -1)
    foreign = g.check()
    assert foreign.rc == 2
    assert "not root" in foreign.stderr
    os.chown(g.config_path, 0, -1)
    assert g.check().rc == 0


def test_no_write_follows_a_symlink(g: Guardian) -> None:
    precious = g.tmp / "precious"
    precious.write_text("keep me\n")
    g.pidfile.symlink_to(precious)  # pidfile: replaced by rename, never written through
    (g.state).mkdir()
    (g.state / "audit.jsonl").symlink_to(precious)  # audit log: O_NOFOLLOW
    result = g.check()
    assert precious.read_text() == "keep me\n"
    assert result.rc == 3
    assert "cannot write audit log" in result.stderr
    assert not g.pidfile.is_symlink()
    assert alive(g.pid())


def test_pidfile_folder_others_can_write_is_refused_unless_sticky(g: Guardian) -> None:
    shared = g.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    g.configure(pidfile=str(shared / "agent.pid"))
    result = g.check()
    assert result.rc == 3  # the target is started all the same
    assert "a pidfile there is unsafe" in result.stderr
    assert not (shared / "agent.pid").exists()
    g.track()
    shared.chmod(0o1777)  # sticky, as /tmp: nobody can replace our file
    assert g.check().rc == 0
    assert (shared / "agent.pid").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of the test's own."""
    with tmpfs(tmp_path, "1m") as mount:
        yield mount


@pytest.mark.parametrize("trouble", ["read-only", "full"])
def test_dead_target_is_started_on_a_read_only_or_full_state_folder(
    g: Guardian, small_disk: Path, trouble: str
) -> None:
    state_dir = small_disk / "state"
    g.configure(guardian={"state_dir": str(state_dir), "audit_log": str(g.tmp / "audit.jsonl")})
    g.state = g.tmp  # where this test's audit log is
    g.state.joinpath("audit.jsonl").touch()
    assert g.check().rc == 0  # a first run, while the disk is fine: lock and state exist
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the agent to die")
    if trouble == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    else:
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True,
                       check=False)  # fmt: skip
    result = g.check()
    g.track()
    assert len(g.matches()) == 1  # started all the same, and once
    assert result.rc == 3  # what could not be written is said, on stderr and in the code
    assert "cannot write state file" in result.stderr
    assert g.check().rc in (0, 3)
    assert len(g.matches()) == 1
    if trouble == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


def test_stop_never_signals_a_process_that_is_no_longer_the_target(g: Guardian) -> None:
    from guardian.proc import stat as proc_stat
    from guardian.proc import stop

    other = g.spawn(["sleep", "301"])
    wait_for(lambda: Path(f"/proc/{other.pid}/cmdline").read_bytes().startswith(b"sleep"))
    st = proc_stat(other.pid)
    assert st is not None
    gone, how = stop(other.pid, st.start_ticks, signal.SIGTERM, 1.0, lambda pid: False)
    assert (gone, how) == (False, f"pid {other.pid} is no longer the target, so was not signalled")
    assert other.poll() is None  # untouched: and a caller that is told "not gone" starts nothing
    gone, how = stop(other.pid, st.start_ticks, signal.SIGTERM, 5.0, None)
    assert (gone, how) == (True, f"pid {other.pid} ended on SIGTERM")


def test_starts_by_hand_and_after_a_stop_by_hand_do_not_count_toward_burst(g: Guardian) -> None:
    # Maintenance: restarts and a stop by hand. The next real crash must be met with a
    # restart, not with gave_up: only deaths guardian did not cause make a crash loop.
    g.configure(restart={"burst": 2, "window": "1h", "backoff": "0s"})
    assert g.check().rc == 0  # the one start that counts
    for _ in range(3):
        assert g.run("restart", "agent").rc == 0
        g.track()
    assert g.run("stop", "agent", "--for", "0.2s").rc == 0
    time.sleep(0.3)  # the hold expires
    assert g.check().rc == 0  # started after the stop by hand: not counted either
    assert g.actions()[-1] == "started"
    g.track()
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the agent to die")
    assert g.check().rc == 0
    assert g.actions()[-1] == "started"
    g.track()
    os.kill(g.pid(), signal.SIGKILL)  # and now the burst of 2 real starts is used up
    wait_for(lambda: not g.matches(), what="the agent to die")
    assert g.check().rc == 1
    assert g.actions()[-1] == "gave_up"


def test_min_uptime_zero_means_no_death_is_young(g: Guardian) -> None:
    g.configure("--die-after", "0.5", start_grace="0.1s",
                restart={"backoff": "30s", "min_uptime": "0s"})  # fmt: skip
    for _ in range(3):
        assert g.check().rc == 0
        g.track()
        wait_for(lambda: not g.matches(), what="the agent to die")
    assert g.actions() == ["started"] * 3  # never held back for dying young


def test_a_target_that_dies_while_it_is_probed_is_dealt_with_as_dead(g: Guardian) -> None:
    # The probe runs; meanwhile the target crashes. That is a dead target (started
    # again, said), not an "ok" left quietly down.
    probe = hook_script(g.tmp, "probe", f'kill -9 "$(cat {g.pidfile})"\nexit 1')
    g.configure(health={"command": probe, "failures": 1})
    assert g.check().rc == 0
    first = g.pid()
    result = g.check()
    g.track()
    assert result.rc == 0, result.stderr
    record = g.audit()[-1]
    assert record["action"] == "started"
    assert "started" in result.stderr
    assert not alive(first)
    assert alive(g.pid())


@pytest.mark.parametrize("probe_ends", ["failing", "passing"])
def test_a_target_killed_during_a_probe_below_the_threshold_is_started(
    g: Guardian, probe_ends: str
) -> None:
    # However the probe ends, a target found dead after it is a dead target now.
    probe = hook_script(g.tmp, "probe", f"sleep 1\nexit {1 if probe_ends == 'failing' else 0}")
    g.configure(health={"command": probe, "failures": 3})
    assert g.check().rc == 0
    first = g.pid()
    run = subprocess.Popen(
        [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def probing() -> bool:
        for entry in os.listdir("/proc"):
            try:
                if probe[0].encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
        return False

    wait_for(probing, what="the probe to run")
    os.kill(first, signal.SIGKILL)
    _, err = run.communicate(timeout=30)
    g.track()
    assert run.returncode == 0, err
    assert g.actions()[-1] == "started"
    assert alive(g.pid())


def test_a_read_only_state_folder_never_holds_a_crash_looping_target_down(
    g: Guardian, small_disk: Path
) -> None:
    # Without a state file that can be written, the crash-loop rules cannot count: they
    # would start counting anew every run and wait for ever. It is started instead.
    state_dir = small_disk / "state"
    g.configure(guardian={"state_dir": str(state_dir), "audit_log": str(g.tmp / "audit.jsonl")},
                output=str(g.tmp / "agent.out"), restart={"backoff": "30s"})  # fmt: skip
    g.state = g.tmp
    assert g.check().rc == 0
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the agent to die")
    assert g.check().rc == 0  # the first restart: at once
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        for _ in range(2):
            os.kill(g.matches()[0].pid, signal.SIGKILL)
            wait_for(lambda: not g.matches(), what="the agent to die")
            result = g.check()
            g.track()
            assert result.rc == 3, result.stderr
            assert g.actions()[-1] == "started"
            assert "cannot be counted: started all the same" in g.audit()[-1]["reason"]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)

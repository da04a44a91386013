"""The per-target lock: real contention from a second process."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guardian.discovery import Matcher, scan
from guardian.locking import Busy, hold, lock_path
from guardian.proc import real_uid

from conftest import AGENT, Guardian, Reaper, SharedInstall, alive, wait_for, write_config

HOLDER = """
import sys, time
from pathlib import Path
from guardian.locking import hold
with hold(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(300)
"""


def hold_in_another_process(lock_dir: Path, name: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), name], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    return holder


def test_lock_held_elsewhere_is_busy_and_freed_when_the_holder_dies(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path, "t")
    try:
        with pytest.raises(Busy), hold(tmp_path, "t"):
            pass
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # flock dies with its holder, however it dies: no stale lock to clean up.
    with hold(tmp_path, "t") as lock:
        assert lock.path == lock_path(tmp_path, "t")


def test_lock_file_is_private_and_never_deleted(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    with hold(lock_dir, "t") as lock:
        path = lock.path
        inode = path.stat().st_ino
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Deleting it would let two holders lock two inodes (tox-dev/filelock#574).
    assert path.stat().st_ino == inode
    with hold(lock_dir, "t"):
        assert path.stat().st_ino == inode


def test_check_skips_quietly_while_another_guardian_holds_the_lock(g: Guardian) -> None:
    holder = hold_in_another_process(g.state / "locks", "agent")
    try:
        result = g.check()
        assert (result.rc, result.stdout, result.stderr) == (0, "", "")
        assert g.actions() == ["skipped"]
        assert not g.matches()  # nothing was started behind the other guardian's back
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert g.check().rc == 0
    assert g.actions() == ["skipped", "started"]


def test_a_started_target_does_not_hold_the_lock(g: Guardian) -> None:
    assert g.check().rc == 0
    pid = g.pid()
    lock = str(lock_path(g.state / "locks", "agent"))
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert lock not in fds
    wait_for(lambda: g.pid() == pid)
    with hold(g.state / "locks", "agent"):  # free while the target runs on
        pass


def let_go(*holders: subprocess.Popen[str]) -> None:
    for holder in holders:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def pid_holds(pid: int, path: Path) -> bool:
    """Does process ``pid`` have ``path`` open?"""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(path)):
                return True
        except FileNotFoundError:
            continue
    return False


def test_lock_replaced_while_waited_for_is_looked_at_again(g: Guardian) -> None:
    # `guardian stop` waits for the lock that another guardian holds. Meanwhile the
    # lock file is replaced and a third holder takes the new one. When the first holder
    # lets go, the waiter holds a file that is no longer the lock: it must see that,
    # and wait for the lock as it is now, not stop the target behind the third's back.
    g.configure(stop_timeout="1s", guardian={"timeout": "10s"})
    assert g.check().rc == 0
    target = g.pid()
    locks = g.state / "locks"
    first = hold_in_another_process(locks, "agent")
    stop = subprocess.Popen(
        [sys.executable, "-m", "guardian", "stop", "agent", "--config", str(g.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = lock_path(locks, "agent")
    wait_for(lambda: pid_holds(stop.pid, lock), what="stop to open the lock and wait")
    fresh = locks / "fresh"
    fresh.touch(mode=0o600)
    os.replace(fresh, lock)
    third = hold_in_another_process(locks, "agent")
    try:
        first.kill()
        first.wait()
        _, err = stop.communicate(timeout=30)
        assert stop.returncode == 1, err
        assert "another guardian held its lock" in g.audit()[-1]["reason"]
        assert alive(target)  # not stopped while the third holds the lock
    finally:
        let_go(first, third)
    assert g.run("stop", "agent").rc == 0  # once free, it works
    assert not alive(target)


def test_stop_by_hand_waits_for_a_run_that_holds_the_lock(g: Guardian) -> None:
    g.configure(stop_timeout="1s", guardian={"timeout": "15s"})
    assert g.check().rc == 0
    target = g.pid()
    holder = hold_in_another_process(g.state / "locks", "agent")
    stop = subprocess.Popen(
        [sys.executable, "-m", "guardian", "stop", "agent", "--config", str(g.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    assert stop.poll() is None  # waiting, not "done" while the target runs on
    assert alive(target)
    let_go(holder)
    _, err = stop.communicate(timeout=30)
    assert stop.returncode == 0, err
    assert g.actions()[-1] == "held"
    assert not alive(target)


def test_stop_by_hand_gives_up_on_a_lock_that_is_never_free(g: Guardian) -> None:
    g.configure(stop_timeout="1s", guardian={"timeout": "8s"})
    assert g.check().rc == 0
    target = g.pid()
    holder = hold_in_another_process(g.state / "locks", "agent")
    try:
        stopped = g.run("stop", "agent")
    finally:
        let_go(holder)
    assert stopped.rc == 1
    assert "another guardian held its lock" in stopped.stderr
    assert stopped.seconds < 8 + 1
    assert alive(target)


def test_root_and_another_user_on_one_config_never_both_start(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, reaper: Reaper
) -> None:
    import shutil

    agent = shared_dir / "agent.py"
    shutil.copy(AGENT, agent)
    agent.chmod(0o644)
    command = ["/usr/bin/python3", str(agent), "--tag", str(shared_dir)]
    config = write_config(
        shared_dir / "guardian.toml",
        {"state_dir": str(shared_dir / "state"), "timeout": "20s"},
        # Killed again and again: no backoff, or the later rounds would wait.
        {"agent": {"command": command, "start_grace": "0.3s", "restart": {"backoff": "0s"}}},
    )
    config.chmod(0o644)
    as_root = [sys.executable, "-m", "guardian", "check", "--config", str(config)]
    as_user = ["runuser", "-u", system_user, "--", shared_install.guardian, "check",
               "--config", str(config)]  # fmt: skip
    for _ in range(3):
        runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for argv in (as_user, as_root)]  # fmt: skip
        (_, user_err), (_, root_err) = (run.communicate(timeout=60) for run in runs)
        copies = scan(Matcher(tuple(command)))
        for found in copies:
            reaper.track(found.pid)
        assert runs[1].returncode == 0, root_err
        assert len(copies) == 1, (user_err, root_err)
        assert real_uid(copies[0].pid) == 0  # root's; the user's run started nothing
        assert runs[0].returncode != 0
        assert "lock" in user_err
        os.kill(copies[0].pid, signal.SIGKILL)
        wait_for(lambda: not scan(Matcher(tuple(command))), what="the target to die")


def test_a_healthy_run_writes_its_state_only_under_the_state_lock(g: Guardian) -> None:
    # The healthy path reads the state without a lock; what it learnt (when it last saw
    # the target) is written under the state file's own lock, and only if no other run
    # wrote it since, so it never undoes what a run acting on the target recorded.
    assert g.check().rc == 0
    state_file = g.state / "state" / "agent.json"
    written = state_file.stat().st_ino
    holder = hold_in_another_process(g.state / "locks", ".agent.state")
    try:
        assert g.check().rc == 0
        assert g.actions()[-1] == "ok"
        assert state_file.stat().st_ino == written  # another run is writing: left to it
    finally:
        let_go(holder)
    assert g.check().rc == 0
    assert state_file.stat().st_ino != written  # free: when it was last seen, written


def test_a_run_writing_its_state_does_not_make_another_skip_a_dead_target(g: Guardian) -> None:
    # A healthy run holds only the state lock, for the length of a write: a run that
    # finds the target dead meanwhile starts it, instead of "skipped, seeing to it".
    assert g.check().rc == 0
    first = g.pid()
    holder = hold_in_another_process(g.state / "locks", ".agent.state")
    try:
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), what="the target to die")
        result = g.check()
        g.track()
        assert result.rc == 0, result.stderr
        assert g.actions()[-1] == "started"
    finally:
        let_go(holder)
    assert len(g.matches()) == 1

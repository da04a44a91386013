"""The per-target lock: real contention from a second process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from guardian.locking import Busy, hold, lock_path

from conftest import Guardian, wait_for

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

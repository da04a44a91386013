"""Atomic writes: whole or nothing, never through a symlink, no debris left by a killed writer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guardian import files
from guardian.files import atomic_write


def aged(*paths: Path) -> None:
    """Last changed two minutes ago: a leftover, not a file being written."""
    then = time.time() - 2 * files.STALE
    for path in paths:
        os.utime(path, (then, then))


def test_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    link = tmp_path / "state.json"
    link.symlink_to(precious)
    atomic_write(link, b"new", mode=0o600)
    assert precious.read_text() == "keep me"
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"
    assert oct(link.stat().st_mode & 0o777) == "0o600"


def test_sweeps_temporary_files_of_writers_that_were_killed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])  # a pid that has exited, and been reaped
    gone.wait()
    stale = tmp_path / f".state.json.{gone.pid}.0badc0de.tmp"
    stale.write_text("half")
    aged(stale)
    live = tmp_path / f".state.json.{os.getppid()}.0badc0de.tmp"  # a writer still running
    live.write_text("in progress")
    other = tmp_path / f".other.json.{gone.pid}.0badc0de.tmp"  # another file's: not ours
    other.write_text("not mine")
    atomic_write(tmp_path / "state.json", b"{}")
    assert not stale.exists()
    assert live.exists()
    assert other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, "state.json"]
    )


def test_the_sweep_never_takes_another_files_temporary_file(tmp_path: Path) -> None:
    # Target "x" writes x.json; target "x.json.5" writes x.json.5.json. The sweep of the
    # first must not take the second's temporary file for one of its own.
    theirs = tmp_path / f".x.json.5.json.{os.getpid()}.0badc0de.tmp"
    theirs.write_text("being written")
    atomic_write(tmp_path / "x.json", b"{}")
    assert theirs.exists()


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_the_sweep_leaves_a_folder_named_like_a_leftover_and_the_write_succeeds(
    tmp_path: Path,
) -> None:
    folder = tmp_path / f".state.json.{_dead_pid()}.0badc0de.tmp"
    folder.mkdir()
    (folder / "inside").write_text("someone's")
    atomic_write(tmp_path / "state.json", b"{}")  # no IsADirectoryError, no ENOTEMPTY
    assert (tmp_path / "state.json").read_bytes() == b"{}"
    assert (folder / "inside").read_text() == "someone's"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a file of another user)")
def test_the_sweep_never_deletes_another_users_file_named_like_a_leftover(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky, like /tmp: root could delete anyone's file here
    theirs = shared / f".state.json.{_dead_pid()}.0badc0de.tmp"
    theirs.write_text("nobody's own")
    os.chown(theirs, 65534, 65534)
    ours = shared / f".state.json.{_dead_pid()}.0badc0de.tmp"
    ours.write_text("a leftover of guardian's")
    aged(theirs, ours)
    atomic_write(shared / "state.json", b"{}")
    assert theirs.read_text() == "nobody's own"
    assert not ours.exists()


# --- what the third hostile review found ---


def test_a_watcher_sweeps_what_was_left_after_its_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atomic_write(tmp_path / "state.json", b"{}")  # the folder listed: nothing to sweep
    later = tmp_path / f".state.json.{_dead_pid()}.0badc0de.tmp"  # a worker killed since
    later.write_text("half")
    aged(later)
    atomic_write(tmp_path / "state.json", b"{}")
    assert later.exists()  # the listing is kept a while: not one listing a write
    monkeypatch.setattr(files, "_RELIST", 0.0)  # ... and then made again (minutes, not 0)
    atomic_write(tmp_path / "state.json", b"{}")
    assert not later.exists()


# In a pid namespace of its own, as pid ``argv[2]`` (which this /proc does not show): a
# writer that has made its temporary file, and goes on writing it.
WRITER_ELSEWHERE = """
import os, sys, time
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(int(sys.argv[2]) - 1))
if os.fork() == 0:
    with open(f"{sys.argv[1]}/.state.json.{os.getpid()}.0badc0de.tmp", "w") as f:
        f.write("being written")
    time.sleep(60)
    os._exit(0)
os.wait()
"""


def test_a_writer_of_another_pid_namespace_is_not_taken_for_a_dead_one(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a pid namespace of its own needs root")
    pid = next(p for p in range(30000, 1000, -1) if not os.path.exists(f"/proc/{p}"))
    writer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, "-c", WRITER_ELSEWHERE, str(tmp_path), str(pid)],
    )  # fmt: skip
    try:
        theirs = tmp_path / f".state.json.{pid}.0badc0de.tmp"
        until = time.monotonic() + 10
        while not theirs.exists() and writer.poll() is None and time.monotonic() < until:
            time.sleep(0.01)
        if not theirs.exists():
            pytest.skip("cannot run a process in a pid namespace of its own here")
        assert not os.path.exists(f"/proc/{pid}")  # its writer is nowhere to be seen here
        atomic_write(tmp_path / "state.json", b"{}")
        assert theirs.read_text() == "being written"  # changed moments ago: being written
    finally:
        writer.kill()  # (--kill-child: and what runs in its namespace with it)
        writer.wait()

"""Atomic writes: whole or nothing, never through a symlink, no debris left by a killed writer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from guardian.files import atomic_write


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
    atomic_write(shared / "state.json", b"{}")
    assert theirs.read_text() == "nobody's own"
    assert not ours.exists()

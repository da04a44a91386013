"""The target is the configured program, with its command line, as its user: nothing else.

An impostor borrows the command line (``exec -a`` can set any argv[0]) or runs
it as another user; it is never adopted, never counted as a copy that blocks
the start, and never signalled, ``guardian stop`` included.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from guardian.proc import real_uid
from guardian.proc import stat as proc_stat

from conftest import AGENT, Guardian, alive, wait_for


def argv_of(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except FileNotFoundError:
        return []


def test_exec_a_impostor_is_not_adopted_not_a_duplicate_and_never_stopped(g: Guardian) -> None:
    other = "/usr/bin/python3"
    if not Path(other).exists() or os.path.realpath(other) == os.path.realpath(sys.executable):
        pytest.skip("needs a second Python to pose as this one")
    # The target's very argv, run by another program: argv[0] borrowed with exec -a.
    impostor = g.spawn(
        ["bash", "-c", f'exec -a "{sys.executable}" {other} {AGENT} --tag {g.tmp}'],
        start_new_session=True,
    )
    wait_for(lambda: argv_of(impostor.pid) == g.command, what="the impostor")
    g.pidfile.write_text(f"{impostor.pid}\n")  # even named by the pidfile, written before it
    hour_ago = time.time() - 3600
    os.utime(g.pidfile, (hour_ago, hour_ago))

    first = g.check()
    assert first.rc == 0, first.stderr
    record = g.audit()[-1]
    assert record["action"] == "started"
    assert (
        f"pidfile names pid {impostor.pid}, which has the command line but runs"
        in (record["reason"])
    )
    assert "(an impostor)" in record["reason"]
    target = g.pid()
    assert target != impostor.pid
    assert alive(target)

    stopped = g.run("stop", "agent")
    assert stopped.rc == 0, stopped.stderr
    assert not alive(target)
    assert impostor.poll() is None  # never signalled

    # Alone, it is still not the target: started again, not adopted, not "2 match".
    again = g.run("start", "agent")
    assert again.rc == 0, again.stderr
    assert g.actions()[-1] == "started"
    assert impostor.poll() is None


def test_another_users_copy_is_not_the_target(
    system_user: str, shared_dir: Path, g: Guardian
) -> None:
    agent = shared_dir / "agent.py"
    shutil.copy(AGENT, agent)
    agent.chmod(0o644)
    command = ["/usr/bin/python3", str(agent), "--tag", str(g.tmp)]
    g.configure(command=command)
    theirs = g.spawn(["runuser", "-u", system_user, "--", *command], start_new_session=True)
    uid = pwd.getpwnam(system_user).pw_uid

    def their_copy() -> int | None:
        return next((m.pid for m in g.matches() if real_uid(m.pid) == uid), None)

    copy = wait_for(their_copy, what="the other user's copy")
    assert g.check("--dry-run").rc == 1  # would start: theirs is not ours
    first = g.check()
    assert first.rc == 0, first.stderr
    assert g.actions()[-1] == "started"
    ours = g.pid()
    assert real_uid(ours) == os.geteuid()
    assert {real_uid(m.pid) for m in g.matches()} == {uid, os.geteuid()}

    assert g.run("stop", "agent").rc == 0
    assert not alive(ours)
    assert alive(copy)  # never signalled
    assert theirs.poll() is None


# A program whose main thread ends (pthread_exit) while a worker runs on: /proc/PID/stat
# shows the process as a zombie and its command line as empty, yet it runs.
MAIN_THREAD_EXITS = r"""
#include <pthread.h>
#include <unistd.h>
static void *work(void *arg) { for (;;) sleep(1); return arg; }
int main(void) { pthread_t t; pthread_create(&t, 0, work, 0); sleep(1); pthread_exit(0); }
"""

PAUSE = r"""
#include <unistd.h>
int main(void) { for (;;) pause(); }
"""

CHDIR = r"""
#include <unistd.h>
int main(void) { if (chdir("/") != 0) return 1; for (;;) pause(); }
"""


def test_a_process_whose_main_thread_exited_is_alive_not_a_zombie(
    g: Guardian, cc: Callable[[str, str], Path]
) -> None:
    program = cc("threads", MAIN_THREAD_EXITS)
    g.configure(command=[str(program), str(g.tmp)], start_grace="0.3s")
    assert g.check().rc == 0
    pid = g.pid()
    wait_for(lambda: (st := proc_stat(pid)) is not None and st.task != f"/proc/{pid}",
             what="its main thread to exit")  # fmt: skip
    again = g.check()
    assert (again.rc, again.stderr) == (0, "")
    assert g.actions() == ["started", "ok"]  # found running, not started a second time
    assert len(g.matches()) == 1
    assert g.run("stop", "agent").rc == 0  # and it can be stopped
    wait_for(lambda: not alive(pid), what="it to stop")


def test_a_program_with_a_space_in_its_path_is_found_by_the_scan(
    g: Guardian, cc: Callable[[str, str], Path]
) -> None:
    folder = g.tmp / "my agent"
    folder.mkdir()
    program = cc("pause", PAUSE).rename(folder / "agentd")
    g.configure(command=[str(program)])
    theirs = g.spawn([str(program)], start_new_session=True)  # its init script's copy
    wait_for(lambda: argv_of(theirs.pid) == [str(program)], what="it to run")
    assert g.check().rc == 0
    assert (g.actions()[-1], g.audit()[-1]["pid"]) == ("adopted", theirs.pid)
    assert len(g.matches()) == 1


def test_a_daemon_started_by_a_relative_path_that_changed_folder_is_found(
    g: Guardian, cc: Callable[[str, str], Path]
) -> None:
    program = cc("chdird", CHDIR)
    g.configure(command=[str(program), "tagY"])
    theirs = g.spawn(["./chdird", "tagY"], cwd=program.parent, start_new_session=True)
    wait_for(lambda: os.readlink(f"/proc/{theirs.pid}/cwd") == "/", what="it to change folder")
    assert g.check().rc == 0
    assert (g.actions()[-1], g.audit()[-1]["pid"]) == ("adopted", theirs.pid)
    assert len(g.matches()) == 1


def test_a_moved_symlink_does_not_make_the_target_it_started_an_impostor(g: Guardian) -> None:
    other = os.path.realpath("/usr/bin/python3")
    mine = os.path.realpath(sys.executable)
    if not Path(other).exists() or other == mine:
        pytest.skip("needs a second Python to point the link at")
    link = g.tmp / "bin" / "python"
    link.parent.mkdir()
    link.symlink_to(other)
    g.configure(command=[str(link), str(AGENT), "--tag", str(g.tmp)])
    assert g.check().rc == 0
    pid = g.pid()
    # update-alternatives, a new release, a rebuilt virtualenv: the link moves.
    new = g.tmp / "bin" / "python.new"
    new.symlink_to(mine)
    new.replace(link)
    again = g.check()
    assert (again.rc, again.stderr) == (0, "")
    assert (g.actions()[-1], g.pid()) == ("ok", pid)  # still the one it started
    same_argv = [
        int(e) for e in os.listdir("/proc") if e.isdigit() and argv_of(int(e)) == g.command
    ]
    assert same_argv == [pid]  # no second copy


def test_after_a_symlink_moved_no_memory_means_no_second_copy_and_no_signal(
    g: Guardian, cc: Callable[[str, str], Path]
) -> None:
    # As above (and `guardian status` agrees with `check`), then without its memory.
    v1 = cc("prog", PAUSE)
    v2 = g.tmp / "v2"
    v2.mkdir()
    shutil.copy(v1, v2 / "prog")
    link = g.tmp / "current"
    link.symlink_to(v1)
    g.configure(command=[str(link), "atk-sym"])
    assert g.check().rc == 0
    pid = g.pid()
    new = g.tmp / "current.new"
    new.symlink_to(v2 / "prog")
    new.replace(link)  # a release flips the link
    status = g.run("status", "--cron-file", str(g.tmp / "no-cron"))
    assert status.rc == 0, status.stdout
    assert f"agent: running, pid {pid}" in status.stdout
    # Without its memory, guardian cannot tell its own start from an impostor: it says
    # so, and neither adopts it nor starts a second copy.
    (g.state / "state" / "agent.json").unlink()
    again = g.check()
    assert again.rc == 1
    assert g.actions()[-1] == "error"
    assert "named by guardian's own pidfile" in g.audit()[-1]["reason"]
    same_argv = [
        int(e) for e in os.listdir("/proc") if e.isdigit() and argv_of(int(e)) == g.command
    ]
    assert same_argv == [pid]
    assert g.run("restart", "agent").rc == 1  # not signalled on a guess either
    assert alive(pid)


def test_a_strangers_command_lines_cannot_slow_the_scan_down(
    shared_dir: Path, g: Guardian, cc: Callable[[str, str], Path]
) -> None:
    # Another user's processes with the target's arguments and an argv[0] made to be
    # slow to resolve (tens of thousands of path components): they are never looked at.
    program = Path(shutil.copy(cc("pause", PAUSE), shared_dir / "pause"))
    program.chmod(0o755)
    g.configure(guardian={"timeout": "5s"})
    slow_name = "/tmp/x" + "/a" * 60000
    for _ in range(10):
        g.spawn([slow_name, *g.command[1:]], executable=str(program), user=65534,
                start_new_session=True)  # fmt: skip
    result = g.check()
    assert result.rc == 0, result.stderr
    assert result.seconds < 5
    assert g.actions() == ["started"]

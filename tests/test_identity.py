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
from pathlib import Path

import pytest

from guardian.proc import real_uid

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
    g.pidfile.write_text(f"{impostor.pid}\n")  # even named by the pidfile

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
    again = g.check()
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

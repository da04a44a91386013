"""Hooks mean what their names say: each one's trigger, its order, and how often it fires."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import Guardian, alive, wait_for

# Each hook appends one line: the hook, GUARDIAN_ACTION, GUARDIAN_PID, that pid's state
# letter while the hook ran (S running or sleeping, Z zombie, - gone), and the pid the
# target's pidfile named then.
TELL = """#!/bin/sh
state=$(awk '/^State:/ {print $2}' "/proc/${GUARDIAN_PID:-0}/status" 2>/dev/null)
named=$(cat "$(dirname "$0")/agent.pid" 2>/dev/null)
echo "$0 $GUARDIAN_ACTION ${GUARDIAN_PID:--} ${state:--} ${named:--}" >> "$(dirname "$0")/told"
"""


def hooks(g: Guardian) -> dict[str, list[str]]:
    """The three hooks as scripts that tell ``told``; their config."""
    for name in ("on_start", "on_failure", "on_give_up"):
        script = g.tmp / name
        script.write_text(TELL)
        script.chmod(0o755)
    return {name: [str(g.tmp / name)] for name in ("on_start", "on_failure", "on_give_up")}


def told(g: Guardian) -> list[list[str]]:
    """Each hook run so far: [hook, action, pid, its state, the pid the pidfile named]."""
    path = g.tmp / "told"
    lines = path.read_text().splitlines() if path.exists() else []
    return [[Path(w[0]).name, *w[1:]] for w in (line.split() for line in lines)]


def kill_target(g: Guardian) -> int:
    pid = g.pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    return pid


def test_a_death_tells_on_failure_before_the_restart_then_on_start(g: Guardian) -> None:
    g.configure(**hooks(g))
    assert g.check().rc == 0
    first = g.pid()
    assert told(g) == [["on_start", "started", str(first), "S", str(first)]]
    assert g.check().rc == 0  # healthy: no hook
    old = kill_target(g)
    result = g.check()
    assert result.rc == 0, result.stderr
    new = g.pid()
    # on_failure ran first, while no new copy had been started (the pidfile still named
    # the dead one, a zombie here or gone); then on_start with the new pid.
    (died, started) = told(g)[1:]
    assert died[:3] == ["on_failure", "died", str(old)]
    assert died[3] in ("Z", "-")
    assert died[4] == str(old)
    assert started == ["on_start", "started", str(new), "S", str(new)]
    record = g.audit()[-1]
    assert record["action"] == "started"
    assert [h.split(":")[0] for h in record["hooks"]] == ["on_failure (died)", "on_start (started)"]
    assert f"agent: hook on_failure (died): {g.tmp / 'on_failure'}: exited 0" in result.stderr


def test_a_death_is_told_once_however_many_runs_wait_out_its_backoff(g: Guardian) -> None:
    g.configure("--die-after", "0.5", start_grace="0.1s",
                restart={"backoff": "1h", "max_backoff": "1h", "min_uptime": "1m"},
                **hooks(g))  # fmt: skip
    assert g.check().rc == 0
    wait_for(lambda: not g.matches(), what="the target to die")
    assert g.check().rc == 0  # the first restart is never delayed
    wait_for(lambda: not g.matches(), what="the target to die again")
    for _ in range(3):
        assert g.check().rc == 1
    assert g.actions()[-3:] == ["backoff"] * 3
    assert [(h, action) for h, action, *_ in told(g)] == [
        ("on_start", "started"),
        ("on_failure", "died"),
        ("on_start", "started"),
        ("on_failure", "died"),  # the second death: told once, on the first backoff run
    ]
    backoffs = g.audit()[-3:]
    assert [len(r.get("hooks", ())) for r in backoffs] == [1, 0, 0]  # empty: left out


def test_unhealthy_tells_on_failure_while_the_failing_process_runs_then_on_start(
    g: Guardian,
) -> None:
    g.configure(health={"command": ["/bin/false"], "failures": 2}, **hooks(g))
    assert g.check().rc == 0
    old = g.pid()
    assert g.check().rc == 1  # one failing run: below the threshold, no hook
    assert g.actions()[-1] == "unhealthy"
    assert len(told(g)) == 1
    assert g.check().rc == 0
    new = g.pid()
    assert new != old
    assert told(g)[1:] == [
        ["on_failure", "unhealthy", str(old), "S", str(old)],  # told before it was stopped
        ["on_start", "restarted_unhealthy", str(new), "S", str(new)],
    ]
    assert g.actions()[-1] == "restarted_unhealthy"


def test_a_failed_start_tells_on_failure_and_a_give_up_on_give_up_once(g: Guardian) -> None:
    g.configure("--exit", "3", restart={"burst": 2, "window": "1h", "backoff": "0s"}, **hooks(g))
    for _ in range(5):
        assert g.check().rc == 1
    assert g.actions() == ["start_failed", "start_failed", "gave_up", "backoff", "backoff"]
    assert [(h, action) for h, action, *_ in told(g)] == [
        ("on_failure", "start_failed"),
        ("on_failure", "start_failed"),
        ("on_give_up", "gave_up"),
    ]


def test_restart_by_hand_tells_on_start_and_a_stop_by_hand_tells_nothing(g: Guardian) -> None:
    g.configure(**hooks(g))
    assert g.check().rc == 0
    assert g.run("restart", "agent").rc == 0
    assert told(g)[-1][:2] == ["on_start", "restarted"]
    count = len(told(g))
    old = g.pid()
    assert g.run("stop", "agent").rc == 0
    assert not alive(old)
    assert len(told(g)) == count  # a stop by hand is not a failure
    assert g.check().rc == 0  # held: a check starts nothing, and tells nothing
    assert (g.actions()[-1], len(told(g))) == ("held", count)
    assert g.run("start", "agent").rc == 0  # released by hand, and started: told
    assert told(g)[-1][:2] == ["on_start", "started"]
    assert len(told(g)) == count + 1


def test_a_dry_run_runs_no_hook(g: Guardian) -> None:
    g.configure(**hooks(g))
    assert g.check().rc == 0
    kill_target(g)
    result = g.check("--dry-run")
    assert result.rc == 1
    assert "agent: would start: " in result.stdout
    assert result.stdout.rstrip().endswith("; would run on_failure (died) first")
    assert len(told(g)) == 1  # only the first start's on_start


def test_hooks_and_probes_get_guardians_own_home_whatever_env_says(g: Guardian) -> None:
    """They run as guardian (root): a HOME meant for the target's user (whose ~/.local
    could hold Python modules) must not reach them."""
    import pwd

    seen = g.tmp / "seen"
    script = g.tmp / "tell-home"
    script.write_text(f'#!/bin/sh\necho "$0 $HOME $USER $LOGNAME $GREETING" >> {seen}\n')
    script.chmod(0o755)
    g.configure(env={"HOME": str(g.tmp), "USER": "agent", "LOGNAME": "agent", "GREETING": "hi"},
                on_start=[str(script)], health={"command": [str(script)]})  # fmt: skip
    assert g.check().rc == 0  # on_start
    assert g.check().rc == 0  # the probe
    me = pwd.getpwuid(os.geteuid())
    want = f"{script} {me.pw_dir} {me.pw_name} {me.pw_name} hi"
    assert seen.read_text().splitlines() == [want, want]
    # The target itself keeps what its env says.
    environ = Path(f"/proc/{g.pid()}/environ").read_bytes().split(b"\0")
    assert f"HOME={g.tmp}".encode() in environ


def test_a_slow_on_failure_hook_does_not_eat_the_restart_it_is_told_about(g: Guardian) -> None:
    slow = g.tmp / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 100\n")
    slow.chmod(0o755)
    g.configure(on_failure=[str(slow)], hook_timeout="60s", start_timeout="4s",
                start_grace="1s", guardian={"timeout": "10s"})  # fmt: skip
    assert g.check().rc == 0
    kill_target(g)
    result = g.check()
    assert result.rc == 0, result.stderr  # restarted within the run's 10 s
    assert result.seconds < 12
    record = g.audit()[-1]
    assert record["action"] == "started"
    (told_,) = record["hooks"]
    assert told_.startswith(f"on_failure (died): {slow}: still running after ")
    assert told_.endswith("s; killed")


def test_with_its_state_unwritable_a_death_is_not_told_every_run(
    g: Guardian, tmp_path: Path
) -> None:
    """Once per death is kept by the state file: on a read-only or full disk, guardian says
    it cannot tell the death only once, instead of paging every minute."""
    import subprocess

    from conftest import tmpfs

    with tmpfs(tmp_path, "1m") as disk:
        g.configure("--die-after", "0.5", start_grace="0.1s",
                    guardian={"state_dir": str(disk / "state"),
                              "audit_log": str(g.tmp / "audit.jsonl")},
                    output=str(g.tmp / "agent.out"), restart={"min_uptime": "0s"},
                    **hooks(g))  # fmt: skip
        g.state = g.tmp  # where this test's audit log is
        assert g.check().rc == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            for _ in range(3):
                wait_for(lambda: not g.matches(), what="the agent to die")
                assert g.check().rc == 3  # started all the same; the state said unwritable
                assert g.audit()[-1]["hooks"][0] == (
                    "on_failure (died): not run: its state file cannot be written, so the "
                    "death could not be told only once"
                )
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        g.track()
    assert [action for _, action, *_ in told(g)] == ["started"] * 4

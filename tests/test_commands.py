"""run_command against real processes: bounded in time and in memory, whatever they do."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from guardian.commands import TAIL_BYTES, TAIL_LINES, CommandResult, run_command

from conftest import Reaper, alive, wait_for

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
# Two noisy cores: a bound on elapsed time is the limit plus this much.
SLACK = 1.5


def timed(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> CommandResult:
    """run_command, and assert that it kept to its limit (loosely)."""
    began = time.monotonic()
    result = run_command(tuple(argv), timeout=timeout, env=ENV if env is None else env)
    elapsed = time.monotonic() - began
    assert elapsed < timeout + SLACK, (elapsed, result)
    assert result.seconds <= elapsed
    return result


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_exit_0_with_its_output() -> None:
    result = timed(sh("echo out; echo err >&2"), timeout=10)
    assert result == CommandResult(0, ("out", "err"), result.seconds, lingering=False)
    assert result.seconds < 3


def test_exit_3_keeps_only_the_last_lines() -> None:
    result = timed(sh("for i in $(seq 1 30); do echo line $i; done; echo last >&2; exit 3"), 10)
    assert result.status == 3
    assert len(result.output) == TAIL_LINES
    assert result.output == (*(f"line {i}" for i in range(22, 31)), "last")
    assert not result.lingering


def test_output_comes_from_the_last_bytes_only() -> None:
    result = timed([sys.executable, "-c", "print('a' * 10000); print('end')"], 10)
    assert result.status == 0
    # 4096 bytes: 4091 of the long line, its newline, "end" and its newline.
    assert result.output == ("a" * (TAIL_BYTES - 5), "end")


def test_invalid_utf8_is_replaced() -> None:
    result = timed(sh(r"printf 'caf\351\n'"), 10)
    assert result.output == ("caf\ufffd",)


def test_killed_by_a_signal_is_a_negative_status() -> None:
    assert timed(sh("kill -9 $$"), 10).status == -9


def test_runs_in_root_folder_with_only_the_given_env_and_no_stdin() -> None:
    result = timed(sh('pwd; echo "$FOO"; cat; echo "HOME=${HOME-unset}"'), 10, {"FOO": "bar"})
    # cat reads /dev/null: EOF at once, not the test's stdin
    assert result == CommandResult(0, ("/", "bar", "HOME=unset"), result.seconds)


def test_no_descriptor_of_ours_is_inherited(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.set_inheritable(fd, True)
        script = "import os; print(' '.join(sorted(os.listdir('/proc/self/fd'))))"
        result = timed([sys.executable, "-c", script], 10)
    finally:
        os.close(fd)
    assert result.status == 0
    # 0, 1, 2 and the one listdir itself opened: never ours
    assert str(fd) not in result.output[0].split()[4:]
    assert len(result.output[0].split()) == 4


def test_a_flood_of_output_is_killed_at_the_limit_in_bounded_memory() -> None:
    me = psutil.Process()
    before = me.memory_info().rss
    result = timed(["/usr/bin/yes", "x" * 100], timeout=1)
    grown = me.memory_info().rss - before
    assert result.status is None
    assert "x" * 100 in result.output
    assert result.seconds >= 1
    assert grown < 50 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"


def test_a_command_past_its_limit_is_killed_with_its_whole_group(reaper: Reaper) -> None:
    script = "sleep 300 & echo $!; sleep 300 & echo $!; wait"
    result = timed(sh(script), timeout=1)
    pids = [int(line) for line in result.output]
    for pid in pids:
        reaper.track(pid)  # ended at teardown, should this test fail
    assert result.status is None
    assert result.seconds >= 1
    assert len(pids) == 2
    # SIGKILLed with the group; reaped by whoever inherited them
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5, what=f"{pids} to be gone")


def test_a_trickle_of_output_ends_at_the_limit() -> None:
    result = timed(sh("while :; do printf .; sleep 0.2; done"), timeout=1)
    assert result.status is None
    assert result.output
    assert set(result.output[0]) == {"."}
    assert result.seconds >= 1


def test_a_command_that_closes_its_output_early_is_still_waited_for() -> None:
    result = timed(sh("exec >/dev/null 2>&1; sleep 0.3; exit 4"), 10)
    assert result == CommandResult(4, (), result.seconds, lingering=False)
    assert result.seconds >= 0.3


DAEMON = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()  # a daemon of its own: out of the command's group, and holding its stdout
    {child}
    os._exit(0)
with open(sys.argv[1], "w") as f:
    f.write(str(pid))
print("hook done", flush=True)
"""


def start_daemon_hook(tmp_path: Path, reaper: Reaper, child: str) -> tuple[CommandResult, int]:
    pidfile = tmp_path / "daemon.pid"
    script = DAEMON.format(child=child)
    result = timed([sys.executable, "-c", script, str(pidfile)], timeout=10)
    daemon = int(pidfile.read_text())
    reaper.track(daemon)  # the test ends it, by pid: run_command must not
    return result, daemon


def test_a_hook_that_leaves_a_daemon_holding_its_output_is_not_waited_for(
    tmp_path: Path, reaper: Reaper
) -> None:
    result, daemon = start_daemon_hook(tmp_path, reaper, "time.sleep(300)")
    assert result.status == 0
    assert result.lingering
    assert result.output == ("hook done",)
    assert result.seconds < 3
    assert alive(daemon)  # only recorded, never ended: a hook may start one on purpose


def test_a_daemon_that_floods_the_output_it_holds_does_not_hold_us(
    tmp_path: Path, reaper: Reaper
) -> None:
    result, _ = start_daemon_hook(tmp_path, reaper, "while True: os.write(1, b'y' * 65536)")
    assert result.status == 0
    assert result.lingering
    assert result.seconds < 3


def test_a_child_in_the_same_group_holding_the_output_is_left_running(reaper: Reaper) -> None:
    result = timed(sh("sleep 300 & echo $!"), timeout=10)
    (pid,) = (int(line) for line in result.output)
    reaper.track(pid)
    assert result.status == 0
    assert result.lingering
    assert result.seconds < 3
    assert alive(pid)


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["/no/such/program"], ENV, "cannot run /no/such/program: No such file or directory"),
        (["/bin/sh\0x"], ENV, "cannot run /bin/sh\0x: embedded null byte"),
        (["/bin/sh", "-c", "true"], {"A": "b\0c"}, "cannot run /bin/sh: embedded null byte"),
        (["/bin/sh", "-c", "true"], {"A=B": "c"}, "cannot run /bin/sh: illegal environment"),
    ],
)
def test_a_command_that_cannot_be_started_is_127(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    result = timed(argv, 10, env)
    assert result.status == 127
    (line,) = result.output
    assert line.startswith(expected)


def test_a_program_that_is_not_executable_is_127(tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o644)
    if os.geteuid() == 0 and os.access(program, os.X_OK):
        pytest.skip("root may execute anything here")
    result = timed([str(program)], 10)
    assert result == CommandResult(127, (f"cannot run {program}: Permission denied",), 0.0)


def test_a_child_that_left_its_group_is_killed_at_the_limit(tmp_path: Path, reaper: Reaper) -> None:
    # A child that moved to a process group of its own (setpgid) is still in the session
    # the command leads: killed with it at the limit.
    pid_file = tmp_path / "child.pid"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setpgid(0, 0)\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(60)\n"
    )
    result = run_command((sys.executable, "-c", code), timeout=1.0, env={})
    child = int(pid_file.read_text())
    reaper.track(child)
    assert result.status is None
    wait_for(lambda: not alive(child), timeout=5, what="the child that left its group")

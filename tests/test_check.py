"""`guardian check` end to end: real targets, real pidfiles, real lock contention."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from guardian.proc import stat as proc_stat

from conftest import Guardian, alive, wait_for, write_config

FIELDS = {"ts", "host", "guardian_pid", "version", "target", "action", "reason", "pid",
          "old_pid", "duration_ms", "dry_run"}  # fmt: skip


def test_dead_target_is_started_and_healthy_one_left_alone(g: Guardian) -> None:
    first = g.check()
    assert (first.rc, first.stdout) == (0, "")
    assert "agent: started" in first.stderr
    pid = g.pid()
    assert alive(pid)

    second = g.check()
    assert (second.rc, second.stdout, second.stderr) == (0, "", "")  # quiet when all is well
    assert g.pid() == pid
    assert [m.pid for m in g.matches()] == [pid]
    assert g.actions() == ["started", "ok"]


def test_started_target_survives_guardian_and_a_kill_of_its_process_group(g: Guardian) -> None:
    # Run guardian as cron would: in a process group of its own, behind a shell,
    # with its output on a pipe that must close when guardian exits.
    shell = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f'"{sys.executable}" -m guardian check --config "{g.config_path}"; sleep 60',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    g.reaper.track(shell.pid)
    pid = wait_for(lambda: g.pidfile.exists() and g.actions() and g.pid(), what="the start")
    g.reaper.track(pid)
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    assert shell.stdout is not None
    with shell.stdout:
        shell.stdout.read()  # EOF: the target does not hold guardian's output open
    time.sleep(0.5)
    assert alive(pid)
    assert os.getsid(pid) == pid  # it leads a session of its own
    assert g.check().rc == 0
    assert g.pid() == pid


def test_output_pipe_closes_when_guardian_exits(g: Guardian) -> None:
    # The `cmd &` bug of shell guardians: cron waits for EOF on the job's output.
    result = g.check(timeout=20)  # subprocess.run reads to EOF: it would hang here
    assert result.rc == 0
    assert alive(g.pid())


def test_target_gets_devnull_output_file_cwd_env_and_no_other_descriptors(g: Guardian) -> None:
    g.configure(cwd=str(g.tmp), env={"GREETING": "hello"}, output=str(g.tmp / "agent.out"))
    assert g.check().rc == 0
    pid = g.pid()
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert fds[0] == "/dev/null"
    assert fds[1] == fds[2] == str(g.tmp / "agent.out")
    # Nothing else, above all not guardian's lock: a target holding it would hold it for ever.
    assert set(fds) == {0, 1, 2}, fds
    assert os.readlink(f"/proc/{pid}/cwd") == str(g.tmp)
    assert "Umask:\t0022" in Path(f"/proc/{pid}/status").read_text()
    env = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert env["GREETING"] == "hello"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "PYTEST_CURRENT_TEST" not in env  # cron's environment is not leaked, nor ours
    # No `user`: guardian's own user's HOME, USER and LOGNAME, as a login would set them
    # (from the password database, whatever HOME the caller had).
    me = pwd.getpwuid(os.geteuid())
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (me.pw_dir, me.pw_name, me.pw_name)
    wait_for(lambda: "starting" in (g.tmp / "agent.out").read_text(), what="output")


def test_home_user_and_logname_set_in_the_config_win(g: Guardian) -> None:
    g.configure(env={"HOME": str(g.tmp), "USER": "agent", "LOGNAME": "agent"})
    assert g.check(env={**os.environ, "HOME": "/elsewhere"}).rc == 0
    environ = Path(f"/proc/{g.pid()}/environ").read_bytes().split(b"\0")
    for item in (f"HOME={g.tmp}", "USER=agent", "LOGNAME=agent"):
        assert item.encode() in environ


def test_pidfile_naming_an_unrelated_process_leaves_it_untouched(g: Guardian) -> None:
    bystander = g.spawn(["sleep", "300"])
    g.pidfile.write_text(f"{bystander.pid}\n")
    result = g.check()
    assert result.rc == 0
    assert g.pid() != bystander.pid
    assert bystander.poll() is None  # alive, and never signalled
    record = g.audit()[-1]
    assert record["action"] == "started"
    assert record["old_pid"] == bystander.pid
    assert (
        f"pidfile names pid {bystander.pid}, whose command line is ['sleep', '300']"
        in (record["reason"])
    )


def test_pidfile_naming_a_zombie_counts_as_dead(g: Guardian) -> None:
    zombie = g.spawn(["true"])  # exits at once; we do not reap it yet
    wait_for(lambda: (s := proc_stat(zombie.pid)) and s.state == "Z", what="a zombie")
    g.pidfile.write_text(str(zombie.pid))
    result = g.check()
    assert result.rc == 0
    assert g.pid() != zombie.pid
    assert "zombie" in g.audit()[-1]["reason"]
    zombie.wait()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (b"hello", "not a pid"),
        (b"-5", "not a pid"),
        (b"0", "never a target"),
        (b"1", "never a target"),
        (b"99999999999", "larger than any pid"),
        (b"12 34", "not a pid"),
        (b"\xff\xfe", "not a pid"),
        (b"7" * 5000, "not a pid"),
        (None, "not a regular file"),  # a folder
    ],
)
def test_garbage_pidfile_is_stale_not_an_error(
    g: Guardian, content: bytes | None, why: str
) -> None:
    if content is None:
        g.pidfile.mkdir()
    else:
        g.pidfile.write_bytes(content)
    result = g.check("--dry-run")
    assert result.rc == 1
    assert "would start" in result.stdout
    assert why in result.stdout
    started = g.check()
    if content is None:
        # A folder cannot be replaced by a pidfile: the target is started all the same,
        # the failure is said (exit 3), and the next run finds it by its command line.
        assert started.rc == 3
        assert "cannot write pidfile" in started.stderr
        assert len(g.matches()) == 1
        again = g.check()
        # It is remembered, so found at once; the pidfile still cannot be written, which
        # is said on every run (exit 3), as for every write guardian could not make.
        assert again.rc == 3
        assert "cannot write pidfile" in again.stderr
        assert g.actions()[-2:] == ["warning", "adopted"]
        assert "found before, is still the target" in g.audit()[-1]["reason"]
        assert len(g.matches()) == 1
    else:
        assert started.rc == 0, started.stderr
        assert alive(g.pid())


def test_running_target_without_pidfile_is_adopted_not_duplicated(g: Guardian) -> None:
    running = g.spawn(g.command, start_new_session=True)
    wait_for(g.matches, what="the target")
    result = g.check()
    assert result.rc == 0
    assert g.pid() == running.pid  # the pidfile is guardian's, so it is rewritten
    assert [m.pid for m in g.matches()] == [running.pid]
    record = g.audit()[-1]
    assert (record["action"], record["pid"]) == ("adopted", running.pid)
    assert g.check().stderr == ""
    assert g.actions()[-1] == "ok"


def test_reused_pid_is_not_taken_for_the_target(g: Guardian) -> None:
    # The pidfile names a process with the target's very command line, but one
    # that started after the pidfile was written: the pid was reused.
    g.pidfile.write_text("999999\n")
    hour_ago = time.time() - 3600
    os.utime(g.pidfile, (hour_ago, hour_ago))
    newcomer = g.spawn(g.command, start_new_session=True)
    wait_for(g.matches, what="the target")
    g.pidfile.write_text(f"{newcomer.pid}\n")
    os.utime(g.pidfile, (hour_ago, hour_ago))
    dry = g.check("--dry-run")
    assert f"pid {newcomer.pid}, which started after the pidfile was written" in dry.stdout
    # The scan still finds it, so it is adopted, not duplicated.
    assert g.check().rc == 0
    assert [m.pid for m in g.matches()] == [newcomer.pid]
    assert g.actions()[-1] == "adopted"


def test_twenty_concurrent_checks_start_exactly_one(g: Guardian) -> None:
    g.configure("--delay", "0.5", start_grace="1s")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(20)
    ]
    codes = [run.wait(timeout=60) for run in runs]
    g.track()
    assert codes == [0] * 20
    assert len(g.matches()) == 1
    actions = g.actions()
    assert len(actions) == 20
    assert actions.count("started") == 1
    assert set(actions) <= {"started", "ok", "skipped"}


def test_target_that_exits_at_once_is_start_failed_with_its_output(g: Guardian) -> None:
    g.configure("--exit", "3")
    result = g.check()
    assert result.rc == 1
    assert "start failed" in result.stderr
    assert "failing on purpose" in result.stderr
    record = g.audit()[-1]
    assert record["action"] == "start_failed"
    assert "exited with status 3" in record["error"]
    assert "agent: failing on purpose" in record["output_tail"]
    first = record["output_tail"]
    # The next failed start's tail is its own output, not the last start's again.
    assert g.check().rc == 1
    again = g.audit()[-1]["output_tail"]
    assert first[0] != again[0]  # "agent PID starting": two starts, two pids
    assert [len(first), len(again)] == [2, 2]
    output = (g.state / "agent.out").read_text().splitlines()
    assert output == first + again  # both are in the file


def test_target_that_never_becomes_ready_is_ended_within_start_timeout(g: Guardian) -> None:
    pidfile = g.tmp / "never.pid"
    g.configure("--daemonize", str(pidfile), "--no-pidfile", daemonizes=True,
                pidfile=str(pidfile), start_timeout="2s")  # fmt: skip
    result = g.check()
    assert result.rc == 1
    assert 2 <= result.seconds < 15
    record = g.audit()[-1]
    assert record["action"] == "start_failed"
    assert "not ready within start_timeout 2s" in record["error"]
    # What it started (a daemon that forked away) was ended: nothing is left running.
    wait_for(lambda: not g.matches(), timeout=10, what="the unready target to be ended")


def test_target_that_dies_during_start_grace_is_start_failed(g: Guardian) -> None:
    g.configure("--die-after", "0.3", start_grace="2s")
    result = g.check()
    assert result.rc == 1
    assert "exited with status 1" in g.audit()[-1]["error"]


def test_daemonizing_target_is_found_by_the_pidfile_it_writes(g: Guardian) -> None:
    pidfile = g.tmp / "daemon.pid"
    g.configure(
        "--daemonize", str(pidfile), "--delay", "0.3", daemonizes=True, pidfile=str(pidfile)
    )
    assert g.check().rc == 0
    pid = int(pidfile.read_text())
    g.reaper.track(pid)
    assert alive(pid)
    assert g.check().stderr == ""
    assert g.actions() == ["started", "ok"]
    assert [m.pid for m in g.matches()] == [pid]


def test_own_timeout_ends_the_run_with_124_and_ends_what_it_started(g: Guardian) -> None:
    pidfile = g.tmp / "slow.pid"
    g.configure("--daemonize", str(pidfile), "--delay", "60", daemonizes=True,
                pidfile=str(pidfile), start_timeout="60s")  # fmt: skip
    result = g.check("--timeout", "2s", timeout=30)
    assert result.rc == 124
    assert result.seconds < 2 + 5  # the soft alarm, not the hard backstop, ended it
    assert "timeout" in result.stderr
    record = g.audit()[-1]
    assert record["action"] == "timeout"
    assert "timeout of 2s ran out while waiting for pid" in record["reason"]
    assert not g.matches()


def test_dry_run_changes_nothing(g: Guardian) -> None:
    result = g.check("--dry-run")
    assert result.rc == 1
    assert result.stdout.startswith("agent: would start: no pidfile at")
    assert not g.pidfile.exists()
    assert not (g.state / "locks").exists()
    assert not g.matches()
    assert g.actions() == ["would_start"]
    assert g.audit()[0]["dry_run"] is True

    assert g.check().rc == 0
    pid = g.pidfile.read_bytes()
    dry = g.check("--dry-run", "-v")
    assert dry.rc == 0
    assert dry.stdout.startswith("agent: ok: running")
    assert g.pidfile.read_bytes() == pid


def test_every_audit_line_is_json_with_the_documented_fields(g: Guardian) -> None:
    g.check("--dry-run")
    g.check()
    g.check()
    g.check("--json")
    lines = (g.state / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        record = json.loads(line)
        assert set(record) >= FIELDS
        assert record["ts"].endswith("Z")
        assert record["version"]
        assert record["target"] == "agent"
    # --json prints the run's records on stdout, the same as the log's
    last = g.check("--json")
    assert json.loads(last.stdout)["action"] == "ok"


def test_unwritable_audit_log_does_not_stop_a_start(g: Guardian) -> None:
    blocker = g.tmp / "not-a-folder"
    blocker.write_text("")
    g.configure(guardian={"audit_log": str(blocker / "audit.jsonl")})
    result = g.check()
    assert result.rc == 3
    assert alive(g.pid())  # the target was started all the same
    assert "cannot write audit log" in result.stderr
    record = json.loads(result.stderr.split("the record was: ", 1)[1].splitlines()[0])
    assert record["action"] == "started"


def test_only_selected_targets_are_checked(g: Guardian) -> None:
    result = g.check("--target", "nope")
    assert result.rc == 2
    assert "no target named 'nope'" in result.stderr
    assert g.check("--target", "agent").rc == 0


def test_target_runs_as_the_configured_user(
    system_user: str, shared_dir: Path, g: Guardian
) -> None:
    import shutil

    # The target's interpreter and script must be readable by that user: where
    # python3 is a build under /root (mode 700), use the system's.
    agent = shared_dir / "agent.py"
    shutil.copy(Path(__file__).parent / "targets" / "agent.py", agent)
    agent.chmod(0o644)
    g.configure(
        command=["/usr/bin/python3", str(agent), "--tag", str(g.tmp)],
        user=system_user,
        cwd=str(shared_dir),
    )
    result = g.check()
    assert result.rc == 0, result.stderr
    pid = g.pid()
    pw = pwd.getpwnam(system_user)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
    assert uids == [str(pw.pw_uid)] * 4
    assert gids == [str(pw.pw_gid)] * 4
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"USER={system_user}".encode() in env
    assert f"HOME={pw.pw_dir}".encode() in env
    assert g.check().stderr == ""  # found healthy afterwards, as root


def test_program_that_cannot_be_executed_is_start_failed_with_the_reason(g: Guardian) -> None:
    # The program is there and executable (a missing one is a config error, exit 2), but
    # the kernel cannot run it: its #! interpreter is missing (removed by an upgrade, say).
    script = g.tmp / "agent.sh"
    script.write_text(f"#!{g.tmp}/no-such-interpreter\n")
    script.chmod(0o755)
    g.configure(command=[str(script), "--serve"])
    result = g.check()
    assert result.rc == 1
    record = g.audit()[-1]
    assert record["action"] == "start_failed"
    assert record["error"] == f"cannot start {script}: No such file or directory"
    assert f"start failed: cannot start {script}" in result.stderr


def test_daemon_without_its_pidfile_is_adopted_and_its_pidfile_left_alone(g: Guardian) -> None:
    pidfile = g.tmp / "daemon.pid"
    g.configure("--daemonize", str(pidfile), daemonizes=True, pidfile=str(pidfile))
    assert g.check().rc == 0
    pid = int(pidfile.read_text())
    pidfile.unlink()  # someone cleaned /run: the daemon runs on without its pidfile
    result = g.check()
    assert (result.rc, result.stderr) == (0, "")
    # guardian remembers what it started: found without a scan, quietly, every run.
    assert (g.actions()[-1], g.audit()[-1]["pid"]) == ("ok", pid)
    assert "found before, is still the target" in g.audit()[-1]["reason"]
    assert not pidfile.exists()  # the target's own file: guardian does not write it
    assert [m.pid for m in g.matches()] == [pid]


def state_bytes(g: Guardian) -> bytes:
    return (g.state / "state" / "agent.json").read_bytes()


def test_dry_run_during_backoff_says_when_the_next_try_is(g: Guardian) -> None:
    g.configure("--die-after", "0.3", start_grace="0.1s",
                restart={"backoff": "1h", "max_backoff": "1h", "min_uptime": "1m"})  # fmt: skip
    assert g.check().rc == 0
    wait_for(lambda: not g.matches(), what="the agent to die")
    assert g.check().rc == 0  # the first restart is never delayed
    wait_for(lambda: not g.matches(), what="the agent to die again")
    # Dying young twice in a row: a real run would wait an hour. So says the dry run.
    before = state_bytes(g)
    dry = g.check("--dry-run")
    assert dry.rc == 1
    (line,) = dry.stdout.splitlines()
    assert line.startswith("agent: backoff: would wait: pidfile names pid ")
    assert "died young 2 times in a row; waiting 3600s; next try at 20" in line
    assert "would start" not in line
    assert not g.matches()  # nothing started
    assert state_bytes(g) == before  # nothing written
    assert g.check().rc == 1
    real = g.audit()[-1]
    assert real["action"] == "backoff"
    # The dry run's time (a second apart at most: the death is counted from when the real
    # run first saw it, the dry run's from when it looked).
    said = datetime.fromisoformat(g.audit()[-2]["next_try"])
    assert abs((datetime.fromisoformat(real["next_try"]) - said).total_seconds()) <= 2


def test_dry_run_says_it_would_give_up_and_then_that_it_gave_up(g: Guardian) -> None:
    g.configure("--exit", "3", restart={"burst": 2, "window": "1h", "backoff": "0s"})
    assert [g.check().rc for _ in range(2)] == [1, 1]
    dry = g.check("--dry-run")
    assert dry.stdout.startswith("agent: gave_up: would wait: ")
    assert "started 2 times in 3600s (burst 2): not starting it again before " in dry.stdout
    assert g.actions()[-1] == "gave_up"
    assert g.audit()[-1]["dry_run"]
    assert g.check().rc == 1
    assert g.audit()[-1]["action"] == "gave_up"  # the dry run changed nothing
    dry = g.check("--dry-run")
    assert dry.stdout.startswith("agent: backoff: would wait: ")
    assert "gave up on it earlier; waiting out the window; next try at " in dry.stdout


def test_dry_run_runs_the_probes_and_says_what_they_found(g: Guardian) -> None:
    flag = g.tmp / "healthy"
    flag.touch()
    g.configure(health={"command": ["/usr/bin/test", "-e", str(flag)], "failures": 2})
    assert g.check().rc == 0
    pid = g.pid()
    dry = g.check("--dry-run")
    assert dry.rc == 0, dry.stdout
    assert dry.stdout.splitlines()[0].startswith("agent: ok: running: pidfile names pid ")
    assert dry.stdout.splitlines()[1].startswith("agent: probe command: ok: /usr/bin/test exited 0")
    flag.unlink()
    before = state_bytes(g)
    for _ in range(2):  # read-only: a dry run never counts a failing run
        dry = g.check("--dry-run")
        assert dry.rc == 1
        first, probe = dry.stdout.splitlines()
        assert first.startswith("agent: unhealthy: running: pidfile names pid ")
        assert first.endswith("command: /usr/bin/test exited 1 (1 of 2 failing runs): "
                              "not restarted yet")  # fmt: skip
        assert probe.startswith("agent: probe command: FAILED: /usr/bin/test exited 1 (")
    assert state_bytes(g) == before
    assert g.check().rc == 1  # the real run counts it
    dry = g.check("--dry-run")
    assert dry.stdout.splitlines()[0].endswith("(2 of 2 failing runs): would restart it")
    assert g.pid() == pid  # and nothing was restarted
    assert alive(pid)


def test_verbose_lists_each_probe_and_its_result(g: Guardian) -> None:
    beat = g.tmp / "beat"
    beat.touch()
    g.configure(health={"command": ["/bin/true"], "heartbeat_file": str(beat)})
    assert g.check().rc == 0
    quiet = g.check()
    assert (quiet.rc, quiet.stderr) == (0, "")  # all well: nothing said
    loud = g.check("-v")
    lines = loud.stderr.splitlines()
    assert lines[0].startswith("guardian: agent: ok: running: pidfile names pid ")
    assert lines[1].startswith(f"guardian: agent: probe heartbeat_file: ok: {beat} is ")
    assert "s old (max_age 30s) (" in lines[1]
    assert lines[2].startswith("guardian: agent: probe command: ok: /bin/true exited 0 (")
    assert g.audit()[-1]["probes"] == [line.split(" probe ", 1)[1] for line in lines[1:]]


def test_a_removed_program_is_a_config_error_to_check_but_can_still_be_stopped(
    g: Guardian,
) -> None:
    """An upgrade removed the program under a running target: check says so at once (exit
    2, no failed start every minute), and `guardian stop` still stops what runs."""
    link = g.tmp / "python"
    link.symlink_to(sys.executable)
    g.configure(command=[str(link), *g.agent()[1:]])
    assert g.check().rc == 0
    pid = g.pid()
    link.unlink()
    result = g.check()
    assert result.rc == 2
    assert f"targets.agent.command: program {link}: No such file or directory" in result.stderr
    assert alive(pid)  # nothing was done to it
    stopped = g.run("stop", "agent")
    assert stopped.rc == 0, stopped.stderr
    assert g.audit()[-1]["action"] == "held"
    wait_for(lambda: not alive(pid), what="the target to stop")


def test_one_targets_missing_program_does_not_keep_the_others_down(g: Guardian) -> None:
    """A real check names the key and exits 2, but checks every other target: an
    uninstalled notify script (or agent) must not keep supervisord down."""
    notify = g.tmp / "notify"
    notify.write_text("#!/bin/sh\n")
    notify.chmod(0o755)
    gone = g.tmp / "uninstalled-agent"
    fields = {"pidfile": str(g.pidfile), "start_grace": "0.3s", "on_failure": [str(notify)]}
    write_config(g.config_path, {"state_dir": str(g.state)}, {
        "super": {"command": g.command, **fields},
        "other": {"command": [str(gone), "300.019"], "pidfile": str(g.tmp / "other.pid")},
    })  # fmt: skip
    gone.symlink_to("/bin/sleep")
    assert g.check().rc == 0
    g.reaper.track(int((g.tmp / "other.pid").read_text()))
    gone.unlink()
    notify.unlink()
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    result = g.check()
    assert result.rc == 2, result.stderr
    records = {r["target"]: r for r in g.audit()[-3:]}
    assert records["super"]["action"] == "started"  # restarted all the same
    (hook,) = records["super"]["hooks"]  # tried, and said
    assert hook.startswith(f"on_failure (died): {notify}: ")
    warning = next(r for r in g.audit()[-3:] if r["action"] == "warning")
    assert warning["target"] == "super"
    assert warning["reason"].startswith(f"config error: {g.config_path}: targets.super."
                                        f"on_failure: program {notify}: No such file")  # fmt: skip
    assert records["other"]["action"] == "error"
    assert records["other"]["reason"] == (
        f"config error: {g.config_path}: targets.other.command: program {gone}: No such file "
        "or directory; not checked until it is fixed"
    )
    assert f"targets.other.command: program {gone}" in result.stderr
    assert len(g.matches()) == 1


def test_a_state_folder_another_user_owns_is_refused_before_anything_is_made_in_it(
    g: Guardian,
) -> None:
    """Its owner could rename the lock folder away (and delete the audit log): a check
    as root acts on nothing there, and says so."""
    g.state.mkdir()
    os.chown(g.state, 65534, 65534)  # nobody's
    audit = g.tmp / "audit.jsonl"
    g.configure(guardian={"audit_log": str(audit)})
    result = g.check()
    assert result.rc == 1
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["action"] == "error"
    assert f"{g.state}, which holds the lock folder, is owned by uid 65534" in record["reason"]
    assert not g.matches()  # nothing started
    assert list(g.state.iterdir()) == []  # nothing made in it
    dry = g.check("--dry-run")
    assert dry.rc == 2
    assert f"guardian.state_dir: {g.state} is owned by nobody with mode 755" in dry.stderr


def test_a_missing_probe_program_leaves_liveness_guarded(g: Guardian) -> None:
    probe = g.tmp / "probe"
    probe.write_text("#!/bin/sh\n")
    probe.chmod(0o755)
    g.configure(health={"command": [str(probe)], "failures": 1})
    assert g.check().rc == 0
    probe.unlink()
    assert g.check().rc == 2  # said, and healthy all the same: not restarted
    pid = g.pid()
    warning, ok = g.audit()[-2:]
    assert warning["action"] == "warning"
    assert warning["reason"] == (
        f"config error: {g.config_path}: targets.agent.health.command: program {probe}: No "
        "such file or directory; the probe is not run until it is fixed"
    )
    assert ok["action"] == "ok"
    assert "probes" not in ok  # none ran
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    assert g.check().rc == 2
    assert g.actions()[-1] == "started"  # a dead target is still started
    assert g.pid() != pid

"""Hostile input: files that are not what they should be, state that lies, signals, closed streams.

Every case asserts the same things: the run ends within its timeout plus a
second, prints no traceback, writes exactly the expected records, leaves at
most one copy of the target running, and signals nothing unrelated (a
bystander process of the test's own, in a session of its own, stays alive).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guardian.discovery import Matcher, scan
from guardian.proc import stat as proc_stat

from conftest import AGENT, Guardian, Result, alive, wait_for, write_config

TIMEOUT = 5.0  # every run here is given this; each must end within it and a second


class Hostile:
    """``g`` with a bystander, and a check that asserts what every hostile case must."""

    def __init__(self, g: Guardian) -> None:
        self.g = g
        g.configure(guardian={"timeout": f"{TIMEOUT:g}s"})
        self.bystander = g.spawn(["sleep", "300"], start_new_session=True)

    def configure(self, *extra: str, **kwargs: Any) -> None:
        guardian = {"timeout": f"{TIMEOUT:g}s", **kwargs.pop("guardian", {})}
        self.g.configure(*extra, guardian=guardian, **kwargs)

    def check(self, *args: str, rc: int, actions: list[str], **popen: Any) -> Result:
        result = self.g.check(*args, **popen)
        # A second, and what starting Python costs on a busy machine.
        assert result.seconds < TIMEOUT + 1.5, result
        assert "Traceback" not in result.stderr, result.stderr
        assert (result.rc, self.g.actions()) == (rc, actions), result.stderr
        assert len(self.g.matches()) <= 1
        assert self.bystander.poll() is None  # never signalled
        return result


@pytest.fixture
def h(g: Guardian) -> Hostile:
    return Hostile(g)


def fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def folder(path: Path) -> None:
    path.mkdir(parents=True)


def symlink(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/etc/passwd")


KINDS: dict[str, Callable[[Path], None]] = {"FIFO": fifo, "folder": folder, "symlink": symlink}


@pytest.mark.parametrize("kind", ["FIFO", "folder"])
def test_config_that_is_not_a_file_is_refused_at_once(h: Hostile, kind: str) -> None:
    h.g.config_path.unlink()
    KINDS[kind](h.g.config_path)
    result = h.check(rc=2, actions=[])
    # (A folder is already refused by the option's own check.)
    assert "not a regular file" in result.stderr or "is a directory" in result.stderr


def test_huge_config_is_refused(h: Hostile) -> None:
    with h.g.config_path.open("a") as f:
        f.write("#" * (1 << 20) + "\n")
    result = h.check(rc=2, actions=[])
    assert "larger than 1 MiB" in result.stderr


@pytest.mark.parametrize("kind", ["FIFO", "folder"])
def test_audit_log_that_is_not_a_file_is_said_and_the_target_started(h: Hostile, kind: str) -> None:
    KINDS[kind](h.g.state / "audit.jsonl")
    result = h.check(rc=3, actions=[])  # no record could be written: stderr has them
    assert f"is a {kind}" in result.stderr or "not a regular file" in result.stderr
    assert '"action": "started"' in result.stderr
    assert alive(h.g.pid())


@pytest.mark.parametrize("kind", ["FIFO", "folder"])
def test_output_file_that_is_not_a_file_falls_back_to_devnull(h: Hostile, kind: str) -> None:
    out = h.g.tmp / "agent.out"
    h.configure(output=str(out))
    KINDS[kind](out)
    result = h.check(rc=3, actions=["warning", "started"])
    assert "cannot open output file" in result.stderr
    assert alive(h.g.pid())
    assert os.readlink(f"/proc/{h.g.pid()}/fd/1") == "/dev/null"


@pytest.mark.parametrize("kind", ["FIFO", "folder", "symlink"])
def test_state_file_that_is_not_a_file_is_not_believed(h: Hostile, kind: str) -> None:
    path = h.g.state / "state" / "agent.json"
    KINDS[kind](path)
    expected = ["warning", "started"] if kind != "folder" else ["warning", "warning", "started"]
    result = h.check(rc=3, actions=expected)
    assert "not believed, rebuilt" in h.g.audit()[0]["reason"]
    assert alive(h.g.pid())
    if kind == "folder":  # it cannot be replaced: said on every run, and nothing else happens
        assert "cannot write state file" in result.stderr
    else:  # replaced by a file of guardian's own
        assert stat.S_ISREG(os.lstat(path).st_mode)
        h.check(rc=0, actions=[*expected, "ok"])


@pytest.mark.parametrize("kind", ["FIFO", "folder", "symlink"])
def test_lock_that_is_not_a_file_is_an_error_and_nothing_is_started(h: Hostile, kind: str) -> None:
    lock = h.g.state / "locks" / "agent.lock"
    (h.g.state / "locks").mkdir(parents=True, mode=0o700)
    KINDS[kind](lock)
    result = h.check(rc=1, actions=["error"])
    assert "it must not act without its lock" in h.g.audit()[0]["reason"]
    assert "agent: error" in result.stderr
    assert not h.g.matches()


def test_lock_folder_others_can_write_to_is_not_used(h: Hostile) -> None:
    locks = h.g.state / "locks"
    locks.mkdir(parents=True)
    locks.chmod(0o777)
    h.check(rc=1, actions=["error"])
    assert "others could replace the lock" in h.g.audit()[0]["reason"]
    assert not h.g.matches()


def test_pidfile_that_is_a_fifo_is_stale_and_replaced(h: Hostile) -> None:
    fifo(h.g.pidfile)
    h.check(rc=0, actions=["started"])
    assert "is a FIFO, not a regular file" in h.g.audit()[0]["reason"]
    assert stat.S_ISREG(os.lstat(h.g.pidfile).st_mode)


STATES = {
    "nested": b"[" * 100_000 + b"]" * 100_000,
    "huge": b'{"boot_id": "' + b"x" * (1 << 17) + b'"}',
    "future": None,  # filled in with this boot's id below
    "past": None,
    "types": None,
    "infinity": None,
}


def _state(kind: str) -> bytes:
    from guardian.state import boot_id

    data = STATES[kind]
    if data is not None:
        return data
    base: dict[str, object] = {"boot_id": boot_id(), "starts": [], "current": None}
    if kind == "future":
        base["gave_up_at"] = 1e300
    elif kind == "past":
        base["dead_since"] = -1e300
    elif kind == "types":
        base["young"] = {"a": [1, 2]}
    else:
        return json.dumps(base).replace('"current": null', '"starts": [Infinity]').encode()
    return json.dumps(base).encode()


@pytest.mark.parametrize("kind", list(STATES))
def test_hostile_state_file_is_rebuilt_with_a_warning(h: Hostile, kind: str) -> None:
    path = h.g.state / "state" / "agent.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(_state(kind))
    path.chmod(0o600)
    h.check(rc=3, actions=["warning", "started"])
    assert "rebuilt" in h.g.audit()[0]["reason"]
    json.loads(path.read_bytes())  # whole, and guardian's own again


def _leftover_scene(h: Hostile) -> tuple[Path, int]:
    """A target started by guardian with a child in its session, then killed: the child
    is what it left behind. Returns the state file and the child's pid."""
    child_pidfile = h.g.tmp / "child.pid"
    h.configure("--spawn-child", str(child_pidfile))
    h.check(rc=0, actions=["started"])
    child = wait_for(lambda: child_pidfile.exists() and int(child_pidfile.read_text()))
    h.g.reaper.track(child)
    wait_for(lambda: h.g.check().rc == 0 and h.g.actions()[-1] == "ok")  # seen with its child
    os.kill(h.g.pid(), signal.SIGKILL)
    wait_for(lambda: not h.g.matches(), what="the agent to die")
    return h.g.state / "state" / "agent.json", child


@pytest.mark.parametrize("how", ["group-writable", "foreign", "trusted"])
def test_state_file_others_could_write_never_chooses_what_to_signal(h: Hostile, how: str) -> None:
    path, child = _leftover_scene(h)
    if how == "group-writable":
        path.chmod(0o664)
    elif how == "foreign":
        os.chown(path, 65534, -1)
    before = h.g.actions()
    if how == "trusted":  # the control: believed, so its leftover is ended
        h.check(rc=0, actions=[*before, "started"])
        wait_for(lambda: not alive(child), what="the leftover to be ended")
        return
    h.check(rc=3, actions=[*before, "warning", "started"])
    assert "not believed" in h.g.audit()[-2]["reason"]
    assert "what the last one left is unknown" in h.g.audit()[-1]["reason"]
    time.sleep(0.5)
    assert alive(child)  # never signalled on the word of a file others could write


def test_run_with_stderr_closed_still_records(h: Hostile) -> None:
    result = h.check(rc=0, actions=["started"], preexec_fn=lambda: os.close(2))
    assert result.stderr == ""
    # Nothing meant for stderr landed in a file opened on the freed descriptor.
    for line in (h.g.state / "audit.jsonl").read_text().splitlines():
        json.loads(line)
    assert alive(h.g.pid())


def test_json_with_stdout_closed(h: Hostile) -> None:
    h.check("--json", rc=0, actions=["started"], preexec_fn=lambda: os.close(1))


def test_umask_000_makes_nothing_writable_by_others(h: Hostile) -> None:
    h.check(rc=0, actions=["started"], preexec_fn=lambda: os.umask(0))
    made = [h.g.state, *h.g.state.rglob("*")]
    assert len(made) >= 5  # state/, locks/, its lock, state/agent.json, audit.jsonl...
    for path in made:
        mode = os.lstat(path).st_mode
        assert not mode & 0o022, f"{path} is {stat.filemode(mode)}"


@pytest.mark.parametrize("timeout", ["1ms", "0.001ms"])
def test_timeout_that_expires_while_being_armed_is_124(h: Hostile, timeout: str) -> None:
    result = h.g.check("--timeout", timeout)
    assert result.rc == 124
    assert "Traceback" not in result.stderr
    assert "timeout" in result.stderr
    h.g.track()
    assert len(h.g.matches()) <= 1
    assert h.bystander.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_signals_mid_start_are_recorded_as_interrupted(h: Hostile, sig: signal.Signals) -> None:
    h.configure("--delay", "2", start_grace="1s")
    run = subprocess.Popen(
        [sys.executable, "-m", "guardian", "check", "--config", str(h.g.config_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(h.g.matches, what="the start")
    h.g.track()
    # Its pidfile is written right before it waits: from then on it is waiting.
    wait_for(h.g.pidfile.exists, what="the pidfile")
    time.sleep(0.2)
    run.send_signal(sig)
    _, err = run.communicate(timeout=TIMEOUT + 1)
    assert run.returncode == 128 + sig
    assert "Traceback" not in err
    assert h.g.actions() == ["interrupted"]
    assert f"guardian got {sig.name} while waiting for pid" in h.g.audit()[0]["reason"]
    wait_for(lambda: h.g.check().rc == 0, what="the next run to find it")
    assert len(h.g.matches()) == 1
    assert h.bystander.poll() is None


def test_torn_last_line_does_not_swallow_the_next_record(h: Hostile) -> None:
    log = h.g.state / "audit.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"ts": "2026-11-29T00:00:00.000Z", "target": "agent", "act')  # disk was full
    h.g.check()
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["action"] == "started"
    status = h.g.run("status")
    assert "1 line could not be read" in status.stdout or "1 lines could not" in status.stdout


def test_kernel_thread_in_the_pidfile_is_named_as_such(h: Hostile) -> None:
    kthreadd = proc_stat(2)
    if kthreadd is None or not kthreadd.kernel_thread:
        pytest.skip("pid 2 is not a kernel thread here")
    h.g.pidfile.write_text("2\n")
    h.check(rc=0, actions=["started"])
    assert (
        f"pidfile names pid 2, which is a kernel thread ({kthreadd.comm})"
        in (h.g.audit()[0]["reason"])
    )


# --- never hang: one slow or failing target never keeps the next from being checked ---


def two_targets(g: Guardian, first: dict[str, object], timeout: str) -> Path:
    """A config whose first target is ``first`` and whose second is g's agent."""
    second = {"command": g.command, "pidfile": str(g.pidfile), "start_grace": "0.3s"}
    return write_config(
        g.config_path, {"state_dir": str(g.state), "timeout": timeout},
        {"first": first, "agent": second},
    )  # fmt: skip


def test_a_target_that_takes_too_long_leaves_time_for_the_next(h: Hostile) -> None:
    g = h.g
    never = g.tmp / "never.pid"
    slow = [sys.executable, str(AGENT), "--tag", f"{g.tmp}/slow", "--daemonize", str(never),
            "--no-pidfile"]  # fmt: skip
    two_targets(g, {"command": slow, "daemonizes": True, "pidfile": str(never),
                    "start_timeout": "60s"}, timeout=f"{TIMEOUT:g}s")  # fmt: skip
    # Side by side, each in a worker with all the run's time: the other is started at
    # once, and the slow one's time runs out with the run's (a moment before it).
    result = h.check(rc=124, actions=["started", "timeout"])
    (slow_record,) = [r for r in g.audit() if r["action"] == "timeout"]
    assert slow_record["reason"].startswith(
        f"guardian's own timeout of {TIMEOUT:g}s ran out while waiting for pid"
    )
    assert alive(g.pid())
    assert not scan(Matcher(tuple(slow)))  # what it had started is ended
    assert result.seconds < TIMEOUT + 1


def serve_trickle() -> tuple[int, Callable[[], None]]:
    """An HTTP server that answers one byte every 0.3 s, for ever."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while not stop.wait(0.3):
                    try:
                        conn.send(b"H")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        server.close()

    return server.getsockname()[1], close


def test_trickling_and_flooding_probes_fail_at_their_timeout_in_bounded_memory(
    h: Hostile,
) -> None:
    g = h.g
    port, close = serve_trickle()
    busy = [sys.executable, str(AGENT), "--tag", f"{g.tmp}/busy"]
    try:
        two_targets(g, {"command": busy, "start_grace": "0.3s",
                        "health": {"http": f"http://127.0.0.1:{port}/", "timeout": "1s",
                                   "command": ["/usr/bin/yes", "x" * 200]}},
                    timeout=f"{TIMEOUT:g}s")  # fmt: skip
        h.check(rc=0, actions=["started", "started"])
        # Measured in a process of its own: its children's peak memory is guardian's.
        measure = (
            "import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:])\n"
            "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        )
        began = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", measure, sys.executable, "-m", "guardian", "check",
             "--config", str(g.config_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - began
    finally:
        close()
        for found in scan(Matcher(tuple(busy))):
            g.reaper.track(found.pid)
    g.track()
    rc, peak_kib = map(int, out.stdout.split())
    assert rc == 1  # unhealthy: 1 of 3
    assert seconds < 2 * 1 + 1.5  # the two probes' timeouts, and starting Python
    assert peak_kib < 100 * 1024  # a flood that was kept whole would be gigabytes
    # The probed one in a worker, the other seen to in the first look (milliseconds).
    assert [r["action"] for r in g.audit()[-2:]] == ["ok", "unhealthy"]
    record = g.audit()[-1]
    assert record["probes"][0].startswith(
        f"http: FAILED: GET http://127.0.0.1:{port}/: timed out ("
    )
    assert record["probes"][1].startswith(
        "command: FAILED: /usr/bin/yes gave no answer within 1s ("
    )
    assert h.bystander.poll() is None


def test_hook_that_leaves_a_daemon_holding_its_output_does_not_hold_the_run(h: Hostile) -> None:
    g = h.g
    daemon_pid = g.tmp / "daemon.pid"
    hook = g.tmp / "hook"
    # The daemon calls setsid (so no group kill reaches it) and keeps stdout open.
    hook.write_text(f"#!/bin/sh\nsetsid sh -c 'echo $$ > {daemon_pid}; exec sleep 300' &\n"
                    "echo notified\n")  # fmt: skip
    hook.chmod(0o755)
    h.configure(on_start=[str(hook)], hook_timeout="20s", guardian={"timeout": "30s"})
    result = g.check()
    pid = wait_for(lambda: daemon_pid.exists() and int(daemon_pid.read_text()))
    g.reaper.track(pid)
    assert result.rc == 0, result.stderr
    assert result.seconds < 5  # not the hook's 20 s
    assert g.audit()[-1]["hooks"] == [
        f"on_start (started): {hook}: exited 0; something it started still holds its output"
    ]
    assert alive(pid)  # whatever a hook does is only recorded


def test_hard_timeout_says_what_it_was_doing_and_what_it_killed(h: Hostile) -> None:
    # SIGALRM blocked (inherited), as if the main thread were stuck where no signal
    # reaches Python: only the watchdog can end the run, 5 s after the time limit.
    never = h.g.tmp / "never.pid"
    h.configure("--daemonize", str(never), "--no-pidfile", "--delay", "60", daemonizes=True,
                pidfile=str(never), start_timeout="60s", guardian={"timeout": "2s"})  # fmt: skip
    result = h.g.check(preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK,
                                                                   {signal.SIGALRM}))  # fmt: skip
    assert result.rc == 124
    assert 2 + 5 <= result.seconds < 2 + 5 + 3
    line = result.stderr.strip().splitlines()[-1]
    assert "hard time-out: still waiting for pid" in line, result.stderr
    assert "to become ready 2s after it began, and 5s more; killed pid(s)" in line
    killed = int(line.split("killed pid(s) ")[1].split(",")[0].split(" ")[0])
    assert not alive(killed)
    assert "Traceback" not in result.stderr


# --- found by the hostile review of this change ---


def full_pipe() -> tuple[int, int]:
    """A pipe nobody reads, already full: a writer to it blocks (cron's mailer stuck)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def test_ending_many_strays_of_a_failed_start_stays_within_the_time(h: Hostile) -> None:
    # A start that leaves eight daemons ignoring SIGTERM, and never becomes ready: they
    # are ended all at once, within the run's time, and the next target is checked.
    g = h.g
    tag = f"{g.tmp}/stray"
    stray = [sys.executable, str(AGENT), "--tag", tag, "--ignore-term"]
    script = " ".join(f"setsid {' '.join(stray)} &" for _ in range(8))
    two_targets(g, {"command": ["/bin/sh", "-c", script], "match": stray, "daemonizes": True,
                    "pidfile": str(g.tmp / "never.pid"), "start_timeout": "60s"},
                timeout="8s")  # fmt: skip
    began = time.monotonic()
    result = g.check()
    seconds = time.monotonic() - began
    for found in scan(Matcher(tuple(stray))):
        g.reaper.track(found.pid)
    assert seconds < 8 + 1, result.stderr
    assert result.rc == 124
    assert sorted(g.actions()) == ["started", "timeout"]  # side by side, in workers
    (first,) = [r for r in g.audit() if r["action"] == "timeout"]
    assert "guardian's own timeout of 8s ran out while waiting for pid" in first["reason"]
    assert first["reason"].count(",") >= 8  # it names what it ended
    wait_for(lambda: not scan(Matcher(tuple(stray))), timeout=5, what="every stray ended")
    assert alive(g.pid())


@pytest.mark.parametrize("hook", ["on_give_up", "on_start"])
def test_sigterm_during_a_hook_keeps_the_actions_record(h: Hostile, hook: str) -> None:
    g = h.g
    if hook == "on_give_up":
        h.configure("--exit", "3", on_give_up=["/bin/sleep", "20"], hook_timeout="20s",
                    restart={"burst": 1, "backoff": "0s"}, guardian={"timeout": "30s"})  # fmt: skip
        assert g.check().rc == 1  # start_failed: the one start of the burst
        action = "gave_up"
    else:
        h.configure(on_start=["/bin/sleep", "20"], hook_timeout="20s",
                    guardian={"timeout": "30s"})  # fmt: skip
        action = "started"
    run = subprocess.Popen(
        [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: any(argv_of(pid) == ["/bin/sleep", "20"] for pid in children_of(run.pid)),
             what="the hook to run")  # fmt: skip
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=10)
    g.track()
    assert run.returncode == 128 + signal.SIGTERM
    record = g.audit()[-1]
    assert record["action"] == action  # what happened is recorded, not lost to the signal
    hook = "on_give_up (gave_up)" if action == "gave_up" else "on_start (started)"
    assert record["hooks"] == [f"{hook}: /bin/sleep: cut short (guardian got SIGTERM); killed"]
    assert f"{'gave up' if action == 'gave_up' else 'started'}" in err.replace("_", " ")


def argv_of(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def children_of(pid: int) -> list[int]:
    """Every process below ``pid`` (a hook runs in a session of its own, as its child)."""
    found = []
    for entry in os.listdir("/proc"):
        st = proc_stat(int(entry)) if entry.isdigit() else None
        if st is not None and st.ppid == pid:
            found.append(int(entry))
    return found


def test_a_strangers_huge_command_line_does_not_swell_records_or_stop_hooks(h: Hostile) -> None:
    g = h.g
    told = g.tmp / "told"
    hook = g.tmp / "page"
    hook.write_text(f'#!/bin/sh\necho "$GUARDIAN_ACTION" > {told}\n')
    hook.chmod(0o755)
    h.configure(on_start=[str(hook)])
    huge = "x" * 120_000
    stranger = g.spawn([sys.executable, "-c", "import time; time.sleep(300)", huge, huge],
                       start_new_session=True)  # fmt: skip
    wait_for(lambda: argv_of(stranger.pid)[-1:] == [huge], what="the stranger")
    g.pidfile.write_text(f"{stranger.pid}\n")  # a reused pid
    h.check(rc=0, actions=["started"])
    line = (g.state / "audit.jsonl").read_text().splitlines()[0]
    assert len(line) < 10_000
    assert "more characters)" in json.loads(line)["reason"]
    assert told.read_text() == "started\n"  # the hook ran: its environment fit


def test_repeated_sigterms_still_leave_every_target_its_record(h: Hostile) -> None:
    g = h.g
    slow = [sys.executable, str(AGENT), "--tag", f"{g.tmp}/slow", "--delay", "5"]
    two_targets(g, {"command": slow, "start_grace": "1s"}, timeout="30s")
    run = subprocess.Popen(
        [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: scan(Matcher(tuple(slow))), what="the first start")
    for found in scan(Matcher(tuple(slow))):
        g.reaper.track(found.pid)
    for _ in range(5):
        with contextlib.suppress(ProcessLookupError):
            run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=10)
    g.track()  # the other target, started beside it (an interrupted start stays up)
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    # Both were being started, side by side, each in a worker: each is told, and each
    # writes its record, once, whatever else arrives.
    assert g.actions() == ["interrupted", "interrupted"]
    assert all(r["reason"].startswith("guardian got SIGTERM while ") for r in g.audit())


# --- found by the second hostile review ---


def test_sigchld_ignored_by_the_parent_changes_nothing(h: Hostile) -> None:
    # Inherited SIG_IGN for SIGCHLD makes the kernel reap children at once: their pids
    # (and groups) could go to strangers while guardian still meant to signal them.
    daemon_pid = h.g.tmp / "daemon.pid"
    h.configure("--daemonize", str(daemon_pid), daemonizes=True, pidfile=str(daemon_pid))
    result = h.check(rc=0, actions=["started"],
                     preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))  # fmt: skip
    assert result.stderr.count("started") == 1
    assert alive(int(daemon_pid.read_text()))


def stopped_terminal() -> tuple[int, int]:
    """A pty whose output is stopped (Ctrl-S): a write to it blocks until ^Q."""
    import pty
    import termios

    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[0] |= termios.IXON
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.write(master, b"\x13")  # ^S
    return master, slave


def full_socket() -> tuple[int, int]:
    """A socket nobody reads, already full (journald stalled)."""
    import socket

    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return a.detach(), b.detach()


@pytest.mark.parametrize("kind", ["pipe", "terminal", "socket"])
def test_stderr_that_never_drains_does_not_hang_the_run(h: Hostile, kind: str) -> None:
    # cron's mailer stuck; output stopped with Ctrl-S; journald stalled. The record of
    # what it did is in the audit log; what it would have said is dropped, not waited on.
    if kind == "pipe":
        other, writer = full_pipe()
    elif kind == "terminal":
        other, writer = stopped_terminal()  # guardian writes to the slave side
    else:
        writer, other = full_socket()
    try:
        began = time.monotonic()
        run = subprocess.Popen(
            [sys.executable, "-m", "guardian", "check", "-v", "--config", str(h.g.config_path)],
            stdin=subprocess.DEVNULL, stdout=writer, stderr=writer,
        )  # fmt: skip
        rc = run.wait(timeout=60)
        seconds = time.monotonic() - began
    finally:
        os.close(writer)
        os.close(other)
    h.g.track()
    assert rc == 0
    assert seconds < TIMEOUT + 1
    assert h.g.actions() == ["started"]


def test_a_path_that_is_not_utf8_is_recorded_not_a_crash(h: Hostile) -> None:
    g = h.g
    folder = Path(os.fsdecode(bytes(g.tmp) + b"/t-\xff"))
    folder.mkdir()
    config = write_config(
        folder / "g.toml", {"state_dir": "state", "timeout": f"{TIMEOUT:g}s"},
        {"a": {"command": g.command, "start_grace": "0.3s"},
         "b": {"command": [*g.command[:-1], f"{g.tmp}/b"], "start_grace": "0.3s"}},
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "guardian", "check", "--config", config],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    for argv in (g.command, [*g.command[:-1], f"{g.tmp}/b"]):
        for found in scan(Matcher(tuple(argv))):
            g.reaper.track(found.pid)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = (folder / "state" / "audit.jsonl").read_bytes().splitlines()
    records = [json.loads(line) for line in lines]  # valid UTF-8 and valid JSON, each
    assert [r["action"] for r in records] == ["started", "started"]
    assert "t-\udcff" in records[0]["reason"]


def test_a_symlinked_pidfile_is_never_opened(h: Hostile) -> None:
    # Opening a device can do things (/dev/watchdog reboots the host when closed):
    # a pidfile that is a symlink is not followed, and so not opened.
    h.g.pidfile.symlink_to("/dev/zero")
    h.check(rc=0, actions=["started"])
    assert "is a symlink, not a regular file" in h.g.audit()[0]["reason"]


def test_dry_run_with_a_corrupt_state_file_writes_nothing_but_its_lines(h: Hostile) -> None:
    state_file = h.g.state / "state" / "agent.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    result = h.check("--dry-run", rc=1, actions=["would_start"])
    assert "warning: state file" in result.stderr  # said, not logged
    assert state_file.read_text() == "{not json"


# --- found by the third hostile review ---

# guardian as its console script starts it, with a SIGINT sent to itself at an exact moment
# of its start, however busy the machine: when Python first looks for module argv[1].
SIGINT_WHEN_IMPORTING = """
import os, signal, sys
WHEN = sys.argv[1]
class Trip:
    def find_spec(self, name, path=None, target=None):
        if name == WHEN:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Trip())
sys.argv[:2] = ["guardian"]
from guardian.cli import entry
entry()
"""


@pytest.mark.parametrize(
    "module",
    [
        "click",  # while Python imports guardian's command line (its first 50 ms)
        "guardian.check",  # inside click, once main() has begun, before the run is armed
    ],
)
def test_sigint_before_the_run_is_armed_is_one_line_and_130(g: Guardian, module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGINT_WHEN_IMPORTING, module, "check", "--config",
         str(g.config_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    said = "interrupted by SIGINT while starting" if module == "click" else "interrupted by SIGINT"
    assert (done.returncode, done.stderr) == (130, f"guardian: {said}\n")
    assert not g.matches()  # nothing was started
    assert g.audit() == []  # nor recorded: nothing was done

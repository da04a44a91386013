"""The dead-man ping: real guardian runs against real local HTTP servers, good and bad."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import pytest
from test_watch import Watch

from guardian import __version__, ping

from conftest import Guardian, wait_for


class Request(NamedTuple):
    method: str
    path: str
    agent: str
    body: bytes


class Monitor:
    """A healthchecks.io stand-in: answers 200 and remembers each request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                monitor.requests.append(
                    Request(self.command, self.path, self.headers["User-Agent"], body)
                )
                if self.path.endswith("/elsewhere"):
                    self.send_response(302)
                    self.send_header("Location", "ftp://127.0.0.1/ping")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor()
    yield m
    m.server.shutdown()
    m.server.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A server that accepts connections (its backlog does) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/ping"


@pytest.fixture
def trickle() -> Iterator[str]:
    """A server that answers one byte a second: every read succeeds, none ends."""
    stop = threading.Event()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.settimeout(0.2)

    def serve() -> None:
        conns = []
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = s.accept()
                conns.append(conn)
            for c in conns:
                with contextlib.suppress(OSError):
                    c.send(b"H")
            stop.wait(1.0)
        for c in conns:
            c.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{s.getsockname()[1]}/ping"
    stop.set()
    thread.join()
    s.close()


@contextlib.contextmanager
def answering(answer: bytes) -> Iterator[str]:
    """A server that reads each request's head and answers ``answer`` (raw), then closes."""
    stop = threading.Event()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                got = b""
                while b"\r\n\r\n" not in got and (chunk := conn.recv(4096)):
                    got += chunk
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/ping"
    finally:
        stop.set()
        thread.join()
        s.close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ping"


def configure(
    g: Guardian, url: str, *, start: bool = False, timeout: str = "1s", **t: object
) -> None:
    g.configure(guardian={"ping_url": url, "ping_timeout": timeout, "ping_start": start}, **t)


def ping_warnings(g: Guardian) -> list[str]:
    return [
        r["reason"] for r in g.audit() if r["action"] == "warning" and r["target"] == "(guardian)"
    ]


def test_a_healthy_run_pings_the_url_and_start_first(g: Guardian, monitor: Monitor) -> None:
    configure(g, monitor.url, start=True)
    assert g.check().rc == 0
    assert g.check().rc == 0
    assert monitor.paths() == ["/ping/abc/start", "/ping/abc"] * 2
    assert {r.agent for r in monitor.requests} == {f"guardian/{__version__}"}
    assert ping_warnings(g) == []


def test_a_target_not_running_pings_fail_with_the_reasons(g: Guardian, monitor: Monitor) -> None:
    configure(g, monitor.url, command=g.agent("--exit", "3"))
    result = g.check()
    assert result.rc == 1  # the target's failure, not the ping's
    (req,) = monitor.requests
    assert (req.method, req.path) == ("POST", "/ping/abc/fail")
    text = req.body.decode()
    assert text.startswith("agent: start failed: exited with status 3")
    assert text.endswith("\n")
    assert len(req.body) <= ping.BODY_MAX


def test_a_held_target_is_no_failure_but_is_said(g: Guardian, monitor: Monitor) -> None:
    configure(g, monitor.url)
    assert g.check().rc == 0
    assert g.run("stop", "agent", "--reason", "kernel upgrade").rc == 0
    assert monitor.paths() == ["/ping/abc"]  # a stop by hand pings nothing: checks do
    assert g.check().rc == 0
    assert monitor.paths() == ["/ping/abc"] * 2
    assert b"kernel upgrade" in monitor.requests[-1].body


@pytest.mark.parametrize("server", ["silent", "trickle", "refused"])
def test_a_bad_ping_server_never_delays_the_run_nor_fails_it(
    g: Guardian, request: pytest.FixtureRequest, server: str
) -> None:
    url = refused_url() if server == "refused" else request.getfixturevalue(server)
    g.configure()
    assert g.check().rc == 0  # started, without a ping
    began = time.monotonic()
    assert g.check().rc == 0
    healthy = time.monotonic() - began
    configure(g, url, start=True, timeout="1s")
    result = g.check()
    assert result.rc == 0, result.stderr
    # One second of ping (both pings side by side), and whatever the machine adds.
    assert result.seconds < healthy + 1.0 + 2.0, (result.seconds, healthy)
    said = ping_warnings(g)
    assert len(said) == 2, said
    why = "Connection refused" if server == "refused" else "no answer within 1s"
    assert said[0] == f"start ping to {url}/start failed: {why}"
    assert said[1] == f"success ping to {url} failed: {why}"
    assert "(guardian): warning: success ping" in result.stderr


def test_a_slow_start_ping_never_delays_a_restart(g: Guardian, silent: str) -> None:
    configure(g, silent, start=True, timeout="3s")
    began = datetime.now().astimezone()
    assert g.check().rc == 0
    (started,) = [r for r in g.audit() if r["action"] == "started"]
    at = datetime.fromisoformat(started["ts"].replace("Z", "+00:00"))
    # Started (0.3s of start_grace) long before the /start ping's 3 seconds were up.
    assert (at - began).total_seconds() < 2.0


def test_a_redirect_to_another_scheme_is_not_followed(g: Guardian, monitor: Monitor) -> None:
    configure(g, monitor.url.replace("/abc", "/elsewhere"))
    assert g.check().rc == 0
    assert monitor.paths() == ["/ping/elsewhere"]
    (said,) = ping_warnings(g)
    assert said.endswith("failed: the server answered HTTP 302 Found")


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"nonsense\r\n\r\n", "not an HTTP answer (BadStatusLine: nonsense)"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Endless: y\r\n" * 200 + b"\r\n",
         "not an HTTP answer (HTTPException: got more than 100 headers)"),
        (b"HTTP/1.1 302 Found\r\nLocation: /ping\r\nContent-Length: 0\r\n\r\n",
         "the server answered HTTP 302 The HTTP server returned a redirect error that would "
         "lead to an infinite loop. The last 30x error message was: Found"),
    ],
    ids=["bad-status-line", "endless-headers", "redirect-loop"],
)  # fmt: skip
def test_a_broken_answer_is_said_in_one_line(g: Guardian, answer: bytes, said: str) -> None:
    with answering(answer) as url:
        configure(g, url)
        result = g.check()
    assert result.rc == 0, result.stderr
    assert ping_warnings(g) == [f"success ping to {url} failed: {said}"]


def test_a_reason_is_one_line_and_bounded() -> None:
    assert ping.one_line("a\n  b\r\n\tc") == "a b c"
    long = ping.one_line("x" * 5000)
    assert len(long) <= ping.REASON_MAX
    assert long.endswith("...")


def test_a_signal_during_the_ping_keeps_the_runs_records_and_exit_code(
    g: Guardian, silent: str
) -> None:
    g.configure()
    assert g.check().rc == 0
    configure(g, silent, timeout="10s")
    argv = [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)]
    proc = g.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(r["action"] == "ok" for r in g.audit()), what="its ok record")
    time.sleep(0.3)  # waiting for the ping now
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 0
    assert ping_warnings(g) == ["ping cut short: guardian got SIGTERM"]
    # The ping's process went with it: nothing of guardian's is left (its own children).
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _child_of(int(p), proc.pid)]


def _child_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) == parent
    except (OSError, ValueError, IndexError):
        return False


def test_the_body_is_bounded_and_cut_at_a_character() -> None:
    data = ping.body(["é" * 3000] * 10)
    assert len(data) <= ping.BODY_MAX
    assert data.decode().endswith("[... cut short]\n")
    assert ping.body(["a", "b"]) == b"a\nb\n"


def test_pings_sent_without_waiting_are_gathered_by_poll(monitor: Monitor) -> None:
    pinger = ping.Pinger(monitor.url, 3.0)
    assert pinger.send("success") is None
    assert pinger.send("fail", b"agent: start failed\n") is None
    assert len(pinger.pending) == 2
    wait_for(lambda: len(monitor.requests) == 2, what="both pings")
    problems: list[str] = []
    wait_for(lambda: problems.extend(pinger.poll()) or not pinger.pending, what="both reaped")
    assert problems == []
    assert sorted(monitor.paths()) == ["/ping/abc", "/ping/abc/fail"]
    assert pinger.collect(1.0) == []  # nothing left


def test_a_watcher_pings_after_its_check_and_after_each_restart(
    g: Guardian, monitor: Monitor
) -> None:
    configure(g, monitor.url, start_grace="0.1s", restart={"min_uptime": "0.2s"})
    watch = Watch(g, "20s")
    wait_for(watch.watching, what="the watcher to watch")
    wait_for(lambda: monitor.paths() == ["/ping/abc"], what="the ping after its check")
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: len(monitor.paths()) == 2, what="the ping after the restart")
    watch.proc.send_signal(signal.SIGTERM)
    rc, err = watch.end()
    assert rc == 128 + signal.SIGTERM, err
    # Its end: an ordered stop (a shutdown, cron stopped) with its target running is no
    # failure: a success, whose body says what ended it (every reboot would page else).
    assert monitor.paths() == ["/ping/abc", "/ping/abc", "/ping/abc"]
    assert b"ended by SIGTERM" in monitor.requests[-1].body
    assert ping_warnings(g) == []


def test_a_watcher_ended_by_a_signal_with_its_target_down_pings_fail(
    g: Guardian, monitor: Monitor
) -> None:
    # Ready 2 s after each start: the watcher's restart is under way when the signal comes.
    slow = g.agent("--daemonize", str(g.pidfile), "--delay", "2")
    configure(g, monitor.url, command=slow, daemonizes=True, start_timeout="20s")
    watch = Watch(g, "20s")
    wait_for(watch.watching, what="the watcher to watch")
    wait_for(lambda: len(monitor.paths()) == 1, what="the ping after its check")
    os.kill(g.pid(), signal.SIGKILL)
    time.sleep(1)
    watch.proc.send_signal(signal.SIGTERM)
    rc, err = watch.end()
    assert rc == 128 + signal.SIGTERM, err
    assert monitor.paths()[-1] == "/ping/abc/fail"


def test_a_check_ended_by_sigterm_with_every_target_running_pings_success(
    g: Guardian, monitor: Monitor
) -> None:
    hook = g.tmp / "slow-hook"
    hook.write_text(f"#!/bin/sh\ntouch {g.tmp}/hooked\nexec sleep 20\n")
    hook.chmod(0o755)
    configure(g, monitor.url, on_start=[str(hook)])
    argv = [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)]
    proc = g.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for((g.tmp / "hooked").exists, what="its hook to run")
    proc.send_signal(signal.SIGTERM)  # the target started and is ready; its hook runs
    proc.wait(timeout=10)
    g.track()
    assert proc.returncode == 128 + signal.SIGTERM
    assert [r["action"] for r in g.audit() if r["target"] == "agent"] == ["started"]
    assert monitor.paths() == ["/ping/abc"]
    assert b"ended by SIGTERM" in monitor.requests[-1].body


def test_a_run_that_used_up_its_time_still_pings_fail(g: Guardian, monitor: Monitor) -> None:
    # A target that never becomes ready (it writes no pidfile): the run's own 2 s run out.
    g.configure(
        command=["/bin/sleep", "30.023"],  # its own: a bystander's sleep 30 is adopted
        daemonizes=True,
        guardian={"ping_url": monitor.url, "ping_timeout": "3s", "timeout": "2s"},
    )
    result = g.check()
    assert result.rc == 124, result
    # The /fail went out after the time-out, within PING_OVERTIME, well inside the hard grace.
    assert monitor.paths() == ["/ping/abc/fail"]
    assert b"timeout" in monitor.requests[0].body
    assert result.seconds < 2 + 2 + 1.5


@contextlib.contextmanager
def slow_start(wait: Callable[[], None]) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """A monitor at the URL it yields, whose answer to /start waits for ``wait()``; what it
    heard, and when (monotonic), goes into the list it yields."""
    heard: list[tuple[str, float]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            heard.append((self.path, time.monotonic()))
            if self.path.endswith("/start"):
                wait()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping/abc", heard
    finally:
        server.shutdown()
        server.server_close()


def test_the_monitor_hears_start_before_the_runs_verdict_however_slow_start_is(
    g: Guardian,
) -> None:
    # A /start answered slowly, and a healthy check that ends at once: the success ping
    # must not overtake it (healthchecks.io would take the run as started and never ended).
    answered: list[float] = []

    def slowly() -> None:
        time.sleep(0.8)
        answered.append(time.monotonic())

    with slow_start(slowly) as (url, heard):
        configure(g, url, start=True, timeout="3s")
        assert g.check().rc == 0  # started
        heard.clear()
        answered.clear()
        assert g.check().rc == 0  # healthy: its check takes milliseconds
        assert [path for path, _ in heard] == ["/ping/abc/start", "/ping/abc"]
        assert heard[1][1] >= answered[0]
        assert ping_warnings(g) == []


def test_a_start_that_never_answers_delays_the_verdict_but_never_loses_it(g: Guardian) -> None:
    # Each ping has its own time after its turn: the verdict is still sent (and answered)
    # after a /start that hung for its whole timeout.
    release = threading.Event()
    try:
        with slow_start(lambda: release.wait(10)) as (url, heard):  # never answered in time
            configure(g, url, start=True, timeout="1s")
            assert g.check().rc == 0  # started
            heard.clear()
            result = g.check()
            assert result.rc == 0  # a ping never changes the exit code
            # The verdict went out, after the /start.
            assert [path for path, _ in heard] == ["/ping/abc/start", "/ping/abc"]
            warnings = ping_warnings(g)
            assert [w.split(" ping ")[0] for w in warnings] == ["start", "start"]  # not success
            assert result.seconds < 1 + 1 + 0.2 + 0.5 + 2  # its turn, its own time, slack
    finally:
        release.set()

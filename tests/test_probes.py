"""Health probes against real servers on 127.0.0.1: each bounded as a whole, all within the run."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from guardian.config import Health
from guardian.probes import run_all

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
# Two noisy cores: a bound on elapsed time is the limit plus this much.
SLACK = 1.5

Handler = Callable[[socket.socket, threading.Event], None]


class Server:
    """A TCP server in threads: ``handler`` serves each connection until the test ends."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        self.handler = handler
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed at teardown
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the probe may hang up at any point
            self.handler(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(handler: Handler, host: str = "127.0.0.1") -> Server:
        servers.append(Server(handler, host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def read_head(conn: socket.socket) -> bytes:
    """The request line, once the whole request head has come."""
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def answering(status: int, requests: list[bytes] | None = None) -> Handler:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        line = read_head(conn)
        if requests is not None:
            requests.append(line)
        conn.sendall(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n".encode())

    return handler


def silent(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        read_head(conn)
    stop.wait()  # holds the connection open, saying nothing


def trickling(conn: socket.socket, stop: threading.Event) -> None:
    read_head(conn)
    for byte in b"HTTP/1.1 200 OK\r\n":
        if stop.wait(0.3):
            return
        conn.sendall(bytes([byte]))
    stop.wait()


class Failure(NamedTuple):
    """A probe that failed, and why (what the tests compare)."""

    probe: str
    detail: str


def probe(health: Health, remaining: float = 30.0) -> tuple[list[Failure], float]:
    """The probes that failed, and how long the whole round took."""
    began = time.monotonic()
    results = run_all(health, env=ENV, remaining=remaining)
    failures = [Failure(r.probe, r.detail) for r in results if not r.ok]
    elapsed = time.monotonic() - began
    assert elapsed < min(health.timeout, remaining) + SLACK, (elapsed, failures)
    return failures, elapsed


@pytest.mark.parametrize("status", [200, 204, 302])
def test_http_2xx_and_3xx_pass(serve: Callable[..., Server], status: int) -> None:
    server = serve(answering(status))
    assert probe(Health(http=f"http://127.0.0.1:{server.port}/", timeout=5))[0] == []


@pytest.mark.parametrize("status", [500, 404, 101])
def test_http_other_statuses_fail(serve: Callable[..., Server], status: int) -> None:
    url = f"http://127.0.0.1:{serve(answering(status)).port}/"
    failures, _ = probe(Health(http=url, timeout=5))
    assert failures == [Failure("http", f"GET {url}: status {status}")]


def test_http_sends_the_path_and_the_query(serve: Callable[..., Server]) -> None:
    requests: list[bytes] = []
    server = serve(answering(200, requests))
    assert (
        probe(Health(http=f"http://127.0.0.1:{server.port}/health?deep=1&x=%20", timeout=5))[0]
        == []
    )
    assert requests == [b"GET /health?deep=1&x=%20 HTTP/1.1"]
    probe(Health(http=f"http://127.0.0.1:{server.port}", timeout=5))
    assert requests[-1] == b"GET / HTTP/1.1"


def test_http_headers(serve: Callable[..., Server]) -> None:
    heads: list[bytes] = []

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        heads.append(data)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")

    server = serve(handler)
    assert probe(Health(http=f"http://127.0.0.1:{server.port}/", timeout=5))[0] == []
    lines = heads[0].split(b"\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"User-Agent: guardian" in lines
    assert b"Connection: close" in lines


def test_http_trickling_server_fails_at_the_timeout(serve: Callable[..., Server]) -> None:
    url = f"http://127.0.0.1:{serve(trickling).port}/"
    failures, elapsed = probe(Health(http=url, timeout=1))
    assert failures == [Failure("http", f"GET {url}: timed out")]
    assert 0.9 < elapsed < 2.5


def test_http_silent_server_fails_at_the_timeout(serve: Callable[..., Server]) -> None:
    url = f"http://127.0.0.1:{serve(silent).port}/"
    failures, elapsed = probe(Health(http=url, timeout=1))
    assert failures == [Failure("http", f"GET {url}: timed out")]
    assert elapsed > 0.9


def test_https_handshake_with_a_silent_server_fails_at_the_timeout(
    serve: Callable[..., Server],
) -> None:
    url = f"https://127.0.0.1:{serve(silent).port}/"
    failures, elapsed = probe(Health(http=url, timeout=1))
    assert failures == [Failure("http", f"GET {url}: timed out")]
    assert elapsed > 0.9


def test_https_certificates_are_verified(serve: Callable[..., Server], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl program to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        with context.wrap_socket(conn, server_side=True) as tls:
            answering(200)(tls, stop)

    url = f"https://127.0.0.1:{serve(handler).port}/"
    failures, _ = probe(Health(http=url, timeout=5))
    assert len(failures) == 1
    assert failures[0].detail.startswith(f"GET {url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in failures[0].detail


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"hello\r\n", "no HTTP status line (got b'hello')"),
        (b"HTTP/1.1 2000 OK\r\n", "no HTTP status line (got b'HTTP/1.1 2000 OK')"),
        (b"HTTP/1.1 200", "no HTTP status line (got b'HTTP/1.1 200' and the end)"),
        (b"", "no HTTP status line (got b'' and the end)"),
        (b"x" * 20000, "no HTTP status line in the first 8192 bytes"),
    ],
)
def test_http_an_answer_that_is_not_http_fails(
    serve: Callable[..., Server], answer: bytes, expected: str
) -> None:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_head(conn)
        conn.sendall(answer)

    url = f"http://127.0.0.1:{serve(handler).port}/"
    failures, _ = probe(Health(http=url, timeout=5))
    assert failures == [Failure("http", f"GET {url}: {expected}")]


def free_port() -> int:
    """A port nothing listens on (bound, then closed: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_http_and_tcp_connection_refused() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    failures, elapsed = probe(Health(http=url, tcp=("127.0.0.1", port), timeout=5))
    assert failures == [
        Failure("tcp", f"connect to 127.0.0.1:{port}: Connection refused"),
        Failure("http", f"GET {url}: Connection refused"),
    ]
    assert elapsed < 2


def test_tcp_passes_when_something_listens(serve: Callable[..., Server]) -> None:
    server = serve(silent)
    assert probe(Health(tcp=("127.0.0.1", server.port), timeout=5))[0] == []


def test_http_ipv6_literal(serve: Callable[..., Server]) -> None:
    requests: list[bytes] = []
    try:
        server = serve(answering(200, requests), host="::1")
    except OSError:
        pytest.skip("no ::1 on this machine")
    url = f"http://[::1]:{server.port}/v6?q=1"
    assert probe(Health(http=url, timeout=5))[0] == []
    assert requests == [b"GET /v6?q=1 HTTP/1.1"]


def test_http_bad_port_is_a_failure_not_an_exception() -> None:
    failures, _ = probe(Health(http="http://127.0.0.1:99999/", timeout=5))
    assert failures == [Failure("http", "GET http://127.0.0.1:99999/: Port out of range 0-65535")]


def test_command_that_floods_its_output_fails_at_the_timeout() -> None:
    failures, elapsed = probe(Health(command=("/usr/bin/yes", "flood"), timeout=1))
    assert failures == [Failure("command", "/usr/bin/yes gave no answer within 1s")]
    assert elapsed > 0.9


def test_command_exit_status_and_last_line() -> None:
    health = Health(command=("/bin/sh", "-c", "echo one; echo two; exit 3"), timeout=5)
    assert probe(health)[0] == [Failure("command", "/bin/sh exited 3: two")]
    assert probe(Health(command=("/bin/true",), timeout=5))[0] == []


def test_all_probes_together_stay_within_remaining(serve: Callable[..., Server]) -> None:
    url = f"http://127.0.0.1:{serve(silent).port}/"
    health = Health(http=url, command=("/bin/sleep", "60"), timeout=5)
    failures, elapsed = probe(health, remaining=1.0)
    assert failures[0] == Failure("http", f"GET {url}: timed out")
    # The http probe used up the second: the command is not started at all.
    assert failures[1] == Failure("command", "not run: no time left")
    assert 0.9 < elapsed < 1 + SLACK


def test_each_probe_gets_what_is_left(serve: Callable[..., Server]) -> None:
    url = f"http://127.0.0.1:{serve(silent).port}/"
    health = Health(http=url, command=("/bin/sleep", "60"), timeout=1)
    failures, elapsed = probe(health, remaining=1.6)
    assert failures[0] == Failure("http", f"GET {url}: timed out")
    assert failures[1].probe == "command"
    assert failures[1].detail.startswith("/bin/sleep gave no answer within 0.")
    assert 1.5 < elapsed < 1.6 + SLACK


def test_no_time_left_runs_nothing(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.touch()
    health = Health(heartbeat_file=beat, command=("/bin/true",))
    assert probe(health, remaining=0.0)[0] == [
        Failure("heartbeat_file", "not run: no time left"),
        Failure("command", "not run: no time left"),
    ]
    assert probe(health, remaining=5.0)[0] == []


def test_a_host_name_that_cannot_be_looked_up_fails_at_once() -> None:
    label = "a" * 70  # longer than DNS allows: IDNA refuses it (a ValueError, not an OSError)
    url = f"http://{label}/"
    failures, elapsed = probe(Health(http=url, tcp=(label, 80), timeout=5))
    assert [f.probe for f in failures] == ["tcp", "http"]
    assert failures[1].detail.startswith(f"GET {url}: cannot look up '{label}': ")
    assert "label too long" in failures[0].detail
    assert elapsed < 2

"""Health probes: is a target that is alive also working?

Each probe is bounded as a whole (a deadline, not a time-out per socket
operation, which a server trickling one byte at a time would renew for ever),
and all of them together stay within what is left of the run. A SIGSTOPped
server still completes TCP connections (the kernel does that), so only a
probe that waits for an answer (http, command) notices it.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from guardian.config import Health

_AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]

# A probe that would start with less time than this left is not started.
MIN_PROBE_TIME = 0.05
# The status line is all the http probe reads; a server that sends this much
# without ending a line is not speaking HTTP.
_STATUS_LINE_MAX = 8192
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?:[ \t].*)?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Result:
    """One probe's answer: passed or not, what it saw, and how long it took."""

    probe: str
    ok: bool
    detail: str
    seconds: float

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.probe}: {verdict}: {self.detail} ({self.seconds * 1000:.0f} ms)"


# What a probe gives back: True and what it saw, or False and what went wrong.
Answer = tuple[bool, str]


def _left(deadline: float) -> float:
    """What is left before ``deadline``, as a socket time-out (0 would mean non-blocking)."""
    return max(0.001, deadline - time.monotonic())


def _heartbeat(path: Path, max_age: float) -> Answer:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError as e:
        return False, f"{path}: {e.strerror}"
    return age <= max_age, f"{path} is {age:.0f}s old (max_age {max_age:g}s)"


def _resolve(host: str, port: int, deadline: float) -> Sequence[_AddressInfo]:
    """getaddrinfo, within ``deadline``.

    The resolver takes no time-out of ours (a dead DNS server holds it for
    5 s a try), so it runs in a thread that is left behind if it is late; an
    address literal, or a name in /etc/hosts, answers at once.
    """
    import threading

    answer: list[Sequence[_AddressInfo] | OSError] = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            answer.append(e)
        except ValueError as e:  # UnicodeError: a name IDNA cannot encode (a label too long)
            answer.append(OSError(f"cannot look up {host!r}: {e}"))

    thread = threading.Thread(target=lookup, name="guardian-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not answer:
        raise TimeoutError("timed out")
    if isinstance(result := answer[0], OSError):
        raise result
    return result


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection to ``host``:``port`` (each of its addresses in turn), by ``deadline``.

    As socket.create_connection, but with one deadline for the lookup and all
    the attempts together, rather than a time-out for each.
    """
    error = OSError(f"no address for {host}")
    for family, kind, proto, _, address in _resolve(host, port, deadline):
        if deadline - time.monotonic() <= 0:
            raise TimeoutError("timed out")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(address)
        except OSError as e:
            sock.close()
            error = e
        else:
            return sock
    raise error


def _tcp(address: tuple[str, int], timeout: float) -> Answer:
    where = f"connect to {address[0]}:{address[1]}"
    try:
        _connect(*address, time.monotonic() + timeout).close()
    except TimeoutError:
        return False, f"{where}: timed out"
    except OSError as e:
        return False, f"{where}: {e.strerror or e}"
    return True, f"{where}: connected"


def _unix(path: Path, timeout: float) -> Answer:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)  # one operation: its time-out is the probe's
        try:
            s.connect(str(path))
        except OSError as e:
            return False, f"connect to {path}: {e.strerror or e}"
    return True, f"connect to {path}: connected"


def _http(address: str, timeout: float) -> Answer:
    """GET ``address``: passed for a 2xx or 3xx status.

    Only the status line is read: the body (or a server keeping the connection
    open after it) is none of the probe's business.
    """
    deadline = time.monotonic() + timeout
    try:
        status = _http_status(urlsplit(address), deadline)
    except TimeoutError:
        return False, f"GET {address}: timed out"
    except OSError as e:  # ssl.SSLError too
        return False, f"GET {address}: {e.strerror or e}"
    except ValueError as e:  # a bad port: config refuses it, but Health(...) takes any string
        return False, f"GET {address}: {e}"
    return 200 <= status < 400, f"GET {address}: status {status}"


def _http_status(url: SplitResult, deadline: float) -> int:
    https = url.scheme == "https"
    host = url.hostname or ""
    port = url.port  # before connecting: a ValueError if it is out of range
    authority = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    if port is not None:
        authority += f":{port}"
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: guardian\r\n"
        "Connection: close\r\n\r\n"
    )
    sock = _connect(host, (443 if https else 80) if port is None else port, deadline)
    try:
        if https:
            import ssl

            # Certificates are verified; the whole handshake is bounded by the
            # socket's time-out (the ssl module keeps one deadline for it).
            sock.settimeout(_left(deadline))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        sock.settimeout(_left(deadline))
        sock.sendall(request.encode())  # since 3.5 the time-out bounds the whole send
        line = _status_line(sock, deadline)
    finally:
        sock.close()
    m = _STATUS_LINE.fullmatch(line)
    if m is None:
        raise OSError(f"no HTTP status line (got {line[:60]!r})")
    return int(m[1])


def _status_line(sock: socket.socket, deadline: float) -> bytes:
    """The first line of the answer, without its line end: read by ``deadline``, and bounded."""
    data = b""
    while b"\n" not in data:
        if len(data) >= _STATUS_LINE_MAX:
            raise OSError(f"no HTTP status line in the first {_STATUS_LINE_MAX} bytes")
        if deadline - time.monotonic() <= 0:
            raise TimeoutError("timed out")
        # Renewed before every recv: what bounds the probe is the deadline, not each read.
        sock.settimeout(_left(deadline))
        chunk = sock.recv(_STATUS_LINE_MAX - len(data))
        if not chunk:
            raise OSError(f"no HTTP status line (got {data[:60]!r} and the end)")
        data += chunk
    return data.split(b"\n", 1)[0].removesuffix(b"\r")


def _command(argv: tuple[str, ...], timeout: float, env: dict[str, str]) -> Answer:
    from guardian.commands import run_command

    result = run_command(argv, timeout=timeout, env=env)
    if result.status is None:
        return False, f"{argv[0]} gave no answer within {timeout:g}s"
    last = f": {result.output[-1]}" if result.output else ""
    return result.status == 0, f"{argv[0]} exited {result.status}{last}"


def run_all(
    health: Health,
    *,
    env: dict[str, str],
    remaining: float,
    step: Callable[[str], None] = lambda doing: None,
) -> list[Result]:
    """Every configured probe, each within ``health.timeout``, all within ``remaining``.

    ``step`` is told which probe runs, for the record of a run cut short.
    """
    end = time.monotonic() + remaining
    checks: list[tuple[str, Callable[[float], Answer]]] = []
    if (path := health.heartbeat_file) is not None:
        checks.append(("heartbeat_file", lambda _: _heartbeat(path, health.max_age)))
    if (address := health.tcp) is not None:
        checks.append(("tcp", lambda timeout: _tcp(address, timeout)))
    if (socket_path := health.unix) is not None:
        checks.append(("unix", lambda timeout: _unix(socket_path, timeout)))
    if (url := health.http) is not None:
        checks.append(("http", lambda timeout: _http(url, timeout)))
    if (argv := health.command) is not None:
        checks.append(("command", lambda timeout: _command(argv, timeout, env)))
    results = []
    for name, probe in checks:
        began = time.monotonic()
        left = end - began
        if left < MIN_PROBE_TIME:
            results.append(Result(name, False, "not run: no time left", 0.0))
        else:
            step(f"probing its health ({name})")
            ok, detail = probe(min(health.timeout, left))
            results.append(Result(name, ok, detail, time.monotonic() - began))
    return results

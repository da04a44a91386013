"""Health probes: is a target that is alive also working?

Each probe has its own time limit (inside the run's own), so none can hang a
run. A SIGSTOPped server still completes TCP connections (the kernel does
that), so only a probe that waits for an answer (http, command) notices it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guardian.config import Health


@dataclass(frozen=True, slots=True)
class Failure:
    probe: str
    detail: str

    def __str__(self) -> str:
        return f"{self.probe}: {self.detail}"


def _heartbeat(path: Path, max_age: float) -> str | None:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError as e:
        return f"{path}: {e.strerror}"
    if age > max_age:
        return f"{path} is {age:.0f}s old (max_age {max_age:g}s)"
    return None


def _tcp(address: tuple[str, int], timeout: float) -> str | None:
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as e:
        return f"connect to {address[0]}:{address[1]}: {e.strerror or e}"
    return None


def _unix(path: Path, timeout: float) -> str | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as e:
            return f"connect to {path}: {e.strerror or e}"
    return None


def _http(address: str, timeout: float) -> str | None:
    import http.client
    import urllib.parse

    url = urllib.parse.urlsplit(address)
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = kind(url.hostname or "localhost", url.port, timeout=timeout)
    try:
        conn.request("GET", url.path or "/", headers={"User-Agent": "guardian"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return f"GET {address}: {e or type(e).__name__}"
    finally:
        conn.close()
    if not 200 <= status < 400:
        return f"GET {address}: status {status}"
    return None


def _command(argv: tuple[str, ...], timeout: float, env: dict[str, str]) -> str | None:
    from guardian.launch import run_command

    result = run_command(argv, timeout=timeout, env=env)
    if result.status is None:
        return f"{argv[0]} gave no answer within {timeout:g}s"
    if result.status != 0:
        last = f": {result.output[-1]}" if result.output else ""
        return f"{argv[0]} exited {result.status}{last}"
    return None


def run(health: Health, *, env: dict[str, str], remaining: float) -> list[Failure]:
    """Every configured probe, each within ``health.timeout`` (and the run's ``remaining``)."""
    timeout = max(0.1, min(health.timeout, remaining))
    checks: list[tuple[str, Callable[[], str | None]]] = []
    if (path := health.heartbeat_file) is not None:
        checks.append(("heartbeat_file", lambda: _heartbeat(path, health.max_age)))
    if (address := health.tcp) is not None:
        checks.append(("tcp", lambda: _tcp(address, timeout)))
    if (socket_path := health.unix) is not None:
        checks.append(("unix", lambda: _unix(socket_path, timeout)))
    if (url := health.http) is not None:
        checks.append(("http", lambda: _http(url, timeout)))
    if (argv := health.command) is not None:
        checks.append(("command", lambda: _command(argv, timeout, env)))
    return [Failure(name, detail) for name, probe in checks if (detail := probe()) is not None]

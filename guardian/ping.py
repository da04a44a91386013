"""The dead-man ping: tell a monitor (healthchecks.io's convention) that a run happened.

``ping_url`` under ``[guardian]``: ``URL/start`` as a run begins (``ping_start``),
``URL`` when every target it checked is running at its end, ``URL/fail``
otherwise, with the run's reasons in the body. The monitor alerts when the
pings stop: cron, the host or guardian itself has stopped.

Each ping is sent by a forked child of guardian's own, so nothing about it can
hold a run up: not a DNS lookup that hangs (which no socket timeout bounds),
not a server that accepts and never answers, nor one that trickles a byte a
second. The child arms its own SIGALRM at ``ping_timeout`` (the kernel ends
it then, wherever it is); the parent waits for it at most that long, or less
if the run has less time left, and kills it (by its pid: its own unreaped
child, so never another process) if it is still there. A ping that fails is a
``warning`` record, never a failure of the run.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterable
from typing import NamedTuple

from guardian import __version__

BODY_MAX = 10_000  # bytes of reasons in a /fail ping: a summary, not the audit log
_ANSWER_MAX = 4096  # what is read of the server's answer
_TURN_SLACK = 0.2  # for a ping before this one to exit and be seen gone
REASON_MAX = 300  # characters of why a ping failed: one line of a warning record
# The name warning records about the run itself (not a target) carry: no target's name
# can have parentheses.
RUN_TARGET = "(guardian)"


class _Pending(NamedTuple):
    kind: str  # "start", "success", "fail"
    pid: int
    fd: int  # the read end of the pipe the child says how it went on
    ends: float  # when it is over at the latest (monotonic): its turn, then its timeout


def one_line(text: str) -> str:
    """``text`` on one line (any run of whitespace a space), at most ``REASON_MAX``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_MAX else flat[: REASON_MAX - 3] + "..."


def _send(  # pragma: no cover - runs in the forked child, which coverage does not follow
    url: str, body: bytes | None, timeout: float
) -> str:
    """In the child: one request; "" when the server answered 2xx, else what went wrong."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    class SameScheme(urllib.request.HTTPRedirectHandler):
        # A redirect may move the ping, never from https to http (nor anywhere else).
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            if urllib.parse.urlsplit(newurl).scheme != urllib.parse.urlsplit(req.full_url).scheme:
                return None
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(SameScheme)
    headers = {"User-Agent": f"guardian/{__version__}"}
    if body is not None:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    # (The config let only http:// and https:// URLs through.)
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(_ANSWER_MAX)
            return ""
    except urllib.error.HTTPError as e:
        return f"the server answered HTTP {e.code} {e.reason}"
    except urllib.error.URLError as e:
        reason = e.reason
        return str(reason.strerror if isinstance(reason, OSError) and reason.strerror else reason)
    except http.client.HTTPException as e:  # endless headers, a malformed status line
        return f"not an HTTP answer ({type(e).__name__}: {str(e).strip()})"
    except (OSError, ValueError) as e:
        return str(e) or type(e).__name__
    except Exception as e:  # whatever else the library raises: said, not just "status 1"
        return f"{type(e).__name__}: {e}"


def _child(  # pragma: no cover - the forked child (coverage does not follow os._exit)
    url: str, body: bytes | None, timeout: float, out: int, after: tuple[int, float] | None
) -> None:
    """The forked child's whole life: never returns. ``after``: the pipe of the ping sent
    before this one, and how long that one may still last: this one waits for its end
    (its writer gone), then has its own ``timeout``. The monitor hears them in the order
    they were sent (a success that overtook its run's /start would leave the check
    "started" on healthchecks.io, alerting when no end came); and a slow /start does
    not eat into the time of the ping after it."""
    status = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # Each phase within its time (the turn, then the exchange, DNS included): past
        # it, the kernel ends this process wherever it is.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, (after[1] if after else 0.0) + _TURN_SLACK)
        # Nothing of the parent's is held open by it: a lock (flock) the parent lets go of
        # by closing it would otherwise stay held while the ping lasts.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = sorted({out} if after is None else {out, after[0]})
        lo = 3
        for fd in keep:
            os.closerange(lo, fd)
            lo = fd + 1
        os.closerange(lo, 1 << 16)
        if after is not None:
            before = select.poll()
            before.register(after[0], select.POLLHUP)
            while not any(ev & (select.POLLHUP | select.POLLERR) for _, ev in before.poll()):
                time.sleep(0.005)  # its answer is there, not yet its exit: a moment
        signal.setitimer(signal.ITIMER_REAL, timeout)
        said = one_line(_send(url, body, timeout))
        os.write(out, said.encode("utf-8", "replace")[:1000])
        status = 0
    finally:
        os._exit(status)


class Pinger:
    """Pings sent without waiting, and gathered (bounded) when the run is about to end."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.pending: list[_Pending] = []

    def send(self, kind: str, body: bytes | None = None) -> str | None:
        """Start a ping (``kind``: start, success or fail) and return at once; what went
        wrong if it could not even be started."""
        url = self.url if kind == "success" else f"{self.url}/{kind}"
        last = self.pending[-1] if self.pending else None
        now = time.monotonic()
        turn = max(now, last.ends) if last else now  # when its own exchange may begin
        try:
            rfd, wfd = os.pipe()
        except OSError as e:
            return f"{kind} ping not sent: {e.strerror or e}"
        try:
            pid = os.fork()
        except OSError as e:
            os.close(rfd)
            os.close(wfd)
            return f"{kind} ping not sent: cannot fork ({e.strerror or e})"
        if pid == 0:  # pragma: no cover - the child (coverage does not follow os._exit)
            os.close(rfd)
            _child(url, body, self.timeout, wfd, (last.fd, turn - now) if last else None)
        os.close(wfd)
        self.pending.append(_Pending(kind, pid, rfd, turn + self.timeout + _TURN_SLACK))
        return None

    def horizon(self) -> float:
        """How long, from now, until every ping sent so far is over at the latest."""
        ends = [p.ends for p in self.pending]
        return max(0.0, max(ends) - time.monotonic()) if ends else 0.0

    def collect(self, wait: float) -> list[str]:
        """What every ping sent so far came to, waiting at most ``wait`` seconds in all
        (and no ping longer than its timeout); one line for each that failed. A ping
        still under way then is ended."""
        problems: list[str] = []
        end = time.monotonic() + max(0.0, wait)
        try:
            for p in list(self.pending):
                said = self._wait(p, end)
                self.pending.remove(p)
                if said:
                    problems.append(f"{p.kind} ping to {self._shown(p.kind)} failed: {said}")
        finally:
            for p in self.pending:  # cut short (a signal): ended, not left running
                self._end(p)
            self.pending.clear()
        return problems

    def poll(self) -> list[str]:
        """What the pings already done came to, without waiting (a watcher's loop): only
        those that have said how it went (a moment for the child, exiting, to close)."""
        done = [p for p in self.pending if select.select([p.fd], [], [], 0)[0]]
        rest = [p for p in self.pending if p not in done]
        self.pending = done
        try:
            return self.collect(0.05)
        finally:
            self.pending = rest

    def _shown(self, kind: str) -> str:
        return self.url if kind == "success" else f"{self.url}/{kind}"

    def _wait(self, p: _Pending, end: float) -> str:
        data = b""
        while True:
            left = max(0.0, end - time.monotonic())
            if not select.select([p.fd], [], [], left)[0]:
                self._end(p)
                return "no answer in the time the run had left"
            chunk = os.read(p.fd, 1000)
            if not chunk:
                break
            data += chunk
        os.close(p.fd)
        _, status = os.waitpid(p.pid, 0)  # it has closed its pipe: it is exiting
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
            return f"no answer within {self.timeout:g}s"
        if os.waitstatus_to_exitcode(status) != 0:
            return f"the ping's process ended with status {os.waitstatus_to_exitcode(status)}"
        return one_line(data.decode("utf-8", "replace"))

    @staticmethod
    def _end(p: _Pending) -> None:
        # Our own child, not yet reaped: its pid cannot be anyone else's.
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p.pid, 0)
        with contextlib.suppress(OSError):
            os.close(p.fd)


def body(lines: Iterable[str]) -> bytes:
    """The reasons, one line each, at most ``BODY_MAX`` bytes (cut at a character)."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8", "replace")
    if len(data) <= BODY_MAX:
        return data
    cut = data[: BODY_MAX - 20].decode("utf-8", "ignore")
    return (cut + "\n[... cut short]\n").encode()

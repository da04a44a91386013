"""Targets acted on side by side: each in a worker process of its own.

A cold start of twenty targets, each with a second of ``start_grace``, took
twenty seconds one after another; a watcher must notice one target's death
while another starts. So whatever takes time (a start, a stop, a probe round)
runs in a forked worker: a whole guardian run for one target, with its own
alarm, its own signals, its own lock and its own records, exactly as a cron
run for that target alone would be. Processes, not threads: a run's limits
are signals, and signals reach only a process's main thread. A fork costs
about a millisecond here (everything is imported already).

The worker writes its records to the audit log itself (what it did is never
lost with the parent) and sends each, as a JSON line, to the parent, which
shows them and counts them in the exit code. Its exit code says what the
records cannot: 124 (its time ran out), 3 (something could not be written),
128+N (a signal).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterable

from guardian import deadline
from guardian.audit import AuditRecord
from guardian.errors import EXIT_INTERNAL

Send = Callable[[AuditRecord], None]
# A worker's time ends this long before its parent's: a worker cut short still ends
# what it started (a second or two) and writes its record, before the parent's end.
MARGIN = 2.0
# After the parent's end, what its workers still get (to finish the above), then what a
# stopped one gets between SIGTERM and SIGKILL: all well inside the parent's own last
# resort (deadline.HARD_GRACE), so that the parent always writes its records.
GRACE = 1.5
KILL_AFTER = 1.0


class Worker:
    """One forked worker, seen from the parent."""

    def __init__(self, target: str, pid: int, fd: int) -> None:
        self.target = target
        self.pid = pid  # our child, unreaped until ``reap``: its pid is ours to signal
        self.fd = fd  # the read end of its record pipe; EOF when it has exited
        self.status: int | None = None  # its exit code, once reaped
        self.records: list[AuditRecord] = []
        self._buf = bytearray()
        self.eof = False

    def read(self) -> list[AuditRecord]:
        """The records it has sent since the last call (never blocking)."""
        new: list[AuditRecord] = []
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                new.append(AuditRecord.from_json(line.decode("utf-8", "replace")))
        self.records += new
        return new

    def reap(self, wait: float = 1.0) -> int | None:
        """Its exit code, waiting ``wait`` seconds at most (it has closed its pipe: it is
        exiting). None if it has not exited (then it stays unreaped, and ours to kill)."""
        end = time.monotonic() + wait
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                if self.status < 0:  # killed by a signal, as a shell says it
                    self.status = 128 - self.status
                os.close(self.fd)
                break
            if time.monotonic() >= end:
                return None
            time.sleep(0.005)
        return self.status

    def signal(self, sig: int) -> None:
        if self.status is None:  # unreaped: the pid cannot be anyone else's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    @property
    def done(self) -> bool:
        return self.status is not None


def spawn(target: str, body: Callable[[Send], int], *, close: Iterable[int] = ()) -> Worker:
    """Fork a worker that runs ``body(send)`` and exits with what it returns.

    ``close``: descriptors the worker must not keep (a watcher's locks: a worker
    still running after its watcher must not keep the next one from taking over).
    """
    read_end, write_end = os.pipe()
    pid = deadline.fork()
    if pid == 0:  # pragma: no cover - the child ends by _exit; coverage sees the parent
        code = 70
        try:
            os.close(read_end)
            for fd in close:
                with contextlib.suppress(OSError):
                    os.close(fd)
            # The parent's handlers hold until the worker arms its own run: a signal
            # before then ends it as it would have ended the parent.
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)

            def send(record: AuditRecord) -> None:
                data = memoryview((record.to_json() + "\n").encode("utf-8", "backslashreplace"))
                with contextlib.suppress(OSError):  # the parent is gone: the log has it
                    while data:
                        data = data[os.write(write_end, data) :]

            code = body(send)
        except BaseException:
            with contextlib.suppress(Exception):
                os.write(2, f"guardian: worker for {target}: internal error:\n"
                         f"{traceback.format_exc()}".encode())  # fmt: skip
        finally:
            os._exit(code)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return Worker(target, pid, read_end)


def wait(
    workers: list[Worker],
    show: Callable[[AuditRecord], None],
    until: float,
) -> None:
    """Show the workers' records as they come, until every one has exited or ``until``
    (monotonic) has passed."""
    poller = select.poll()
    live = {w.fd: w for w in workers if not w.eof}
    for fd in live:
        poller.register(fd, select.POLLIN)
    while live:
        left = until - time.monotonic()
        if left <= 0:
            return
        for fd, _ in poller.poll(min(left, 1.0) * 1000):
            worker = live[fd]
            for record in worker.read():
                show(record)
            if worker.eof:
                poller.unregister(fd)
                del live[fd]
                worker.reap()
    for worker in workers:
        if worker.status is None:
            worker.reap(0.0)


def stop_all(workers: list[Worker], sig: int, show: Callable[[AuditRecord], None]) -> None:
    """Pass ``sig`` on to the workers still running (with SIGCONT: one stopped with
    SIGSTOP heeds nothing else), let them write their records for ``KILL_AFTER``
    seconds, then SIGKILL and reap what is left. Bounded: about two seconds."""
    for worker in workers:
        worker.signal(sig)
        worker.signal(signal.SIGCONT)
    wait(workers, show, time.monotonic() + KILL_AFTER)
    for worker in workers:
        if worker.status is None:
            worker.signal(signal.SIGKILL)
            worker.reap(0.5)


def finish(workers: list[Worker], show: Callable[[AuditRecord], None], end: float) -> None:
    """After the parent's time: its workers (cut short a moment before it) get ``GRACE``
    more to end what they started and write their records; then ``stop_all``."""
    wait(workers, show, max(end, time.monotonic()) + GRACE)
    stop_all([w for w in workers if not w.done], signal.SIGTERM, show)


def unrecorded(worker: Worker) -> str | None:
    """Why ``worker`` left its target without a record, in words; None if it did not."""
    if any(r.action != "warning" for r in worker.records):
        return None
    return f"its worker (pid {worker.pid}) ended with status {worker.status} and no record"


def troubled(worker: Worker) -> bool:
    """Could it not write something (3), fail inside (70), or not even be reaped?"""
    return worker.status is None or worker.status in (EXIT_INTERNAL, 70)

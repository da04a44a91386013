"""The run's own time limit, which holds even when a call blocks.

Three layers, each for what the one before cannot do:

1. SIGALRM raises RunTimeout in the main thread: at the end of the run, or
   earlier at the end of one target's share of it (``Deadline.slice``), so
   that one slow target cannot keep the next ones from being checked.
2. If the main thread is stuck where a signal cannot reach Python (an
   uninterruptible read of /proc or of a hung NFS mount), a watchdog thread
   runs ``on_hard_timeout`` ``HARD_GRACE`` seconds after the end and exits 124.
3. If even that thread cannot run (C code holding the GIL), faulthandler's
   own C thread dumps every thread's traceback to stderr and exits 1.

Signals that would cut a step that must be whole (a spawn and the state
write that records it; an audit record) are held for the length of
``critical()`` and delivered right after it.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from guardian.errors import EXIT_TIMEOUT, RunTimeout
from guardian.files import never_blocking

HARD_GRACE = 5.0
LAST_RESORT_GRACE = 5.0
_DEFERRED = (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Deadline:
    """When the run must be over, on the monotonic clock; it can be moved while it runs."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.began = clock()
        self.seconds = seconds
        self.end = self.began + seconds
        self.alarm_at = self.end

    def remaining(self) -> float:
        """Until the end of the run."""
        return max(0.0, self.end - self._clock())

    def left(self) -> float:
        """Until the end of what is in hand now (a target's share, or the run)."""
        return max(0.0, self.alarm_at - self._clock())

    def over(self) -> bool:
        return self._clock() >= self.end

    def limit(self, seconds: float) -> None:
        """The run may last ``seconds`` in all, counted from its beginning."""
        self.seconds = seconds
        self.end = self.began + seconds
        self.slice(self.end)
        self._last_resort()

    def _last_resort(self) -> None:
        if _signals.armed:
            _signals.current = self
            faulthandler.dump_traceback_later(
                max(0.001, self.end - self._clock()) + HARD_GRACE + LAST_RESORT_GRACE,
                exit=True,
                file=_signals.dump_to if _signals.dump_to is not None else sys.stderr,
            )

    def slice(self, until: float) -> None:
        """Raise RunTimeout at ``until`` (never later than the end): one target's share."""
        self.alarm_at = min(until, self.end)
        if _signals.armed:
            # setitimer(0) would disarm it: an end already past fires at once instead.
            signal.setitimer(signal.ITIMER_REAL, max(0.000001, self.alarm_at - self._clock()))


_PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # what a parent tells its workers


class _Signals:
    """Process-wide, as signals are: whether the alarm is armed, and what is held back."""

    armed = False
    depth = 0  # critical() sections entered
    pending: BaseException | None = None
    dump_to: int | None = None  # faulthandler's last words: stderr, never blocking
    current: Deadline | None = None  # the one armed


def fork() -> int:
    """``os.fork()`` inside an armed run: 0 in the child, which starts unarmed.

    faulthandler's watchdog thread does not exist in a child, yet its lock is
    copied as held: re-arming it there would wait for ever. So it is stopped
    around the fork, and armed again in the parent. (The alarm itself is not
    inherited: a child arms its own run.) A signal meanwhile waits for the parent.

    SIGTERM, SIGINT and SIGHUP are blocked across the fork, and the child's are
    put back to their default before it unblocks them: a signal sent to the child
    before it arms its own handling ends it, as it would have ended the parent.
    (Without the block, one that came while the child was still resetting what
    it had copied was taken for the parent's and dropped: the worker went on, deaf
    to it, until it was killed.)
    """
    with critical():
        armed = _signals.armed
        if armed:
            faulthandler.cancel_dump_traceback_later()
        before = signal.pthread_sigmask(signal.SIG_BLOCK, _PASSED_ON)
        try:
            pid = os.fork()
            if pid == 0:
                _signals.armed = False
                _signals.depth = 1  # this section's, which ends as fork() returns
                _signals.pending = None
                _signals.current = None
                for sig in _PASSED_ON:
                    signal.signal(sig, signal.SIG_DFL)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        if pid == 0:
            return 0
        if armed and _signals.current is not None:
            _signals.current._last_resort()
        return pid


_signals = _Signals()


def run_remaining() -> float | None:
    """The armed run's time left until its end (None outside an armed run)."""
    current = _signals.current
    return current.remaining() if _signals.armed and current is not None else None


def deliver(exc: BaseException) -> None:
    """Raise ``exc`` (from a signal handler) now, or at the end of the critical section."""
    if _signals.depth:
        if _signals.pending is None:
            _signals.pending = exc
        return
    raise exc


@contextmanager
def critical() -> Iterator[None]:
    """A step that must be whole: a time-out or a signal waits until it is done."""
    _signals.depth += 1
    try:
        yield
    finally:
        _signals.depth -= 1
        if not _signals.depth and _signals.pending is not None:
            exc, _signals.pending = _signals.pending, None
            raise exc


def _raise_timeout(signum: int, frame: FrameType | None) -> None:
    deliver(RunTimeout())


@contextmanager
def enforce(seconds: float, on_hard_timeout: Callable[[], None]) -> Iterator[Deadline]:
    """Bound the block to ``seconds`` (movable: ``Deadline.limit``); see the module's docstring."""
    deadline = Deadline(seconds)
    cancelled = threading.Event()

    def watchdog() -> None:
        # Signals are the main thread's business: none may be delivered to this one, or a
        # signal held back by critical() would reach Python through it all the same.
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        while True:
            left = deadline.end + HARD_GRACE - time.monotonic()
            if left <= 0:
                break
            if cancelled.wait(min(left, 0.5)):  # the end may move: look again now and then
                return
        try:
            on_hard_timeout()
        finally:
            os._exit(EXIT_TIMEOUT)

    if _signals.dump_to is None:  # where the last resort writes: never blocking on a stuck pipe
        _signals.dump_to = never_blocking(2)
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    thread = threading.Thread(target=watchdog, name="guardian-watchdog", daemon=True)
    _signals.armed = True
    try:
        with critical():  # an alarm while it is being armed ends the run after, not inside
            thread.start()
            deadline.limit(seconds)
        yield deadline
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _signals.armed = False
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
        cancelled.set()

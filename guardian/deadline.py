"""The run's own time limit, which holds even when a call blocks.

Three layers, each for what the one before cannot do:

1. At ``seconds`` a SIGALRM handler raises RunTimeout in the main thread:
   the run records ``timeout``, ends what it started, and exits 124.
2. If the main thread is stuck where a signal cannot reach Python (an
   uninterruptible read of /proc or of a hung NFS mount), a watchdog thread
   runs ``on_hard_timeout`` ``HARD_GRACE`` seconds later and exits 124.
3. If even that thread cannot run (C code holding the GIL), faulthandler's
   own C thread dumps every thread's traceback to stderr and exits 1.
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

HARD_GRACE = 5.0
LAST_RESORT_GRACE = 5.0


class Deadline:
    """When the run must be over, on the monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - self._clock())


def _raise_timeout(signum: int, frame: FrameType | None) -> None:
    raise RunTimeout


@contextmanager
def enforce(seconds: float, on_hard_timeout: Callable[[], None]) -> Iterator[Deadline]:
    """Bound the block to ``seconds``; see the module's docstring for how."""
    deadline = Deadline(seconds)
    cancelled = threading.Event()

    def watchdog() -> None:
        if cancelled.wait(seconds + HARD_GRACE):
            return
        try:
            on_hard_timeout()
        finally:
            os._exit(EXIT_TIMEOUT)

    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    thread = threading.Thread(target=watchdog, name="guardian-watchdog", daemon=True)
    thread.start()
    faulthandler.dump_traceback_later(
        seconds + HARD_GRACE + LAST_RESORT_GRACE, exit=True, file=sys.stderr
    )
    try:
        yield deadline
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
        cancelled.set()

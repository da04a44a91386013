"""The run's own time limit, when a signal can reach Python and when it cannot."""

from __future__ import annotations

import subprocess
import sys
import time

from guardian.errors import EXIT_TIMEOUT

STUCK = """
import signal, sys, time
from guardian import deadline
deadline.HARD_GRACE = 1.0
# Block SIGALRM, as a thread stuck in an uninterruptible read effectively is:
# the soft alarm never reaches Python, so only the watchdog can end the run.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
with deadline.enforce(1.0, lambda: print("on_hard_timeout ran", file=sys.stderr)):
    time.sleep(60)
print("not reached")
"""

SOFT = """
import sys, time
from guardian import deadline
from guardian.errors import RunTimeout
try:
    with deadline.enforce(0.5, lambda: None) as d:
        time.sleep(60)
except RunTimeout:
    print(f"soft {d.remaining():.1f}")
"""


def test_soft_alarm_raises_run_timeout_in_time() -> None:
    began = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", SOFT], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.stdout == "soft 0.0\n"
    assert time.monotonic() - began < 5


def test_watchdog_ends_a_run_that_no_signal_can_reach_with_124() -> None:
    began = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == EXIT_TIMEOUT
    assert "on_hard_timeout ran" in out.stderr
    assert "not reached" not in out.stdout
    assert 2 <= time.monotonic() - began < 10

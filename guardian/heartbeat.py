"""The agent's side of a heartbeat probe: systemd's sd_notify("WATCHDOG=1"), as a file.

In a shell agent's loop:   guardian heartbeat /run/agent.heartbeat
In a Python agent:

    from guardian.heartbeat import beat, keep_beating
    beat("/run/agent.heartbeat")                  # after each unit of real work, or
    keep_beating("/run/agent.heartbeat", every=10)   # from a thread, while the process runs

Beat where the work happens, not from a timer alone: a thread that beats
while the main loop is stuck says the process is alive, not that it works.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def beat(path: str | os.PathLike[str]) -> None:
    """Mark the agent alive now: create the file, or set its mtime to now."""
    p = Path(path)
    try:
        os.utime(p)
    except FileNotFoundError:
        p.touch()


def keep_beating(path: str | os.PathLike[str], every: float = 10.0) -> threading.Event:
    """Beat every ``every`` seconds from a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            beat(path)
            stop.wait(every)

    threading.Thread(target=loop, name="guardian-heartbeat", daemon=True).start()
    return stop

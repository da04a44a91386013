"""guardian: a careful cron job that keeps a supervisor alive."""

from __future__ import annotations

import os
import stat
import sys
from types import TracebackType

# A literal, not importlib.metadata: `guardian check` runs every minute on
# every host and reading package metadata costs milliseconds it never needs.
__version__ = "0.1.0"


def _interrupted_while_starting(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """A Ctrl-C (SIGINT) that comes while Python is still importing guardian, before
    ``cli.main`` handles signals itself, ends it as one a moment later would: one line
    on stderr and exit 130, never a traceback. (Nothing has been done yet.) Set here,
    the first of guardian's code to run: importing the command line takes tens of ms."""
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    try:
        out = 2
        if stat.S_ISFIFO(os.fstat(2).st_mode):  # a pipe nobody reads must not hang it
            out = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(out, b"guardian: interrupted by SIGINT while starting\n")
    except OSError:
        pass
    os._exit(130)


# Only for the command (`guardian`, `python -m guardian`): an agent that imports
# guardian.heartbeat keeps its own Ctrl-C.
if sys.argv and os.path.basename(sys.argv[0]) in ("guardian", "-m"):
    sys.excepthook = _interrupted_while_starting

"""A test target: runs until it is killed; options shape how it starts.

Every test passes its own tmp_path in --tag, so that no two tests' targets
ever share a command line (the process-table scan matches exact argv).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def write_pidfile(path: str, pid: int | None = None) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{pid or os.getpid()}\n")
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tag", required=True)
    p.add_argument("--exit", type=int, default=None, help="exit at once with this status")
    p.add_argument("--daemonize", metavar="PIDFILE", help="fork; the child writes PIDFILE")
    p.add_argument("--no-pidfile", action="store_true", help="with --daemonize: never write it")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before it is ready")
    p.add_argument("--die-after", type=float, default=None, help="exit 1 after this long")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    p.add_argument("--spawn-child", metavar="PIDFILE", help="start a child; write its pid here")
    args = p.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    print(f"agent {os.getpid()} starting", flush=True)
    if args.exit is not None:
        print("agent: failing on purpose", flush=True)
        return args.exit
    if args.daemonize:
        if os.fork() > 0:
            return 0  # the parent of a daemon exits once it has forked
        os.setsid()
        time.sleep(args.delay)
        if not args.no_pidfile:
            write_pidfile(args.daemonize)
    else:
        time.sleep(args.delay)
    if args.spawn_child:
        # What supervisord does with its agents: a child in the same session, which
        # outlives its parent if the parent is killed.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                  args.tag])  # fmt: skip
        write_pidfile(args.spawn_child, child.pid)
    started = time.monotonic()
    while args.die_after is None or time.monotonic() - started < args.die_after:
        time.sleep(0.2)
    print("agent: dying on purpose", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())

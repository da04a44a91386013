"""How long does a `guardian check` take to start many targets at once, and to check them?

    .venv/bin/python bench/cold_start.py [--runs 5] [--smoke]

Cold start: 1, 20 and 100 targets, none running, each `/bin/sleep N` (a
distinct N; guardian writes each its own pidfile) with start_grace 1s, so a
start takes at least a second and starting them one after another would take
N seconds. Before each cold start the state folder is emptied (as after a
reboot: nothing remembered); after it, every target is ended by the pid in its
pidfile, once /proc/PID/cmdline shows it is the expected sleep.

Healthy: `guardian check` of 1 and of 100 targets, all running and known.

Whole `guardian check` processes are timed (wall time from spawn to exit),
the sizes interleaved in each of ``--runs`` rounds; medians are printed.
Issue 9's goal: a healthy check of 100 targets takes at most twice one of 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import benchlib as lib

HEALTHY_EACH = 3  # healthy checks timed per round and size


def timed(argv: list[str]) -> float:
    """Wall seconds of one run of ``argv``, which must succeed."""
    seconds, code, err = lib.run(argv)
    if code != 0:
        raise SystemExit(f"{argv} failed ({code}): {err[-2000:]}")
    return seconds


class Size:
    def __init__(self, root: Path, n: int, tag: str) -> None:
        self.n = n
        self.folder = root / f"n{n}"
        self.folder.mkdir()
        self.targets = {f"t{i}": lib.sleep_argv(9_400_000 + n * 1000 + i, tag) for i in range(n)}
        config = lib.write_config(self.folder, self.targets, extra='start_grace = "1s"',
                                  timeout="120s")  # fmt: skip
        self.argv = [lib.GUARDIAN, "check", "--config", str(config)]
        self.cold: list[float] = []
        self.healthy: list[float] = []

    def running(self) -> int:
        """How many targets run as their pidfiles say."""
        count = 0
        for name, argv in self.targets.items():
            pid = lib.read_pid(lib.pidfile(self.folder, name))
            count += pid is not None and lib.runs(pid, argv)
        return count

    def cold_start(self) -> None:
        shutil.rmtree(self.folder / "state" / "state", ignore_errors=True)  # nothing remembered
        self.cold.append(timed(self.argv))
        if (up := self.running()) != self.n:
            raise SystemExit(f"cold start of {self.n}: {up} running after it")

    def check_healthy(self, times: int) -> None:
        for _ in range(times):
            self.healthy.append(timed(self.argv))

    def end(self) -> None:
        lib.end_targets(self.folder, self.targets)
        gone = lib.wait_for(lambda: not lib.scan(self.targets.values()), 10.0, 0.05)
        if not gone:
            raise SystemExit(f"{self.n} targets: some are still running after SIGKILL")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="rounds (each size once a round)")
    parser.add_argument("--smoke", action="store_true", help="1 and 3 targets, one round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    lib.exit_on_sigterm()
    cold_sizes, healthy_sizes = ((1, 3), (1, 3)) if args.smoke else ((1, 20, 100), (1, 100))
    if args.smoke:
        args.runs = 1

    root = Path(tempfile.mkdtemp(prefix="guardian-cold-"))
    try:
        tag = lib.run_tag()
        sizes = {n: Size(root, n, tag) for n in sorted({*cold_sizes, *healthy_sizes})}
        print(f"{args.runs} rounds; {lib.machine()}")
        sys.stdout.flush()
        try:
            timed(sizes[1].argv)  # warm the page cache and the .pyc files
            sizes[1].end()
            for _ in range(args.runs):
                for n, size in sizes.items():
                    if n in cold_sizes:
                        size.cold_start()
                    else:
                        timed(size.argv)  # started, untimed: only its healthy check counts
                    if n in healthy_sizes:
                        timed(size.argv)  # the first check after a start records it as known
                        size.check_healthy(HEALTHY_EACH)
                    size.end()
        finally:
            for size in sizes.values():
                lib.end_targets(size.folder, size.targets)
        report(sizes, cold_sizes, healthy_sizes)
        return 0
    finally:
        lib.finish(root, args.keep)


def report(sizes: dict[int, Size], cold_sizes: tuple[int, ...],
           healthy_sizes: tuple[int, ...]) -> None:  # fmt: skip
    one = statistics.median(sizes[1].cold)
    for n in cold_sizes:
        median = statistics.median(sizes[n].cold)
        print(f"cold start, {n} targets (start_grace 1s): median {lib.ms(median)}, "
              f"{median / one:.2f}x one target (n={len(sizes[n].cold)})")  # fmt: skip
    one = statistics.median(sizes[1].healthy)
    for n in healthy_sizes:
        median = statistics.median(sizes[n].healthy)
        print(f"healthy check, {n} targets: median {lib.ms(median)}, {median / one:.2f}x one "
              f"target (n={len(sizes[n].healthy)})")  # fmt: skip
    most = max(healthy_sizes)
    ratio = statistics.median(sizes[most].healthy) / one
    print(f"goal healthy {most} <= 2x healthy 1: {ratio:.2f}x: {lib.verdict(ratio <= 2.0)}")
    print(f"(cold start with workers: no goal set; {os.cpu_count()} cores)")


if __name__ == "__main__":
    raise SystemExit(main())

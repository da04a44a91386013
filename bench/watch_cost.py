"""What does watching cost? CPU and memory of a `guardian check --watch` process.

    .venv/bin/python bench/watch_cost.py [--minutes 60] [--sample 10] [--smoke]

Three watchers run side by side, each on its own config and state folder:
1 healthy target, 10 healthy targets (no probes), and, for information, 1 target
with a probe (health.command ["/bin/true"] every 10 s). Targets are
`/bin/sleep` processes started first by a plain `guardian check`, so each
watcher finds them healthy and only watches.

CPU: the watching process's own time on a CPU (utime + stime, in nanoseconds
from /proc/PID/schedstat rather than in /proc/PID/stat's 10 ms ticks; its
children, the workers and probes, excluded and shown apart from /proc/PID/stat), from a first
sample once its check is done to the end, extrapolated to an hour. The start
(imports and the check) is shown apart: cron starts a new watcher every
interval, so a host pays it that often. Memory: VmRSS sampled every
``--sample`` seconds, and VmHWM (the peak); "no growth" means the peak at the
end equals the peak at the first minute.

Issue 9's goals: under 1 s of CPU per hour watching 1 and 10 targets, and no
memory growth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import benchlib as lib

PROBE = '[targets.{name}.health]\ncommand = ["/bin/true"]\ninterval = "10s"'


class Variant(NamedTuple):
    label: str
    targets: int
    probe: bool
    goal: bool  # judged against the goals, or for information
    waits: int | None = None  # a second run on this variant's config: it only waits


VARIANTS = (
    Variant("1 target", 1, False, True),
    Variant("10 targets", 10, False, True),
    Variant("1 target + probe every 10s", 1, True, False),
    # As a cron run does while the run before it watches (with --watch = interval +
    # 10 s, about 10 s of every run): it never gets the lock here.
    Variant("waiting for the watch lock (1 target)", 1, False, False, waits=0),
)
LATER = 3.0  # seconds: a waiting run starts this long after the one it waits for


class Sample(NamedTuple):
    at: float  # seconds since the watcher was spawned
    cpu: float  # its own utime + stime
    children: float  # its reaped children's
    rss: int  # KiB
    hwm: int  # KiB


class Watch:
    def __init__(
        self, variant: Variant, index: int, tag: str, root: Path, shares: Watch | None = None
    ) -> None:
        self.variant = variant
        self.folder = root / f"v{index}" if shares is None else shares.folder
        self.targets = {
            f"t{i}": lib.sleep_argv(9_100_000 + index * 100 + i, tag)
            for i in range(variant.targets)
        } if shares is None else shares.targets  # fmt: skip
        self.config = self.folder / "guardian.toml"
        self.err = self.folder / ("watch.err" if shares is None else "waiting.err")
        if shares is None:
            self.folder.mkdir()
            extra = 'start_grace = "0.1s"' + ("\n" + PROBE if variant.probe else "")
            lib.write_config(self.folder, self.targets, extra=extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.began = 0.0
        self.samples: list[Sample] = []

    def prestart(self) -> None:
        if self.variant.waits is not None:
            return  # the targets are the other run's
        argv = [lib.GUARDIAN, "check", "--config", str(self.config)]
        _, code, err = lib.run(argv)
        if code != 0:
            raise SystemExit(f"{argv} failed ({code}): {err}")

    def spawn(self, seconds: float) -> None:
        argv = [lib.GUARDIAN, "check", "--watch", f"{seconds:.0f}s", "--config", str(self.config)]
        err = self.err.open("wb")
        self.began = time.monotonic()
        self.proc = subprocess.Popen(argv, env=lib.ENV, stdout=subprocess.DEVNULL, stderr=err)
        err.close()

    def sample(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.err.read_text()
            raise SystemExit(f"{self.variant.label}: the watcher exited early: {err}")
        cpu = lib.cpu_seconds(self.proc.pid)
        exact = lib.cpu_ns(self.proc.pid)
        mem = lib.status_kib(self.proc.pid, "VmRSS", "VmHWM")
        if cpu is None or len(mem) < 2:
            return
        own = exact / 1e9 if exact is not None else cpu[0]
        at = time.monotonic() - self.began
        self.samples.append(Sample(at, own, cpu[1], mem["VmRSS"], mem["VmHWM"]))

    def ended_record(self) -> str:
        """What its watch_ended record said (deaths noticed, worker runs, pidfd or not)."""
        log = self.folder / "state" / "audit.jsonl"
        me = self.proc.pid if self.proc is not None else None
        texts = []
        try:
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                if (rec.get("action"), rec.get("target"), rec.get("guardian_pid")) == (
                    "watch_ended",
                    "t0",
                    me,
                ):
                    texts.append(rec.get("reason", ""))
        except (OSError, ValueError):
            pass
        return texts[-1] if texts else "(no watch_ended record for t0)"

    def stop(self) -> None:
        if self.proc is not None:
            lib.stop_child(self.proc)


def first_minute(samples: list[Sample], settle: float, minute: float) -> Sample:
    """The sample nearest ``minute`` seconds (after ``settle``)."""
    later = [s for s in samples if s.at >= settle] or samples
    return min(later, key=lambda s: abs(s.at - minute))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to watch")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--smoke", action="store_true", help="12 s of watching, for CI")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    lib.exit_on_sigterm()
    if args.smoke:
        args.minutes, args.sample = 12 / 60, 1.0
    seconds = args.minutes * 60
    settle = min(5.0, seconds / 4)  # the start and the check are over by then
    minute = 60.0 if seconds >= 120 else settle

    root = Path(tempfile.mkdtemp(prefix="guardian-watch-cost-"))
    try:
        tag = lib.run_tag()
        watches: list[Watch] = []
        print(
            f"watching for {args.minutes:g} min, sampling every {args.sample:g} s; {lib.machine()}"
        )
        sys.stdout.flush()
        try:
            for i, variant in enumerate(VARIANTS):
                shares = watches[variant.waits] if variant.waits is not None else None
                watches.append(Watch(variant, i, tag, root, shares))
            measure(watches, seconds, args.sample)
        finally:
            # The waiting runs first (else one takes the lock over, and restarts the targets
            # as they are ended), then the watchers, then the targets.
            for w in sorted(watches, key=lambda w: w.variant.waits is None):
                w.stop()
            for w in watches:
                lib.end_targets(w.folder, w.targets)
        report(watches, settle, minute)
        return 0
    finally:
        lib.finish(root, args.keep)


def measure(watches: list[Watch], seconds: float, every: float) -> None:
    """Start the targets, then the watchers; sample them every ``every`` s for ``seconds``."""
    for w in watches:
        w.prestart()
    for w in watches:  # it outlives the measurement; ended by SIGTERM after it
        if w.variant.waits is None:
            w.spawn(seconds + 120)
    time.sleep(LATER)
    for w in watches:  # shorter than the run it waits for: it never gets the lock
        if w.variant.waits is not None:
            w.spawn(seconds + 60)
    began = time.monotonic()
    nxt = began
    while True:
        for w in watches:
            w.sample()
        if time.monotonic() - began >= seconds:
            break
        nxt += every
        time.sleep(max(0.0, min(nxt, began + seconds) - time.monotonic()))


def report(watches: list[Watch], settle: float, minute: float) -> None:
    print()
    print("| watcher | start + check CPU | CPU per hour after it | children CPU per hour "
          "| RSS at first minute | RSS at end | peak (VmHWM) first minute -> end |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    verdicts = []
    for w in watches:
        base = first_minute(w.samples, settle, settle)
        last = w.samples[-1]
        first = first_minute(w.samples, settle, minute)
        span = last.at - base.at
        per_hour = (last.cpu - base.cpu) / span * 3600 if span > 0 else float("nan")
        kids = (last.children - base.children) / span * 3600 if span > 0 else float("nan")
        print(
            f"| {w.variant.label} | {base.cpu:.2f} s | {per_hour:.3f} s | {kids:.3f} s "
            f"| {first.rss / 1024:.1f} MiB | {last.rss / 1024:.1f} MiB "
            f"| {first.hwm / 1024:.1f} -> {last.hwm / 1024:.1f} MiB |"
        )
        if w.variant.goal:
            verdicts.append(
                f"cpu per hour, {w.variant.label}: {per_hour:.3f} s "
                f"(goal < 1 s: {lib.verdict(per_hour < 1.0)})"
            )
            grew = last.hwm - first.hwm
            verdicts.append(
                f"peak memory growth, {w.variant.label}: {grew} KiB after {last.at / 60:.1f} min "
                f"(goal 0: {lib.verdict(grew == 0)})"
            )
        elif w.variant.waits is not None:
            waited = "not watched" in w.ended_record()
            verdicts.append(
                f"cpu per hour, {w.variant.label}: {per_hour:.3f} s (information"
                + ("; it never got the lock, as meant)" if waited else
                   "; BUT it got the lock, so this is no waiting run's cost)")
            )  # fmt: skip
    print()
    for line in verdicts:
        print(line)
    print()
    for w in watches:
        print(f"{w.variant.label}: {w.ended_record()}")
    print(
        f"\nOwn CPU from /proc/PID/schedstat (ns; /proc/PID/stat's utime + stime agree to its "
        f"1/{lib.CLK_TCK} s ticks), children's from /proc/PID/stat; first sample {settle:g} s in"
    )


if __name__ == "__main__":
    raise SystemExit(main())

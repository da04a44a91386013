"""Does a busy host slow `guardian check` down? Idle host against N idle processes, side by side.

    .venv/bin/python bench/busy_host.py [--procs 5000] [--runs 10] [--baseline DIR] [--smoke]

Times, as whole processes, a healthy `guardian check` of supervisord found
(a) by its pidfile and (b) by the process-table scan (its pidfile missing,
nothing remembered: the state folder is emptied before each run, untimed; such
a run scans twice, once to find it and once more under the target's lock before
adopting it). Each is timed on the idle host, then with ``--procs`` idle
processes running (``sleep``, as root like the target, so the uid pre-filter
lets every one through to its command line; one in ``--long-every`` with a
command line of ``--long-bytes``), then idle again; runs are interleaved within
each phase. The goals (issue 9): with 5,000 idle processes, (a) at most 1.1
times its idle time, (b) at most 200 ms more than its idle time. ``scan()``
itself, in this process, is timed the same way.

Both wall time (spawn to exit) and CPU time (user and system, from wait4) are
shown, and judged: on a shared machine the wall time of the busy phase also
carries what the idle processes cost everyone else (anything else that reads
the process table), which the CPU time leaves out.

The idle processes are started by one helper (posix_spawn) in a session of its
own, and ended by it, each by its pid, when this script closes the helper's
stdin: at the end, on Ctrl-C, on SIGTERM, or when this script dies. Any the
helper leaves is ended here by pid and start time. ``--smoke`` (200 processes,
3 runs) finishes in seconds, for CI.

``--baseline DIR`` times another guardian source tree beside this one, on the
same target with state folders of its own (for a change's cost, side by side):

    git worktree add /tmp/before <commit> && .venv/bin/python bench/busy_host.py \
        --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from guardian import proc  # noqa: E402 - the tree this script lives in, not an installed one
from guardian.config import load  # noqa: E402
from guardian.discovery import Found, Matcher, inspect, scan  # noqa: E402

# As on a host: bytecode cached (see check_speed.py).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PIDFILE_GOAL = 1.10  # busy / idle, found by its pidfile
SCAN_GOAL_MS = 200.0  # busy - idle, found by the scan

# The helper: spawns the idle processes, says their pids, waits for its stdin to close,
# then ends each by its pid (its own unreaped children: no pid can have been reused).
HELPER = """
import os, signal, sys
sleep, n, every, size = sys.argv[1], *map(int, sys.argv[2:5])
pids = []
try:
    for i in range(n):
        argv = ["sleep", "3600"] + (["0"] * (size // 2) if every and i % every == 0 else [])
        pids.append(os.posix_spawn(sleep, argv, {}))
    print(*pids, flush=True)
    sys.stdin.read()
finally:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        os.waitpid(pid, 0)
"""


class Case(NamedTuple):
    name: str
    argv: list[str]
    env: dict[str, str]
    state_dir: Path
    goal: str  # "pidfile" or "scan": the goal it is held to, and the path it must take
    cwd: Path

    def prepare(self) -> None:
        """Untimed, before each run: a run that must scan remembers nothing."""
        if self.goal == "scan":
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def verify(self) -> None:
        """The run just timed took the path it is named for (else its times mean nothing)."""
        lines = (self.state_dir / "audit.jsonl").read_text().splitlines()
        record = json.loads(lines[-1])
        want = "pidfile names pid" if self.goal == "pidfile" else "matches the command line"
        if want not in str(record.get("reason", "")):
            raise SystemExit(f"{self.name}: expected {want!r} in its audit record: {record}")


def measure(case: Case) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user and system) of one run of ``case``, which must
    succeed."""
    began = time.perf_counter()
    # Run from the temporary folder: `python -m` puts the working folder first on
    # sys.path, before PYTHONPATH, so from a checkout it would import that tree.
    child = subprocess.Popen(case.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**ENV, **case.env}, cwd=case.cwd)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    assert child.stderr is not None
    err = child.stderr.read()
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{case.argv} failed ({child.returncode}): {err.decode()}")
    return seconds, usage.ru_utime + usage.ru_stime


def room_for(n: int) -> None:
    """Fail early, with the limit named, if the host cannot hold ``n`` more processes."""
    running = sum(1 for e in os.listdir("/proc") if e.isdigit())
    limits = {
        "/proc/sys/kernel/pid_max": int(Path("/proc/sys/kernel/pid_max").read_text()),
        "/proc/sys/kernel/threads-max": int(Path("/proc/sys/kernel/threads-max").read_text()),
    }
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:  # root is not held to it
        limits["ulimit -u"] = soft
    cgroup = Path("/proc/self/cgroup").read_text().splitlines()
    unified = [line.split("::", 1)[1] for line in cgroup if line.startswith("0::")]
    if unified:
        pids_max = Path("/sys/fs/cgroup") / unified[0].lstrip("/") / "pids.max"
        with contextlib.suppress(OSError, ValueError):
            limits[str(pids_max)] = int(pids_max.read_text())  # "max": no limit
    for name, limit in limits.items():
        if running + n + 200 > limit:
            raise SystemExit(f"{n} more processes beside {running} would pass {name} ({limit})")
    # About 200 KiB each (page tables, stacks, kernel structures): 1 GiB for 5,000.
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(meminfo["MemAvailable"].split()[0])
    if n * 256 > available / 2:
        raise SystemExit(f"{n} more processes need about {n // 4} MiB, half of what is free")


@contextlib.contextmanager
def idle_processes(n: int, every: int, size: int) -> Iterator[list[int]]:
    """``n`` idle processes for the length of the block; their pids."""
    room_for(n)
    sleep = shutil.which("sleep")
    if sleep is None:
        raise SystemExit("needs sleep(1)")
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, sleep, str(n), str(every), str(size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert helper.stdin is not None
    assert helper.stdout is not None
    started: dict[int, int] = {}
    try:
        line = helper.stdout.readline()
        if not line:
            raise SystemExit(f"the helper could not start {n} processes (see above)")
        for pid in map(int, line.split()):
            st = proc.stat(pid)
            if st is not None:
                started[pid] = st.start_ticks
        yield list(started)
    finally:
        # Both ends closed, so that it cannot block writing (a Ctrl-C while it starts
        # them): it ends every one by its pid, then exits.
        helper.stdout.close()
        helper.stdin.close()
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()  # the helper, by its pid (a Popen of ours)
            helper.wait()
        for pid, ticks in started.items():  # any it left: by pid, and only if still that one
            proc.signal_if_same(pid, ticks, signal.SIGKILL)


def cases(tmp: Path, baseline: Path | None) -> list[Case]:
    """The cases to time: this tree's (and the baseline's), by pidfile and by scan."""
    sock, conf = tmp / "s.sock", tmp / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={sock}\n[supervisord]\nlogfile={tmp}/sd.log\n"
        f"pidfile={tmp}/sd.pid\nuser=root\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n"
    )
    target = f'[targets.sd]\ncommand = ["{BIN / "supervisord"}", "-c", "{conf}"]\n'
    trees = {"": ROOT} if baseline is None else {"": ROOT, "baseline: ": baseline.resolve()}
    found: list[Case] = []
    for label, tree in trees.items():
        for goal in ("pidfile", "scan"):
            name = f"{goal}{'-baseline' if label else ''}"
            # The scan's: the same supervisord, named by a pidfile that is never there.
            pidfile = tmp / ("sd.pid" if goal == "pidfile" else "missing.pid")
            config = tmp / f"{name}.toml"
            config.write_text(f'[guardian]\nstate_dir = "{tmp}/state-{name}"\n{target}'
                              f'daemonizes = true\npidfile = "{pidfile}"\n')  # fmt: skip
            argv = [sys.executable, "-m", "guardian", "check", "--config", str(config)]
            found.append(Case(f"{label}check, found by {goal}", argv, {"PYTHONPATH": str(tree)},
                              tmp / f"state-{name}", goal, tmp))  # fmt: skip
    return found


Times = dict[str, list[tuple[float, float]]]  # case -> (wall, CPU) seconds of each run


def phase(cases: list[Case], runs: int, matcher: Matcher, times: Times) -> None:
    """``runs`` rounds of every case (and one in-process ``scan()``), interleaved."""
    for case in cases:  # warm the page cache and .pyc files
        case.prepare()
        measure(case)
        case.verify()
    for _ in range(runs):
        for case in cases:
            case.prepare()
            times[case.name].append(measure(case))
        wall, cpu = time.perf_counter(), time.process_time()
        scan(matcher)
        times[SCAN].append((time.perf_counter() - wall, time.process_time() - cpu))
    for case in cases:
        case.verify()


SCAN = "scan() in-process"


def verdict(goal: str, idle: float, busy: float) -> tuple[str, bool]:
    if goal == "pidfile":
        met = busy / idle <= PIDFILE_GOAL
        return f"{busy / idle:.2f}x {'met' if met else 'MISSED'}", met
    if goal == "scan":
        met = (busy - idle) * 1000 <= SCAN_GOAL_MS
        return f"{(busy - idle) * 1000:+.0f} ms {'met' if met else 'MISSED'}", met
    return f"{busy / idle:.2f}x, {(busy - idle) * 1000:+.1f} ms", True


def end_supervisord(tmp: Path, matcher: Matcher) -> None:
    """The supervisord this script started (its pidfile is in ``tmp``), by its pid."""
    try:
        pid = int((tmp / "sd.pid").read_text())
    except (OSError, ValueError):
        return
    found = inspect(pid, matcher)  # by guardian's own rules: that very supervisord
    if isinstance(found, Found):
        proc.signal_if_same(pid, found.start_ticks, signal.SIGTERM)
        proc.wait_gone(pid, found.start_ticks, 10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--procs", type=int, default=5000, help="idle processes (default 5000)")
    parser.add_argument("--runs", type=int, default=10, help="runs per host state (default 10)")
    parser.add_argument(
        "--long-every",
        type=int,
        default=20,
        help="one idle process in this many has a long command line (0: none)",
    )
    parser.add_argument(
        "--long-bytes",
        type=int,
        default=16384,
        help="how long that command line is (default 16384)",
    )
    parser.add_argument("--baseline", type=Path, help="another guardian source tree to time")
    parser.add_argument("--smoke", action="store_true", help="200 processes, 3 runs (for CI)")
    parser.add_argument("--enforce", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args()
    if args.smoke:
        args.procs, args.runs = 200, 3
    # SIGTERM (and SIGHUP) end this script as Ctrl-C does: through every finally below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)

    if not (BIN / "supervisord").exists():
        raise SystemExit(f"needs supervisord in {BIN} (pip install supervisor)")
    tmp = Path(tempfile.mkdtemp(prefix="guardian-busy-"))
    all_cases = cases(tmp, args.baseline)
    matcher = Matcher.for_target(load(Path(all_cases[1].argv[-1])).targets[0])
    try:
        measure(all_cases[0])  # starts supervisord: the target every run then finds healthy
        names = [c.name for c in all_cases] + [SCAN]
        idle: Times = {name: [] for name in names}
        busy: Times = {name: [] for name in names}
        # Idle, busy, idle again: a machine that slows down or speeds up meanwhile
        # weighs on both sides.
        phase(all_cases, (args.runs + 1) // 2, matcher, idle)
        began = time.monotonic()
        with idle_processes(args.procs, args.long_every, args.long_bytes):
            spawned = time.monotonic() - began
            phase(all_cases, args.runs, matcher, busy)
        phase(all_cases, args.runs // 2, matcher, idle)
    finally:
        end_supervisord(tmp, matcher)
        shutil.rmtree(tmp, ignore_errors=True)

    goals = {c.name: c.goal for c in all_cases}
    rows = [
        f"| | idle host: wall (CPU) | {args.procs} idle processes: wall (CPU) "
        "| goal, by wall time | goal, by CPU time |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    missed = False
    for name in names:
        a_wall, a_cpu = (statistics.median(x) for x in zip(*idle[name], strict=True))
        b_wall, b_cpu = (statistics.median(x) for x in zip(*busy[name], strict=True))
        by_wall, met_wall = verdict(goals.get(name, ""), a_wall, b_wall)
        by_cpu, met_cpu = verdict(goals.get(name, ""), a_cpu, b_cpu)
        missed |= not (met_wall and met_cpu) and not name.startswith("baseline")
        rows.append(f"| {name} | {a_wall * 1000:.1f} ({a_cpu * 1000:.1f}) ms | {b_wall * 1000:.1f} "
                    f"({b_cpu * 1000:.1f}) ms | {by_wall} | {by_cpu} |")  # fmt: skip
    print("\n".join(rows))
    long = f"1 in {args.long_every} with a {args.long_bytes}-byte command line" \
        if args.long_every else "no long command lines"  # fmt: skip
    load1 = os.getloadavg()[0]
    print(f"\nmedians of {args.runs} runs each, idle (half before, half after) and busy, "
          f"interleaved; {args.procs} `sleep` processes as root ({long}; started in "
          f"{spawned:.1f}s); goals: found by pidfile <= {PIDFILE_GOAL:.2f}x idle, found by "
          f"scan <= idle +{SCAN_GOAL_MS:.0f} ms; {os.cpu_count()} cores, load {load1:.1f}, "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    return 1 if missed and args.enforce else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, once everything it started has ended
        raise SystemExit(130) from None

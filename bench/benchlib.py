"""What the watch-mode benchmarks share: configs in a temporary folder, /proc readers,
percentiles, and ending the targets a benchmark started (by pid, after checking it).

Not a benchmark itself; the scripts beside it import it (``python bench/x.py`` puts
bench/ first on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUARDIAN = str(BIN / "guardian")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# As on a host: bytecode cached (see check_speed.py). A shell that sets
# PYTHONDONTWRITEBYTECODE would otherwise time the compiler, not guardian.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def exit_on_sigterm() -> None:
    """SIGTERM ends a benchmark as Ctrl-C does: through its finally blocks, which end
    whatever it started."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def machine() -> str:
    """nproc, kernel, python, and how busy the host is now: what every result is printed
    with."""
    python = sys.version.split()[0]
    return f"{os.cpu_count()} cores, Linux {os.uname().release}, Python {python}; {host()}"


def host() -> str:
    """The load average and the number of processes: on a shared two-core host, other work
    skews every number, and every restart walks the whole process table (three times)."""
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return f"load average {load}, {processes()} processes"


def processes() -> int:
    """How many processes the host runs now."""
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def sleep_argv(n: int, tag: str) -> list[str]:
    """A target: ``/bin/sleep`` for ``n`` (plus a fraction unique to this run: GNU sleep
    takes one), so no other process on the host has its exact command line."""
    return ["/bin/sleep", f"{n}.{tag}"]


def run_tag() -> str:
    return f"{os.getpid():07d}"


def toml_list(argv: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{a}"' for a in argv) + "]"


def write_config(
    folder: Path,
    targets: dict[str, Sequence[str]],
    *,
    extra: str = "",
    timeout: str = "50s",
) -> Path:
    """A guardian config for ``targets`` (name -> argv), its state in ``folder``.

    ``extra`` is appended to every target's table (TOML lines; it may open subtables,
    written with ``{name}`` for the target's name)."""
    lines = [f'[guardian]\nstate_dir = "{folder}/state"\ntimeout = "{timeout}"\n']
    for name, argv in targets.items():
        lines.append(f"[targets.{name}]\ncommand = {toml_list(argv)}\n")
        if extra:
            lines.append(extra.replace("{name}", name) + "\n")
    path = folder / "guardian.toml"
    path.write_text("\n".join(lines))
    return path


def pidfile(folder: Path, name: str) -> Path:
    """Where guardian writes target ``name``'s pid (its default: state_dir/pids)."""
    return folder / "state" / "pids" / f"{name}.pid"


def runs(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` runs exactly ``argv`` now (a bounded read: cheap for any process)."""
    want = raw(argv)
    return raw_cmdline(pid, len(want) + 1) == want


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def ppid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(its own utime + stime, its reaped children's cutime + cstime), in seconds."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    # stat fields 14-17 (utime, stime, cutime, cstime) are indices 11-14 here.
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    children = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return own, children


def cpu_ns(pid: int) -> int | None:
    """Its own time on a CPU in nanoseconds (/proc/PID/schedstat's first field): utime +
    stime without their 10 ms ticks, children excluded."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def status_kib(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/PID/status given in kB (VmRSS, VmHWM...)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def raw(argv: Sequence[str]) -> bytes:
    """A command line as /proc/PID/cmdline has it."""
    return b"".join(a.encode() + b"\0" for a in argv)


def raw_cmdline(pid: int, most: int) -> bytes | None:
    """The first ``most`` bytes of its /proc/PID/cmdline (others' can be megabytes long:
    bench/busy_host.py starts such processes), or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb", buffering=0) as f:
            return f.read(most)
    except OSError:
        return None


def pids_running(argv: Sequence[str]) -> list[int]:
    """Every live process whose command line is exactly ``argv`` (a full /proc scan)."""
    return scan([argv]).get(raw(argv), [])


def scan(argvs: Iterable[Sequence[str]]) -> dict[bytes, list[int]]:
    """The live processes running exactly one of ``argvs``, by command line (one scan)."""
    wanted = {raw(a) for a in argvs}
    most = max((len(w) for w in wanted), default=0) + 1
    found: dict[bytes, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            got = raw_cmdline(int(name), most)
            if got in wanted:
                found.setdefault(got, []).append(int(name))
    return found


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def end_targets(folder: Path, targets: dict[str, Sequence[str]]) -> int:
    """End each target this benchmark had guardian start: the pid in its pidfile, if that
    process runs exactly the command expected; then any other process with one of their
    command lines (unique to this run: see sleep_argv). How many were ended."""
    pids = set()
    for name, argv in targets.items():
        pid = read_pid(pidfile(folder, name))
        if pid is not None and runs(pid, argv):
            pids.add((pid, raw(argv)))
    for line, found in scan(targets.values()).items():
        pids.update((pid, line) for pid in found)
    ended = 0
    for pid, line in pids:
        if raw_cmdline(pid, len(line) + 1) == line:  # still it, just before the signal
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                ended += 1
    return ended


def run(argv: Sequence[str]) -> tuple[float, int, str]:
    """Run ``argv`` (a guardian) to its end: wall seconds, exit code, stderr. Interrupted
    (Ctrl-C, SIGTERM), it gets SIGTERM rather than subprocess.run's SIGKILL: a guardian
    passes SIGTERM on to its workers, which end what they started; a SIGKILL would leave
    them running, and starting targets, after the benchmark ended."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate()
    except BaseException:
        stop_child(proc)
        raise
    return time.perf_counter() - began, proc.returncode, err.decode(errors="replace")


def stop_child(proc: subprocess.Popen[bytes], wait: float = 15.0) -> None:
    """End a process this benchmark started itself (SIGTERM, then SIGKILL), by its pid."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def finish(folder: Path, keep: bool) -> None:
    """Say how busy the host was at the end; remove the temporary folder unless ``keep``."""
    print(f"at the end: {host()}")
    if keep:
        print(f"kept {folder} (configs, audit log, state)")
    else:
        shutil.rmtree(folder, ignore_errors=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank): p50, p90, p99 of a few hundred samples."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds have passed."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def which(name: str, also: Iterable[Path] = ()) -> str | None:
    """``name`` on PATH, else in one of ``also``."""
    found = shutil.which(name)
    if found:
        return found
    for folder in also:
        candidate = folder / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class NewProcess:
    """Finds a process with an exact command line that was not there when it was made.

    Cheap enough to ask every millisecond without slowing what it watches (on two cores,
    a listdir of /proc every millisecond doubled guardian's restart time): the last
    field of /proc/loadavg is the pid most recently handed out, so only the pids created
    since are read; they are read again at every look, since one seen between its fork
    and its exec still shows its parent's command line."""

    def __init__(self, argv: Sequence[str], parent: int | None = None) -> None:
        self.argv = tuple(argv)
        self.parent = parent
        self.last = last_pid()
        self.pending: set[int] = set()

    def look(self) -> int | None:
        last = last_pid()
        if last != self.last:
            if last > self.last:
                self.pending.update(range(self.last + 1, last + 1))
            else:  # the pids wrapped around: every one is a candidate once
                self.pending.update(int(n) for n in os.listdir("/proc") if n.isdigit())
            self.last = last
        for pid in sorted(self.pending):
            if runs(pid, self.argv):
                if self.parent is None or ppid(pid) == self.parent:
                    return pid
            elif not os.path.exists(f"/proc/{pid}"):
                self.pending.discard(pid)  # never was, or gone
        return None


def last_pid() -> int:
    """The pid most recently handed out on this host (/proc/loadavg's last field)."""
    with open("/proc/loadavg", "rb") as f:
        return int(f.read().split()[-1])


class AuditTail:
    """The records appended to an audit log since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def read(self) -> list[dict[str, object]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records


class Copies(threading.Thread):
    """Counts the live processes with an exact command line every ``period`` seconds, in
    the background; any moment with more than one is a failure, kept with its pids.

    As cheap as NewProcess: the pids seen at the start (one full scan), then only those
    handed out since, as /proc/loadavg tells."""

    def __init__(self, argv: Sequence[str], period: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.argv = tuple(argv)
        self.period = period
        self.last = last_pid()
        self.live: set[int] = set(pids_running(argv))
        self.pending: set[int] = set()
        self.looks = 0
        self.most = len(self.live)
        self.doubles: list[tuple[float, tuple[int, ...]]] = []  # (monotonic, pids)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            self.look()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def look(self) -> None:
        last = last_pid()
        if last != self.last:
            if last > self.last:
                self.pending.update(range(self.last + 1, last + 1))
            else:
                self.pending.update(int(n) for n in os.listdir("/proc") if n.isdigit())
            self.last = last
        live = set()
        for pid in self.pending | self.live:
            if runs(pid, self.argv):
                live.add(pid)
            elif not os.path.exists(f"/proc/{pid}"):
                self.pending.discard(pid)
        self.live = live
        self.looks += 1
        self.most = max(self.most, len(live))
        if len(live) > 1:
            self.doubles.append((time.monotonic(), tuple(sorted(live))))


class Idle:
    """``n`` idle processes (``/bin/sleep``), as a busy host has: every restart walks the
    whole process table. Our own children, ended and reaped by pid."""

    def __init__(self, n: int, tag: str) -> None:
        self.argv = ["/bin/sleep", f"9999999.{tag}"]
        self.pids: list[int] = []
        self.n = n

    def __enter__(self) -> Idle:
        env = {"PATH": "/usr/bin:/bin"}
        try:
            for _ in range(self.n):
                self.pids.append(os.posix_spawn(self.argv[0], self.argv, env))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:  # unreaped children: the pids are still ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pids = []

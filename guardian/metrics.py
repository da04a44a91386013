"""The metrics file: what node_exporter's textfile collector serves to Prometheus.

``metrics_file`` under ``[guardian]``: rewritten after every run (a check,
each action of a watcher, a stop or start by hand), atomically, mode 0644.
Imported only when it is set: a healthy check without it pays nothing.

Every target's gauges come from files, not from the run that writes them
(its state file, its hold file, its watch lock, /proc), so every writer (a
cron run, a watcher, ``guardian stop``, ``check --target one``) writes the
same truth for every target in the config. The counters come from the state
file too, so they do not reset between runs (a state file that is rebuilt
resets them: ``rate()`` copes with that).

The text format is written here rather than with prometheus_client, whose
import alone costs some 45 ms and 11 MiB every minute, against 14 ms and 1 MiB
for this module (``bench/metrics_cost.py``: a whole process writing the file
takes 76 ms with it, 39 ms with this); the tests read the file back with
prometheus_client's own parser.
https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from guardian import __version__, holds, proc, state
from guardian.config import Config, Target
from guardian.files import NotRegular, atomic_write, open_regular
from guardian.locking import lock_path

_WATCH_MAX = 4096  # a watch lock file's line is some 100 bytes


class RunFacts(NamedTuple):
    """What the writing run knows of itself."""

    finished: float  # when its check (or its last action) finished: wall clock, epoch seconds
    duration: float  # how long the check took, in seconds
    exit_code: int | None = None  # the code the run exits with, if known yet
    # This process watches now (its watch locks held): a watcher that has let go of them
    # is still alive, and named in their files, while it writes its last metrics.
    watching: bool = False


# name, type, help: every series written, documented once.
_SERIES = (
    ("guardian_build_info", "gauge", "The guardian that wrote this file (always 1)."),
    ("guardian_last_run_timestamp_seconds", "gauge",
     "When the last run of guardian finished its check (or a watcher its last action)."),
    ("guardian_run_duration_seconds", "gauge", "How long that check took."),
    ("guardian_last_run_exit_code", "gauge",
     "That run's exit code (0 all running, 1 a target not running, 2 config, 3 internal, "
     "124 timeout)."),
    ("guardian_watch_active", "gauge", "1 while a guardian watches at least one target."),
    ("guardian_target_up", "gauge", "1 if the target's process is running."),
    ("guardian_target_healthy", "gauge", "1 if the target is running and no probe is failing."),
    ("guardian_target_held", "gauge", "1 if the target is held down (guardian stop)."),
    ("guardian_target_held_seconds", "gauge",
     "How long the target has been held, by this host's clock (only while it is held)."),
    ("guardian_target_gave_up", "gauge",
     "1 while guardian has given up on the target (crash loop; until its window ends)."),
    ("guardian_target_watched", "gauge", "1 while a guardian watches the target (check --watch)."),
    ("guardian_target_starts_total", "counter",
     "Starts that became ready, by cause: died (found not running), unhealthy (probes "
     "failed), by_hand (guardian start/restart)."),
    ("guardian_target_start_failures_total", "counter",
     "Starts that failed (never ran, or never became ready)."),
    ("guardian_target_last_start_timestamp_seconds", "gauge",
     "When the target last started and became ready."),
)  # fmt: skip
CAUSES = ("died", "unhealthy", "by_hand")


def _escape(value: str) -> str:
    """A label value as the exposition format quotes it: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


class TargetFacts(NamedTuple):
    up: bool
    healthy: bool
    held: bool
    held_for: float | None  # how long it has been held (this host's clock), while held
    gave_up: bool
    watched: bool
    starts: dict[str, int]
    failures: int
    last_start: float | None


def _watched(lock_dir: Path, name: str, me: int, *, watching: bool) -> bool:
    """Does a live guardian hold ``name``'s watch lock? (What ``status.read_watcher`` tells,
    without importing status, which costs 90 ms: its file's pid and start ticks, alive.)
    Never takes the lock (a watcher waiting for it must not miss its turn); a file others
    could have written is not believed."""
    path = lock_path(lock_dir, f"{name}.watch")
    try:
        fd = open_regular(path)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != me or st.st_mode & 0o022:
            return False
        data = os.read(fd, _WATCH_MAX + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        raw = json.loads(data) if len(data) <= _WATCH_MAX else None
        pid, ticks = raw["pid"], raw["start_ticks"]  # type: ignore[index]
    except (ValueError, KeyError, TypeError, RecursionError):
        return False
    if type(pid) is not int or type(ticks) is not int or pid <= 0:
        return False
    if pid == os.getpid():
        # Let go (its last write): the next watcher may hold it already, before it has
        # named itself in the file. (It writes the metrics itself then too, but this write
        # may land after that one.)
        return watching or _locked_by_another(st)
    return proc.is_alive(pid, ticks)


def _locked_by_another(st: os.stat_result) -> bool:
    """Does another process hold a flock on this file? /proc/locks, read-only: trying the
    lock would take it from the watcher waiting for it, for a moment."""
    me, where = os.getpid(), f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", "rb") as f:
            lines = f.read(1 << 20).decode("ascii", "replace").splitlines()
    except OSError:
        return False
    for line in lines:
        words = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF" ("->" marks one that waits)
        if len(words) >= 6 and words[1] == "FLOCK" and words[5] == where and words[4] != str(me):
            return True
    return False


def target_facts(
    config: Config, target: Target, *, now: float, wall: float, watching: bool = False
) -> TargetFacts:
    """One target's gauges and counters, from its files and /proc."""
    settings = config.settings
    st = state.Store(state.path_for(settings.state_dir, target.name)).load()
    c = st.current
    up = (
        c is not None
        and c.pid > 0
        and c.ready
        and st.dead_since is None
        and proc.is_alive(c.pid, c.start_ticks)
    )
    try:
        hold = holds.read(settings.state_dir, target.name)
    except holds.HoldError:
        hold = None  # not believed: it holds nothing down (a check starts the target)
    gave_up = st.gave_up_at is not None and now < st.gave_up_at + target.restart.window
    holding = hold is not None and not hold.expired(wall)
    return TargetFacts(
        up=up,
        healthy=up and st.probe_failures == 0,
        held=holding,
        # Both ends on this host's clock, so Prometheus's own (skewed, say) never enters it;
        # a hold set "in the future" (the clock stepped back since) is held for 0 so far.
        held_for=max(0.0, wall - hold.at) if hold is not None and holding else None,
        gave_up=gave_up,
        watched=_watched(settings.lock_dir, target.name, os.geteuid(), watching=watching),
        starts={
            "died": st.starts_died,
            "unhealthy": st.starts_unhealthy,
            "by_hand": st.starts_by_hand,
        },
        failures=st.start_failures,
        last_start=st.last_start_wall,
    )


def render(config: Config, run: RunFacts) -> str:
    """The whole file, every target in the config."""
    now, wall = state.now(), time.time()
    facts = [
        (t.name, target_facts(config, t, now=now, wall=wall, watching=run.watching))
        for t in config.targets
    ]
    samples: dict[str, list[tuple[str, float]]] = {name: [] for name, _, _ in _SERIES}

    def add(series: str, labels: Iterable[tuple[str, str]], value: float) -> None:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        samples[series].append((f"{{{text}}}" if text else "", value))

    add("guardian_build_info", [("version", __version__)], 1)
    add("guardian_last_run_timestamp_seconds", (), round(run.finished, 3))
    add("guardian_run_duration_seconds", (), round(run.duration, 6))
    if run.exit_code is not None:
        add("guardian_last_run_exit_code", (), run.exit_code)
    add("guardian_watch_active", (), int(any(f.watched for _, f in facts)))
    for name, f in facts:
        t = [("target", name)]
        add("guardian_target_up", t, f.up)
        add("guardian_target_healthy", t, f.healthy)
        add("guardian_target_held", t, f.held)
        if f.held_for is not None:  # a day's hold is alerted on from this, exactly
            add("guardian_target_held_seconds", t, round(f.held_for, 3))
        add("guardian_target_gave_up", t, f.gave_up)
        add("guardian_target_watched", t, f.watched)
        for cause in CAUSES:
            add("guardian_target_starts_total", [*t, ("cause", cause)], f.starts[cause])
        add("guardian_target_start_failures_total", t, f.failures)
        if f.last_start is not None:  # never started by guardian: no time (not 1970)
            add("guardian_target_last_start_timestamp_seconds", t, round(f.last_start, 3))
    lines: list[str] = []
    for series, kind, text in _SERIES:
        lines.append(f"# HELP {series} {text}")
        lines.append(f"# TYPE {series} {kind}")
        lines.extend(f"{series}{labels} {_number(value)}" for labels, value in samples[series])
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Replace the metrics file with ``text``: OSError (its strerror fit to follow the path)
    if it cannot be. The folder is node_exporter's: it is never made, and nothing but a
    regular file at the path is ever replaced (a symlink, a FIFO or a folder there is
    someone else's, and left as it is)."""
    folder = path.parent
    try:
        if not stat.S_ISDIR(os.stat(folder).st_mode):
            raise NotADirectoryError(0, f"is in {folder}, which is not a folder")
    except FileNotFoundError:
        raise FileNotFoundError(0, f"is in {folder}, which does not exist") from None
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(mode):
            raise NotRegular(path, mode)
    # Rewritten every minute: a power cut costs one minute's numbers, not an fsync a run.
    atomic_write(path, text.encode(), mode=0o644, durable=False)


def update(config: Config, run: RunFacts) -> str | None:
    """Render and write the metrics file; what went wrong (for a warning record), if so."""
    path = config.settings.metrics_file
    if path is None:
        return None
    try:
        text = render(config, run)
    except Exception as e:  # a bug here must not make a run that kept its targets fail
        return f"internal error while rendering metrics file {path}: {type(e).__name__}: {e}"
    try:
        write(path, text)
    except OSError as e:
        return f"cannot write metrics file {path}: {e.strerror or e}"
    return None

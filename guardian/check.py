"""One guard cycle: find, decide, and (under the target's lock) act.

A healthy target costs a pidfile read and two small /proc reads: no lock,
no process-table scan, no filelock or psutil import. Anything else is
decided again under the lock, so that of several overlapping runs exactly
one acts and the others see what it did.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from guardian import locking
from guardian.audit import AuditRecord
from guardian.config import Config, Target
from guardian.deadline import enforce
from guardian.discovery import Found, Missing, Unsure, discover
from guardian.errors import LaunchError, RunTimeout

if TYPE_CHECKING:  # launch (and subprocess) is imported only by a run that acts
    from guardian.launch import Launch

# Actions after which the target is running (or another guardian is seeing to it).
RUNNING = frozenset({"ok", "adopted", "started", "skipped"})


@dataclass
class Run:
    """What one run has under way, for the time-out paths to clean up."""

    dry_run: bool
    launches: list[Launch] = field(default_factory=list)
    doing: str = "starting"

    def kill_now(self) -> None:
        for launch in self.launches:
            launch.kill_now()

    def end_all(self) -> list[int]:
        ended = []
        for launch in self.launches:
            launch.end(wait=1.0)
            ended.append(launch.proc.pid)
        self.launches.clear()
        return ended


class _Recorder:
    """Builds a target's record, timing it from when the target's check began."""

    def __init__(self, target: Target, dry_run: bool) -> None:
        self.target = target
        self.dry_run = dry_run
        self.began = time.monotonic()

    def __call__(self, action: str, reason: str, **fields: object) -> AuditRecord:
        ms = int((time.monotonic() - self.began) * 1000)
        return AuditRecord(
            target=self.target.name,
            action=action,
            reason=reason,
            duration_ms=ms,
            dry_run=self.dry_run,
            **fields,  # type: ignore[arg-type]  # pid, old_pid, error, output_tail
        )


def check_target(target: Target, config: Config, run: Run) -> AuditRecord:
    record = _Recorder(target, run.dry_run)
    run.doing = "looking for it"
    found = discover(target)
    if isinstance(found, Found) and found.via == "pidfile":
        return record("ok", f"running: {found.evidence}", pid=found.pid)
    if run.dry_run:
        return _dry_run(found, record)
    run.doing = "taking its lock"
    try:
        with locking.hold(config.settings.lock_dir, target.name):
            return _act(target, run, record)
    except locking.Busy as busy:
        old_pid = None if isinstance(found, Found) else found.old_pid
        return record("skipped", f"another guardian is acting on it ({busy})", old_pid=old_pid)


def _dry_run(found: Found | Missing | Unsure, record: _Recorder) -> AuditRecord:
    if isinstance(found, Found):
        return record("ok", f"would adopt: {found.evidence}", pid=found.pid)
    if isinstance(found, Unsure):
        return record("error", found.reason, old_pid=found.old_pid)
    return record("would_start", found.reason, old_pid=found.old_pid)


def _act(target: Target, run: Run, record: _Recorder) -> AuditRecord:
    """Under the lock: look again (another run may have acted), then adopt or start."""
    from guardian.launch import start, tail, write_pidfile

    found = discover(target)
    if isinstance(found, Found):
        if found.via == "pidfile":
            return record(
                "ok", f"running (found after taking the lock): {found.evidence}", pid=found.pid
            )
        reason = found.evidence
        if not target.daemonizes:
            try:
                write_pidfile(target.pidfile, found.pid)
            except OSError as e:
                return record(
                    "adopted",
                    f"{reason}; pidfile not rewritten",
                    pid=found.pid,
                    error=f"cannot write pidfile {target.pidfile}: {e.strerror or e}",
                )
            reason += f"; pidfile {target.pidfile} rewritten"
        return record("adopted", reason, pid=found.pid)
    if isinstance(found, Unsure):
        return record("error", found.reason, old_pid=found.old_pid)

    run.doing = "starting it"
    try:
        launch = start(target)
    except LaunchError as e:
        return record("start_failed", found.reason, old_pid=found.old_pid, error=str(e))
    run.launches.append(launch)
    try:
        if not target.daemonizes:
            try:
                write_pidfile(target.pidfile, launch.proc.pid)
            except OSError as e:
                raise LaunchError(
                    f"cannot write pidfile {target.pidfile}: {e.strerror or e}"
                ) from None
        run.doing = f"waiting for pid {launch.proc.pid} to become ready"
        ready = launch.wait_ready()
    except LaunchError as e:
        run.doing = f"ending pid {launch.proc.pid}, which did not become ready"
        launch.end()
        run.launches.remove(launch)
        return record(
            "start_failed",
            found.reason,
            pid=launch.proc.pid,
            old_pid=found.old_pid,
            error=str(e),
            output_tail=tuple(tail(target.output)),
        )
    run.launches.remove(launch)
    launch.reap()
    return record(
        "started",
        f"{found.reason}; ready after {ready.seconds:.1f}s",
        pid=ready.found.pid,
        old_pid=found.old_pid,
    )


@dataclass(frozen=True, slots=True)
class RunResult:
    records: tuple[AuditRecord, ...]
    timed_out: bool


def run_check(
    config: Config,
    targets: tuple[Target, ...],
    *,
    dry_run: bool,
    timeout: float,
    emit: Callable[[AuditRecord], None],
) -> RunResult:
    """Check every target in turn, within ``timeout``; ``emit`` each record as it is made."""
    run = Run(dry_run=dry_run)
    records: list[AuditRecord] = []

    def keep(record: AuditRecord) -> None:
        records.append(record)
        emit(record)

    def hard_timeout() -> None:
        run.kill_now()
        sys.stderr.write(
            f"guardian: hard time-out: still {run.doing} {timeout:g}s into the run; "
            "killed what this run started; exiting 124\n"
        )

    with enforce(timeout, hard_timeout):
        remaining = list(targets)
        try:
            while remaining:
                keep(check_target(remaining[0], config, run))
                remaining.pop(0)
        except RunTimeout:
            doing = run.doing
            ended = run.end_all()
            also = (
                f"; ended pid {', '.join(map(str, ended))}, which it had started" if ended else ""
            )
            for i, target in enumerate(remaining):
                reason = (
                    f"guardian's own timeout of {timeout:g}s ran out while {doing}{also}"
                    if i == 0
                    else f"not checked: guardian's own timeout of {timeout:g}s ran out"
                )
                keep(
                    AuditRecord(
                        target=target.name, action="timeout", reason=reason, dry_run=dry_run
                    )
                )
            return RunResult(tuple(records), timed_out=True)
        except BaseException:
            run.end_all()  # an internal error must not leave a half-started target behind
            raise
    return RunResult(tuple(records), timed_out=False)

"""One guard cycle: find, decide, and (under the target's lock) act.

A healthy target costs a pidfile read and a few small /proc reads: no lock,
no process-table scan, no filelock, psutil or subprocess import. Anything
else is decided again under the lock, so that of several overlapping runs
exactly one acts and the others see what it did.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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


class Recorder:
    """One target's record in the making: what is known so far, timed from the start.

    The time-out paths use it to write what the run had learnt when time ran out.
    """

    def __init__(self, target: Target, dry_run: bool) -> None:
        self.target = target
        self.dry_run = dry_run
        self.began = time.monotonic()
        self.pid: int | None = None
        self.old_pid: int | None = None
        self.doing = "looking for it"

    def __call__(self, action: str, reason: str, **fields: object) -> AuditRecord:
        ms = int((time.monotonic() - self.began) * 1000)
        known = {"pid": self.pid, "old_pid": self.old_pid}
        return AuditRecord(
            target=self.target.name,
            action=action,
            reason=reason,
            duration_ms=ms,
            dry_run=self.dry_run,
            **{**known, **fields},  # type: ignore[arg-type]  # pid, old_pid, error, output_tail
        )


@dataclass
class Run:
    """The run's one target in hand and its start under way, for the time-out paths."""

    dry_run: bool
    current: Recorder | None = None
    launch: Launch | None = None

    def end_launch(self, wait: float) -> int | None:
        """End a start that had not become ready; its pid, if there was one."""
        launch, self.launch = self.launch, None
        if launch is None:
            return None
        launch.end(wait=wait)
        return launch.proc.pid


def check_target(target: Target, config: Config, run: Run) -> AuditRecord:
    record = run.current = Recorder(target, run.dry_run)
    found = discover(target)
    if isinstance(found, Found):
        record.pid = found.pid
        if found.via == "pidfile":
            return record("ok", f"running: {found.evidence}")
    else:
        record.old_pid = found.old_pid
    if run.dry_run:
        return _dry_run(found, record)
    record.doing = "taking its lock"
    try:
        with locking.hold(config.settings.lock_dir, target.name):
            return _act(target, run, record)
    except locking.Busy as busy:
        return record("skipped", f"another guardian holds its lock, {busy}, and is seeing to it")


def _dry_run(found: Found | Missing | Unsure, record: Recorder) -> AuditRecord:
    if isinstance(found, Found):
        return record("ok", f"would adopt: {found.evidence}")
    if isinstance(found, Unsure):
        return record("error", found.reason)
    return record("would_start", found.reason)


def _act(target: Target, run: Run, record: Recorder) -> AuditRecord:
    """Under the lock: look again (another run may have acted), then adopt or start."""
    from guardian.launch import start, tail, write_pidfile

    found = discover(target)
    if isinstance(found, Found):
        record.pid = found.pid
        if found.via == "pidfile":
            return record("ok", f"running (found after taking the lock): {found.evidence}")
        return _adopt(target, found, record)
    record.pid, record.old_pid = None, found.old_pid
    if isinstance(found, Unsure):
        return record("error", found.reason)

    record.doing = "starting it"
    try:
        launch = run.launch = start(target)
    except LaunchError as e:
        return record("start_failed", found.reason, error=str(e))
    record.pid = launch.proc.pid
    try:
        if not target.daemonizes:
            try:
                write_pidfile(target.pidfile, launch.proc.pid)
            except OSError as e:
                problem = f"cannot write pidfile {target.pidfile}: {e.strerror or e}"
                raise LaunchError(problem) from None
        record.doing = f"waiting for pid {launch.proc.pid} to become ready"
        ready = launch.wait_ready()
    except LaunchError as e:
        record.doing = f"ending pid {launch.proc.pid}, which did not become ready"
        run.end_launch(wait=2.0)
        return record(
            "start_failed", found.reason, error=str(e), output_tail=tuple(tail(target.output))
        )
    run.launch = None
    launch.reap()
    record.pid = ready.found.pid
    return record("started", f"{found.reason}; ready after {ready.seconds:.1f}s")


def _adopt(target: Target, found: Found, record: Recorder) -> AuditRecord:
    from guardian.launch import write_pidfile

    if target.daemonizes:  # the pidfile is the target's own: not ours to write
        return record("adopted", found.evidence)
    try:
        write_pidfile(target.pidfile, found.pid)
    except OSError as e:
        error = f"cannot write pidfile {target.pidfile}: {e.strerror or e}"
        return record("adopted", f"{found.evidence}; pidfile not rewritten", error=error)
    return record("adopted", f"{found.evidence}; pidfile {target.pidfile} rewritten")


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
        # The main thread is stuck where no signal reaches it: no waiting, no files.
        if run.launch is not None:
            run.launch.kill_now()
        doing = run.current.doing if run.current else "starting"
        sys.stderr.write(
            f"guardian: hard time-out: still {doing} after {timeout:g}s and more; "
            "killed what this run had started; exiting 124\n"
        )

    with enforce(timeout, hard_timeout):
        done = 0
        try:
            for target in targets:
                keep(check_target(target, config, run))
                done += 1
        except RunTimeout:
            record = run.current
            doing = record.doing if record else "starting"
            ended = run.end_launch(wait=1.0)
            also = f"; ended pid {ended}, which it had started" if ended else ""
            why = f"guardian's own timeout of {timeout:g}s ran out"
            for target in targets[done:]:
                if record is not None and record.target is target:
                    keep(record("timeout", f"{why} while {doing}{also}"))
                else:
                    keep(
                        AuditRecord(target.name, "timeout", f"not checked: {why}", dry_run=dry_run)
                    )
            return RunResult(tuple(records), timed_out=True)
        except BaseException:
            run.end_launch(wait=1.0)  # an internal error must not leave a half-start behind
            raise
    return RunResult(tuple(records), timed_out=False)

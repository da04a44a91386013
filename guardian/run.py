"""One run of guardian: its records in the making, its time limit, its signals.

Whatever a run does (``check``, or ``stop``/``restart``/``reset`` by hand) goes
through ``execute``: the jobs in turn, within the run's own timeout, with
SIGTERM and SIGINT turned into an ``interrupted`` record rather than a death.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from guardian import state
from guardian.audit import AuditRecord
from guardian.config import Config, Target
from guardian.deadline import Deadline, enforce
from guardian.errors import RunTimeout

if TYPE_CHECKING:  # launch (and subprocess) is imported only by a run that acts
    from guardian.launch import Launch

# Actions after which the target is running (or another guardian is seeing to it).
RUNNING = frozenset({"ok", "adopted", "started", "skipped", "restarted_unhealthy", "restarted"})
# Lines about the run rather than a target's outcome: no bearing on the exit code.
ASIDES = frozenset({"warning", "reset", "stopped"})


class Interrupted(BaseException):  # a signal from outside, like KeyboardInterrupt
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


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
            **{**known, **fields},  # type: ignore[arg-type]  # the record's optional fields
        )


class Run:
    """One run: its settings, its target in hand and its start under way."""

    def __init__(self, config: Config, dry_run: bool, emit: Callable[[AuditRecord], None]) -> None:
        self.config = config
        self.dry_run = dry_run
        self.emit = emit
        self.deadline: Deadline | None = None
        self.current: Recorder | None = None
        self.launch: Launch | None = None
        self.trouble = False  # something could not be written: the exit code must say so

    def end_launch(self, wait: float) -> int | None:
        """End a start that had not become ready; its pid, if there was one."""
        launch, self.launch = self.launch, None
        if launch is None:
            return None
        launch.end(wait=wait)
        return launch.proc.pid

    def warn(self, target: Target, text: str) -> None:
        self.trouble = True
        self.emit(AuditRecord(target.name, "warning", text, dry_run=self.dry_run))

    def remaining(self) -> float:
        return self.deadline.remaining() if self.deadline else 30.0

    def store(self, target: Target) -> state.Store:
        return state.Store(self.config.settings.state_dir / "state" / f"{target.name}.json")

    def load(self, target: Target, store: state.Store) -> state.State:
        loaded = store.load()
        for text in store.warnings:
            self.warn(target, text)
        store.warnings.clear()
        return loaded

    def save(self, target: Target, store: state.Store, new: state.State) -> None:
        """Save the state; a failure is reported and the run goes on (the target comes first)."""
        if self.dry_run:
            return
        try:
            store.save(new)
        except OSError as e:
            self.warn(target, f"cannot write state file {store.path}: {e.strerror or e}")


class RunResult(NamedTuple):
    records: tuple[AuditRecord, ...]
    timed_out: bool
    interrupted: int | None = None  # the signal that interrupted the run
    trouble: bool = False


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


Job = tuple[Target, Callable[[Run], AuditRecord]]


def execute(
    config: Config,
    jobs: list[Job],
    *,
    dry_run: bool,
    timeout: float,
    emit: Callable[[AuditRecord], None],
) -> RunResult:
    """Do ``jobs`` in turn within ``timeout``, recording what is left when time runs out
    or a signal (SIGTERM, SIGINT) cuts the run short."""
    records: list[AuditRecord] = []

    def keep(record: AuditRecord) -> None:
        records.append(record)
        emit(record)

    run = Run(config, dry_run, keep)

    def hard_timeout() -> None:
        # The main thread is stuck where no signal reaches it: no waiting, no files.
        if run.launch is not None:
            run.launch.kill_now()
        doing = run.current.doing if run.current else "starting"
        sys.stderr.write(
            f"guardian: hard time-out: still {doing} after {timeout:g}s and more; "
            "killed what this run had started; exiting 124\n"
        )

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    left = [target for target, _ in jobs]
    try:
        with enforce(timeout, hard_timeout) as run.deadline:
            try:
                for target, job in jobs:
                    keep(job(run))
                    left.remove(target)
            except RunTimeout:
                _finish(run, left, keep, "timeout", timeout)
                return RunResult(tuple(records), timed_out=True, trouble=run.trouble)
            except Interrupted as stop:
                _finish(run, left, keep, "interrupted", stop.signum)
                return RunResult(tuple(records), False, stop.signum, run.trouble)
            except BaseException:
                run.end_launch(wait=1.0)  # an internal error must not leave a half-start behind
                raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return RunResult(tuple(records), timed_out=False, trouble=run.trouble)


def _finish(
    run: Run, left: list[Target], keep: Callable[[AuditRecord], None], why: str, value: float
) -> None:
    """The records of a run cut short: the target in hand, and those never reached."""
    record = run.current
    doing = record.doing if record else "starting"
    if why == "timeout":
        ended = run.end_launch(wait=1.0)  # ended, so that the next run starts clean
        also = f"; ended pid {ended}, which it had started" if ended else ""
        cause = f"guardian's own timeout of {value:g}s ran out"
    else:
        # Interrupted by hand or by a shutdown: what it started stays up.
        ended = None
        run.launch = None
        also = ""
        cause = f"guardian got {signal.Signals(int(value)).name}"
    for target in left:
        if record is not None and record.target is target:
            keep(record(why, f"{cause} while {doing}{also}"))
        else:
            keep(AuditRecord(target.name, why, f"not checked: {cause}", dry_run=run.dry_run))

"""One run of guardian: its time limit, its signals, where its records go.

Whatever a run does (``check``, or ``stop``/``restart``/``reset`` by hand)
goes through ``Run.execute``: one job per target, in turn, each within its
share of the run's own timeout, with SIGTERM, SIGINT and SIGHUP turned into
an ``interrupted`` record rather than a death, and anything unexpected in one
target turned into an ``error`` record for it, the run going on to the next.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from guardian import deadline
from guardian.audit import Action, AuditRecord
from guardian.config import Target
from guardian.errors import RunTimeout

if TYPE_CHECKING:  # check (and through it subprocess) is imported only by a run that acts
    from guardian.check import Guard

# Actions after which the target is running (or another guardian is seeing to it).
RUNNING: frozenset[Action] = frozenset(
    {"ok", "adopted", "started", "skipped", "restarted_unhealthy", "restarted"}
)
# Lines about the run rather than a target's outcome: no bearing on the exit code.
# (A target held on purpose is not a failure of the run: `held` is one of them.)
ASIDES: frozenset[Action] = frozenset({"warning", "reset", "stopped", "held", "watch_ended"})
# What each later target is kept of the run's time, at most, so that one slow target
# cannot keep the next from being checked (a healthy check takes milliseconds).
RESERVE = 2.0
DEFAULT_TIMEOUT = 50.0
# How the reason of a record about a config problem begins: the run then exits 2.
CONFIG_ERROR = "config error: "


class Sink(Protocol):
    """Where records go, in two halves (a worker logs its own; its parent shows them)."""

    @property
    def failed(self) -> bool: ...  # a record could not be written to the audit log

    def log(self, record: AuditRecord) -> None: ...

    def show(self, record: AuditRecord) -> None: ...


class Interrupted(BaseException):  # a signal from outside, like KeyboardInterrupt
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    deadline.deliver(Interrupted(signum))


class RunResult(NamedTuple):
    records: tuple[AuditRecord, ...]
    timed_out: bool
    interrupted: int | None = None  # the signal that interrupted the run
    trouble: bool = False


class Run:
    """One run: its deadline, its signals, the target in hand, and where records go.

    ``emit`` takes each record (to the audit log and the screen); ``say``
    writes one line for a person (the hard time-out's only voice).
    """

    def __init__(
        self,
        *,
        dry_run: bool,
        emit: Callable[[AuditRecord], None],
        say: Callable[[str], None],
    ) -> None:
        self.dry_run = dry_run
        self._emit = emit
        self.say = say
        self.deadline: deadline.Deadline | None = None
        self.guard: Guard | None = None  # the target in hand
        self.doing = "starting"  # what the run is doing now, in words
        self.trouble = False  # something could not be written: the exit code must say so
        self.records: list[AuditRecord] = []
        # The audit log and the screen apart: with them, targets can be acted on in
        # workers side by side (``guardian.workers``); without, one after another.
        self.sink: Sink | None = None
        # How a record names the run's limit when it runs out (a worker's is what was left
        # of its parent's: named as the parent's, not as an odd fraction of a second).
        self.limit_words: str | None = None

    # --- the run's frame: time limit and signals ---

    @contextmanager
    def armed(self, seconds: float) -> Iterator[deadline.Deadline]:
        """The run's time limit and signal handling, for the block (config reading included)."""
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, _interrupt) for sig in sigs}
        try:
            with deadline.enforce(seconds, self._hard_timeout) as self.deadline:
                yield self.deadline
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _hard_timeout(self) -> None:
        # The main thread is stuck where no signal reaches it: no files, no waiting (but
        # a second for /proc to name the daemons it started, if it answers).
        killed = self.guard.kill_now() if self.guard is not None else []
        what = (
            f"killed pid(s) {', '.join(map(str, killed))}, which it had started"
            if killed
            else "nothing of its own was left to kill"
        )
        seconds = self.deadline.seconds if self.deadline else 0.0
        self.say(
            f"hard time-out: still {self.doing} {seconds:g}s after it began, and "
            f"{deadline.HARD_GRACE:g}s more; {what}; exiting 124 (no audit record: "
            "the run may be stuck on the log itself)"
        )

    def step(self, doing: str) -> None:
        """What the run is doing from now on (for the records of a run cut short)."""
        self.doing = doing

    @contextmanager
    def aside(self, doing: str) -> Iterator[None]:
        """A short step inside another (a state write), after which the other goes on.

        Cut short inside it, the run was doing this step, and its records say so."""
        before, self.doing = self.doing, doing
        yield
        self.doing = before

    def limit_named(self) -> str:
        """The run's limit in words, for the records of a run it cut short."""
        if self.limit_words:
            return self.limit_words
        if self.deadline is None:  # pragma: no cover - only an armed run is cut short
            return "guardian's own timeout"
        return f"guardian's own timeout of {self.deadline.seconds:g}s"

    def remaining(self) -> float:
        """What is left of the time of the target in hand."""
        return self.deadline.left() if self.deadline else DEFAULT_TIMEOUT

    # --- records ---

    def emit(self, record: AuditRecord) -> None:
        # A record is written whole, whatever arrives meanwhile.
        with (
            self.aside(f"writing its {record.action} record for {record.target}"),
            deadline.critical(),
        ):
            self.records.append(record)
            self._emit(record)

    def warn(self, target: Target, text: str) -> None:
        if self.dry_run:  # it writes nothing but its would_start/ok lines: said, not logged
            self.say(f"{target.name}: warning: {text}")
            return
        self.trouble = True
        self.emit(AuditRecord(target.name, "warning", text))

    # --- the jobs ---

    def execute(
        self, targets: tuple[Target, ...], job: Callable[[Target], AuditRecord | None]
    ) -> RunResult:
        """``job`` for each target in turn; see the module's docstring. A job that returns
        None has left its target to a worker (and its record with it)."""
        if self.deadline is None:  # pragma: no cover - a bug in the caller
            raise RuntimeError("Run.execute() runs inside Run.armed()")
        end = self.deadline.end
        left = list(targets)
        timed_out = False
        in_hand: Target | None = None
        try:
            unit = min(RESERVE, self.deadline.seconds / (2 * len(targets)))
            for i, target in enumerate(targets):
                later = len(targets) - i - 1
                # What is kept for the targets after it; and at least its own part, if
                # the one before overran into it.
                in_hand = target
                self.deadline.slice(max(end - unit * later, time.monotonic() + unit))
                try:
                    record = job(target)
                except RunTimeout:
                    if self.deadline.over():
                        raise
                    timed_out = True  # only its share: the run goes on to the next target
                    with deadline.critical():  # ending what it started is bounded: let it
                        record = self._cut_short(target, "timeout", "its share of the run's time")
                except Exception as e:  # a bug in one target's check must not spare the next
                    with deadline.critical():
                        record = self._internal_error(target, e)
                if record is None:
                    left.remove(target)
                    in_hand, self.guard = None, None
                    continue
                # Its record is written whatever arrives meanwhile (the run's end included):
                # what was done is never lost to a signal or a time-out that comes after.
                guard = self.guard
                try:
                    with deadline.critical():
                        left.remove(target)
                        in_hand = None
                        self.emit(record)
                        self.guard = None
                except RunTimeout:
                    if self.deadline.over():
                        raise
                    # Its share ran out while its record was written: it was done.
                cut = guard.cut if guard is not None else None
                if isinstance(cut, RunTimeout) and not self.deadline.over():
                    timed_out = True  # a hook cut by its share: the next target goes on
                elif cut is not None:
                    raise cut  # a hook cut by a signal or the run's end: its record is written
        except RunTimeout:
            words = self.limit_named()
            self._ran_out(left, in_hand, words)
            return RunResult(tuple(self.records), True, trouble=self.trouble)
        except Interrupted as stop:
            name = signal.Signals(stop.signum).name
            self._finish(left, in_hand, "interrupted", f"guardian got {name}")
            return RunResult(tuple(self.records), timed_out, stop.signum, self.trouble)
        return RunResult(tuple(self.records), timed_out, trouble=self.trouble)

    def _cut_short(
        self, target: Target, why: Action, cause: str, *, in_hand: bool = True
    ) -> AuditRecord:
        guard, self.guard = self.guard, None
        if in_hand and guard is not None and guard.target is target:
            if guard.result is not None:  # it was done: cut short only after its record
                return guard.result
            return guard.cut_short(why, cause, self.doing)
        ran_out = " ran out" if why == "timeout" else ""
        text = (
            f"{cause}{ran_out} while {self.doing}" if in_hand else f"not checked: {cause}{ran_out}"
        )
        return AuditRecord(target.name, why, text, dry_run=self.dry_run)

    def _internal_error(self, target: Target, e: Exception) -> AuditRecord:
        self.trouble = True
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
        text = f"internal error while {self.doing}: {type(e).__name__}: {e} (at {where})"
        self.say(f"{target.name}: {text}; a bug in guardian, please report it:")
        self.say("".join(traceback.format_exception(e)).rstrip())
        guard, self.guard = self.guard, None
        if guard is not None and guard.target is target:
            return guard.failed(text)
        return AuditRecord(target.name, "error", text, dry_run=self.dry_run)

    def _ran_out(self, left: list[Target], in_hand: Target | None, words: str) -> None:
        if not left:  # every record was written: the time ran out while writing the last
            self.say(f"timeout: {words} ran out while {self.doing}; every record was written")
        self._finish(left, in_hand, "timeout", words)

    def _finish(self, left: list[Target], in_hand: Target | None, why: Action, cause: str) -> None:
        """The records of a run cut short: the target in hand, and those never reached.

        All of them, whatever else arrives meanwhile (a second SIGTERM waits)."""
        with deadline.critical():
            for target in left:
                self.emit(self._cut_short(target, why, cause, in_hand=target is in_hand))

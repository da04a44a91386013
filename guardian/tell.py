"""What a run tells the world beyond its audit log: the metrics file, then the dead-man ping.

Only when the config asks for either (``metrics_file``, ``ping_url``). Never a failure of
the run: a problem is a ``warning`` record about ``(guardian)``, said on stderr (so cron
mails it), and the exit code is the targets'. See guardian/metrics.py and guardian/ping.py.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from guardian import deadline
from guardian.audit import AuditRecord
from guardian.config import Config
from guardian.errors import RunTimeout
from guardian.run import RUNNING, Interrupted, Run, RunResult


class Outcomes(Protocol):
    """Where the run's records went (``cli._Output``): each target's latest outcome, and
    the exit code a result comes to."""

    @property
    def latest(self) -> Mapping[str, AuditRecord]: ...

    def exit_code(self, result: RunResult) -> int: ...


PING_OVERTIME = 2.0  # see Tell.ended
assert PING_OVERTIME < deadline.HARD_GRACE / 2  # noqa: S101  # a constant's relation, at import


class Tell:
    """What a run tells the world after it (metrics file, then the dead-man ping), when
    the config asks for either. Never a failure of the run: a problem is a ``warning``
    record about ``(guardian)``, said on stderr, and the exit code is unchanged."""

    def __init__(
        self, config: Config, run: Run, out: Outcomes, line: Callable[[AuditRecord], str],
        *, start: bool,
    ) -> None:  # fmt: skip
        from guardian.ping import Pinger

        self.config, self.run, self.out, self.line = config, run, out, line
        s = config.settings
        # Only a check pings (``start``): the monitor hears from cron's runs. A stop or a
        # start by hand, of one target, must not tell it all is well (or not) meanwhile.
        self.pinger = Pinger(s.ping_url, s.ping_timeout) if s.ping_url and start else None
        self.began = time.monotonic()
        self.duration = 0.0
        self.exit_code: int | None = None  # the check's, while a watch goes on
        # /start as a check begins, if asked; never waited for: collected at the end.
        if self.pinger is not None and s.ping_start:
            self._warn(self.pinger.send("start"))

    @classmethod
    def maybe(
        cls, config: Config, run: Run, out: Outcomes, line: Callable[[AuditRecord], str],
        *, start: bool,
    ) -> Tell | None:  # fmt: skip
        s = config.settings
        wanted = s.metrics_file or (s.ping_url and start)
        return cls(config, run, out, line, start=start) if wanted else None

    def _warn(self, problem: str | None) -> None:
        from guardian.ping import RUN_TARGET

        if problem:  # (not run.warn: a warning about the run's telling leaves the exit code)
            self.run.emit(AuditRecord(RUN_TARGET, "warning", problem))

    def _metrics(self, exit_code: int | None, *, watching: bool = False) -> None:
        if self.config.settings.metrics_file is None:
            return
        from guardian import metrics

        facts = metrics.RunFacts(time.time(), self.duration, exit_code, watching)
        with self.run.aside("writing its metrics file"), deadline.critical():  # milliseconds
            problem = metrics.update(self.config, facts)
        self._warn(problem)

    def _verdict(self, result: RunResult | None) -> tuple[str, bytes | None]:
        from guardian.ping import body

        latest = self.out.latest.values()
        down = [r for r in latest if r.action not in RUNNING and r.action != "held"]
        held = [r for r in latest if r.action == "held"]
        timed_out = result is not None and result.timed_out
        stopped = result.interrupted if result is not None else None
        # An ordered stop (SIGTERM from a shutdown or `systemctl stop cron`, SIGINT, SIGHUP)
        # with every target running is no failure: every reboot would page. (A target it
        # cut short, or never reached, has an ``interrupted`` record: down.)
        kind = "fail" if down or timed_out or (stopped is not None and not latest) else "success"
        lines = [self.line(r) for r in (*down, *held)]
        if timed_out and not down:
            lines.insert(0, "guardian's run was cut short: its own time ran out")
        if stopped is not None:
            lines.insert(0, f"guardian was ended by {signal.Signals(stopped).name}")
        return kind, body(lines) if lines else None

    def checked(self, result: RunResult, *, final: bool) -> None:
        """After the check (or the job by hand): metrics, then the ping (``final``: waited
        for, within the run's time; else sent and left to run while the watch goes on)."""
        self.duration = time.monotonic() - self.began
        if final:
            self.ended(result)
            return
        self.exit_code = self.out.exit_code(result)
        self._metrics(self.exit_code)
        if self.pinger is not None:
            self._warn(self.pinger.send(*self._verdict(result)))

    def watching(self) -> None:
        """A watcher holds watch locks it did not (it began to watch, or took over from the
        watcher before it, whose last metrics could not say so): metrics anew."""
        try:
            self._metrics(self.exit_code, watching=True)
        except Exception as e:  # a bug here must not end the watch: said, and it goes on
            self._warn(f"internal error while telling of its watch: {type(e).__name__}: {e}")

    def acted(self) -> None:
        """A watcher's action is over: metrics anew, and a ping, without waiting."""
        try:
            self._metrics(self.exit_code, watching=True)
            if self.pinger is not None:
                for problem in self.pinger.poll():
                    self._warn(problem)
                self._warn(self.pinger.send(*self._verdict(None)))
        except Exception as e:  # a bug here must not end the watch: said, and it goes on
            self._warn(f"internal error while telling of an action: {type(e).__name__}: {e}")

    def abandon(self) -> None:
        """The run was cut where nothing else saw to it: pings under way are ended."""
        if self.pinger is not None:
            with deadline.critical():
                self.pinger.collect(0.0)

    def ended(self, result: RunResult) -> None:
        """The run's end: metrics with its exit code, the last ping, and every ping's result
        gathered, within the run's time and the ping's timeout; a signal or the run's end
        arriving meanwhile cuts the wait short, not the run's records or exit code."""
        self._metrics(self.out.exit_code(result))
        if self.pinger is None:
            return
        self.run.step("sending its ping")
        try:
            self._warn(self.pinger.send(*self._verdict(result)))
            # The child ends itself at its timeout (its own SIGALRM): a moment more for that,
            # within what is left of the run; and a run that used up its time (the one whose
            # /fail matters most) still gets PING_OVERTIME, well inside the hard time-out's
            # grace (deadline.HARD_GRACE).
            wait = self.pinger.horizon() + 0.5
            if self.run.deadline is not None:
                wait = min(wait, max(self.run.deadline.remaining(), PING_OVERTIME))
            problems = self.pinger.collect(wait)
        except (Interrupted, RunTimeout) as e:
            what = ("guardian's own time ran out" if isinstance(e, RunTimeout)
                    else f"guardian got {signal.Signals(e.signum).name}")  # fmt: skip
            problems = [f"ping cut short: {what}"]
        with contextlib.suppress(Interrupted, RunTimeout), deadline.critical():
            for problem in problems:
                self._warn(problem)

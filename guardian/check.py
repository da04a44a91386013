"""One target's guard cycle for one run: find, decide, and (under its lock) act.

``Guard`` owns everything about one target for the length of a run: its
state, its record in the making, its lock, what it has learnt and what it
has started. A healthy target without health probes costs a pidfile read, a
few small /proc reads, and its state file read and written back (when it was
last seen alive, under the state file's own short lock): not the target's
lock, no process-table scan, no subprocess import. Anything else is decided
again under the target's lock, so that of several overlapping runs exactly
one acts and the others see what it did.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from guardian import deadline, holds, locking, proc, state
from guardian.audit import Action, AuditRecord, shorten
from guardian.config import Config, Settings, Target
from guardian.discovery import Found, Matcher, Missing, Unsure, discover, inspect
from guardian.errors import EXIT_INTERNAL, EXIT_TIMEOUT, LaunchError, RunTimeout
from guardian.run import CONFIG_ERROR, Interrupted, Run, RunResult, Sink

if TYPE_CHECKING:  # launch (and subprocess) is imported only by a run that acts
    from guardian.launch import Launch


# What a hook is told (``GUARDIAN_ACTION``), and which hook each event runs.
HookEvent = Literal["died", "unhealthy", "start_failed", "started", "restarted_unhealthy",
                    "restarted", "gave_up"]  # fmt: skip
StartAction = Literal["started", "restarted_unhealthy", "restarted"]
_HOOK_OF: dict[HookEvent, str] = {
    "died": "on_failure",
    "unhealthy": "on_failure",
    "start_failed": "on_failure",
    "started": "on_start",
    "restarted_unhealthy": "on_start",
    "restarted": "on_start",
    "gave_up": "on_give_up",
}
# What a dead target left in its session: looked at and ended this many times at most
# (members born while the first were being ended: see Guard._end_session).
_SESSION_ROUNDS = 5


def _born_while_held(
    found: list[proc.Member], spans: list[tuple[int, int]], looked: int
) -> list[proc.Member]:
    """Those of ``found`` (members of the session, alive in it at tick ``looked`` or later)
    born while one of its own was alive in it: a start tick strictly between the start of
    one and a tick it was seen alive in (``spans``; ticks are a hundredth of a second, so
    the same tick proves nothing). A process never rejoins a session it left, so one found
    in it now has been in it since its birth: each one proven is a span too (start to
    ``looked``, added to ``spans``), and may prove a sibling born in the tick its parent
    was last seen."""
    proven: list[proc.Member] = []
    left = list(found)
    while True:
        more = [m for m in left if any(a < m.start_ticks < b for a, b in spans)]
        if not more:
            return proven
        proven += more
        spans += [(m.start_ticks, looked) for m in more]
        left = [m for m in left if m not in more]


def _seen(found: Found) -> float:
    """When ``found`` was seen alive: read before the look (``Found.seen``)."""
    return found.seen or state.now()


def _current(found: Found, *, ready: bool) -> state.Current:
    """``found`` as the state file remembers it, seen alive now."""
    return state.Current(found.pid, found.start_ticks, found.session, ready, _seen(found),
                         exe=found.exe)  # fmt: skip


def _wall(boottime: float, timespec: str = "seconds") -> str:
    """A boot-clock time on the wall clock, as the audit log writes times (RFC 3339, UTC;
    ``timespec`` as datetime.isoformat's)."""
    when = time.time() + (boottime - state.now())
    return datetime.fromtimestamp(when, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


class Later(Exception):  # a signal to the caller, not an error
    """The first look found work that takes time (acting, probing): a worker does it."""


class Guard:
    """One target, one run. Its methods are the steps; each returns the target's record."""

    def __init__(self, run: Run, target: Target, settings: Settings) -> None:
        self.run = run
        self.target = target
        self.settings = settings
        self.store = state.Store(state.path_for(settings.state_dir, target.name))
        self.matcher = Matcher.for_target(target)
        self.began = time.monotonic()
        self.pid: int | None = None
        self.old_pid: int | None = None
        self.st = state.State(state.boot_id())
        self.rebuilt = False  # the state file was not believed: what it named is unknown
        self.save_failed = False
        self.state_lock_busy = False
        self.lock: locking.Lock | None = None
        self.launch: Launch | None = None
        # A hook cut short by a signal or a time-out: the action's record is written all
        # the same, then the run acts on this.
        self.cut: Interrupted | RunTimeout | None = None
        # Its record, once the check is done: a time-out or signal that lands after that
        # (before the run writes it) must not replace it.
        self.result: AuditRecord | None = None
        self.hooks_ran: list[str] = []  # what each hook run for this record did
        self.output_since = 0  # where the output of this run's start begins in its file
        self.probed: tuple[str, ...] = ()  # each health probe's result, this run
        # How long a check waits for the target's lock when another guardian holds it:
        # 0 in a cron run (the other is seeing to it); a watcher's waits (a stop by hand
        # may be under way, and what it leaves, a hold, must be seen before acting).
        self.lock_wait = 0.0
        self.hold_said = False  # a hold file that cannot be believed: said once a run
        self.hold_note = ""  # an expired hold, said in the record of the start it allows
        # Only the first look, which takes milliseconds: whatever takes longer raises
        # Later, and a worker does it beside the other targets'.
        self.first_look = False
        # A watcher saw this process (pid, start ticks) alive until this moment (boot
        # clock): it exited then. Without it, a target a watcher watched for an hour
        # would seem to have lived only until its start was recorded: a young death.
        self.alive_until: tuple[int, int, float] | None = None
        run.guard = self

    # --- the record ---

    def record(self, action: Action, reason: str, **fields: object) -> AuditRecord:
        ms = int((time.monotonic() - self.began) * 1000)
        known = {"pid": self.pid, "old_pid": self.old_pid, "hooks": tuple(self.hooks_ran),
                 "probes": self.probed}  # fmt: skip
        return AuditRecord(
            self.target.name,
            action,
            reason,
            duration_ms=ms,
            dry_run=self.run.dry_run,
            **{**known, **fields},  # type: ignore[arg-type]  # the record's optional fields
        )

    def cut_short(self, why: Action, cause: str, doing: str) -> AuditRecord:
        """The record of a check cut short by a time-out or a signal."""
        also = ""
        if why == "timeout" and self.launch is not None:  # ended: the next run starts clean
            self.run.step(f"{doing}, then ending what it had started")
            ended = self.end_launch(wait=1.0)
            if ended:
                also = f"; ended pid(s) {', '.join(map(str, ended))}, which it had started"
        else:
            self.launch = None  # interrupted by hand or by a shutdown: what it started stays up
        ran_out = " ran out" if why == "timeout" else ""
        return self.record(why, f"{cause}{ran_out} while {doing}{also}")

    def failed(self, text: str) -> AuditRecord:
        """The record of an unexpected error: what it had started and not seen ready is ended."""
        ended = self.end_launch(wait=1.0)
        also = f"; ended pid(s) {', '.join(map(str, ended))}, which it had started" if ended else ""
        return self.record("error", text + also)

    def end_launch(self, wait: float) -> list[int]:
        launch, self.launch = self.launch, None
        return launch.end(wait=wait) if launch is not None else []

    def kill_now(self) -> list[int]:
        return self.launch.kill_now() if self.launch is not None else []

    # --- state ---

    def load(self, *, again: bool = False) -> None:
        """Read the state file (``again``, under the lock: anew, if another run wrote it)."""
        self.run.step(f"reading its state file {self.store.path}")
        self.st = self.store.load(again=again)
        c = self.st.current
        if self.alive_until is not None and c is not None and c[:2] == self.alive_until[:2]:
            seen = max(c.last_seen, self.alive_until[2])
            self.st = self.st._replace(current=c._replace(last_seen=seen))
        for text in self.store.warnings:
            self.rebuilt = True
            self.run.warn(self.target, text)
        self.store.warnings.clear()

    def save(self) -> None:
        """Save the state; a failure is reported and the run goes on (the target comes first).

        Every write holds the state file's own short lock (not the target's lock,
        which would make a run that finds the target dead skip it while a healthy
        run writes). A run that read the state without the target's lock (the
        healthy path) writes only if no other run has written it since: it can
        never undo what a run acting on the target has just recorded.
        """
        if self.run.dry_run:
            return
        acting = self.lock is not None
        # A write takes milliseconds: one acting on the target waits a second for it, once.
        wait = 1.0 if acting and not self.state_lock_busy else 0.0
        try:
            lock: locking.Lock | None = locking.acquire(
                self.settings.lock_dir, f".{self.target.name}.state", wait=wait
            )
        except locking.Busy:
            if not acting:
                return  # another run is writing what it has learnt
            self.state_lock_busy = True  # stuck (a hung disk?): the acting run writes anyway
            lock = None
        except locking.LockError:
            lock = None  # without locks nobody acts: there is no run to race with
        try:
            if acting or not self.store.changed():
                self._write()
        finally:
            if lock is not None:
                lock.release()

    def _write(self) -> None:
        try:
            with self.run.aside(f"writing its state file {self.store.path}"):
                self.store.save(self.st)
        except OSError as e:
            if not self.save_failed:  # said once a run, however often it is tried
                self.save_failed = True
                self.run.warn(self.target, f"cannot write state file {self.store.path}: "
                              f"{e.strerror or e}")  # fmt: skip

    def discover(self, *, scan: bool = True) -> Found | Missing | Unsure:
        self.run.step(f"looking for it (pidfile {self.target.pidfile}, then /proc)")
        return discover(self.target, remembered=state.remembered(self.st), matcher=self.matcher,
                        allow_scan=scan)  # fmt: skip

    # --- the lock ---

    def locked(self, act: Callable[[], AuditRecord], *, wait: float = 0.0) -> AuditRecord:
        """``act`` under the target's lock (already held: just ``act``)."""
        if self.lock is not None:
            return act()
        self.run.step(f"taking its lock in {self.settings.lock_dir}")
        try:
            self.lock = locking.acquire(self.settings.lock_dir, self.target.name, wait=wait)
        except locking.Busy as busy:
            if wait:
                return self.record("error", f"another guardian held its lock, {busy}, for "
                                   f"{wait:.0f}s; did nothing")  # fmt: skip
            return self.record("skipped", f"another guardian holds its lock, {busy}, and is "
                               "seeing to it")  # fmt: skip
        except locking.LockError as e:
            return self.record("error", f"{e}; did nothing (it must not act without its lock)")
        try:
            return act()
        finally:
            lock, self.lock = self.lock, None
            lock.release()

    def lock_lost(self) -> str | None:
        """Why the lock no longer means anything (its file deleted or replaced), or None."""
        if self.lock is None or self.lock.still_held():
            return None
        return (f"its lock file {self.lock.path} was deleted or replaced while held, so "
                "another guardian may be acting")  # fmt: skip

    # --- the cron check ---

    def check(self) -> AuditRecord:
        hold = self.held()
        if hold is not None:  # kept down on purpose: nothing looked at, nothing done
            return self.record("held", hold.describe(), hold=hold.to_dict())
        self.load()
        # Not proven by its pidfile or by what guardian remembers: the process table is
        # scanned once, under the lock (where it must be looked at anyway, as another run
        # may have acted): not once before it too. On a host with thousands of processes
        # a scan is a tenth of a second, and a watcher's restart waits for it. (A dry run
        # takes no lock: it scans here.)
        found = self.discover(scan=self.run.dry_run)
        if isinstance(found, Found):
            self.pid = found.pid
            if not self._needs_adopting(found):
                if self.first_look and self.target.health.any and not self.run.dry_run:
                    raise Later
                return self.alive(found)
        else:
            self.old_pid = found.old_pid
        if self.run.dry_run:
            return self._dry_run(found)
        if self.first_look:
            raise Later
        return self.locked(self._act, wait=self.lock_wait)

    def _needs_adopting(self, found: Found) -> bool:
        """Found by scan, or by memory with a pidfile of guardian's own to rewrite."""
        return found.via == "scan" or (found.via == "memory" and not self.target.daemonizes)

    def _dry_run(self, found: Found | Missing | Unsure) -> AuditRecord:
        """What a real run would do now, by the same rules, changing nothing."""
        if isinstance(found, Found):
            return self.alive(found, note="not known to guardian yet, would adopt it: ")
        if isinstance(found, Unsure):
            return self.record("error", found.reason)
        t = state.now()
        verdict = state.decide(state.seen_dead(self.st, t, self.target.restart), t,
                               self.target.restart)  # fmt: skip
        if verdict.action != "start":
            return self.held_back(verdict, found.reason)
        told = "; would run on_failure (died) first" if self._died() and \
            self.target.hooks.on_failure else ""  # fmt: skip
        return self.record("would_start", found.reason + told)

    def _act(self) -> AuditRecord:
        """Under the lock: look again (another run may have acted), then adopt or start."""
        self.load(again=True)
        return self._decide(self.discover())

    def _decide(self, found: Found | Missing | Unsure) -> AuditRecord:
        """Under the lock, on what was found: adopt, leave, or start (the crash-loop rules)."""
        if isinstance(found, Found):
            self.pid = found.pid
            if self._needs_adopting(found):
                return self._adopt(found)
            return self.alive(found, note="found after taking the lock: ")
        self.pid, self.old_pid = None, found.old_pid
        if isinstance(found, Unsure):
            return self.record("error", found.reason)
        hold = self.held()
        if hold is not None:  # held since the first look (a stop by hand): left down
            return self.record("held", f"{hold.describe()}; {found.reason}", hold=hold.to_dict(),
                               **self.outage(state.now()))  # fmt: skip
        t = state.now()
        died = self._died()
        self.st = state.seen_dead(self.st, t, self.target.restart)
        verdict = state.decide(self.st, t, self.target.restart)
        self.st = verdict.state
        if died:  # told before any restart: once for each death guardian finds
            self.save()  # (counted first: a hook cut short must not tell it twice)
            self.hook(self.target.hooks.on_failure, "died", found.reason, self.old_pid,
                      before=self._start_time())  # fmt: skip
            if self.cut is not None:
                return self.record("interrupted" if isinstance(self.cut, Interrupted) else
                                   "timeout", f"{found.reason}; its on_failure hook was cut "
                                   "short, so it was not started")  # fmt: skip
        if verdict.action != "start":
            self.save()
            if self.save_failed:
                # What it learns cannot be kept (a full disk, a read-only folder): the
                # rules would count from now on every run, and hold it down for ever.
                return self.start("started", f"{found.reason}; {verdict.reason}, but its state "
                                  "file cannot be written, so that cannot be counted: "
                                  "started all the same")  # fmt: skip
            return self.held_back(verdict, found.reason)
        return self.start("started", found.reason)

    def _died(self) -> bool:
        """Is this the first run to find dead a target guardian knew running?

        A start that never became ready is not a death: its ``start_failed`` was told.
        """
        c = self.st.current
        return c is not None and c.pid > 0 and c.ready and self.st.dead_since is None

    def _adopt(self, found: Found) -> AuditRecord:
        """Found running without its pidfile: remember it (so that it is found, probed and
        cleaned up after like one guardian started), and rewrite the pidfile if it is ours."""
        from guardian.launch import write_pidfile

        if self.target.daemonizes:  # the pidfile is the target's own: not ours to write
            return self.alive(found, adopted=found.evidence)
        self.run.step(f"writing pidfile {self.target.pidfile}")
        try:
            write_pidfile(self.target.pidfile, found.pid)
        except OSError as e:
            error = f"cannot write pidfile {self.target.pidfile}: {e.strerror or e}"
            self.run.warn(self.target, error)  # the exit code says so (3), as for every write
            return self.alive(found, adopted=f"{found.evidence}; pidfile not rewritten")
        return self.alive(found, adopted=f"{found.evidence}; pidfile {self.target.pidfile} "
                          "rewritten")  # fmt: skip

    def alive(self, found: Found, *, note: str = "", adopted: str | None = None) -> AuditRecord:
        """The target runs: learn from it (first sight included), and probe it."""
        self.st = state.seen_alive(self.st, found.pid, found.start_ticks, found.session,
                                   _seen(found), self.target.restart, found.exe)  # fmt: skip
        action: Action = "adopted" if adopted is not None else "ok"
        evidence = adopted if adopted is not None else f"running: {note}{found.evidence}"
        health = self.target.health
        if health.any:
            from guardian import probes

            results = probes.run_all(health, env=self.env(), remaining=self.run.remaining(),
                                     step=self.run.step)  # fmt: skip
            self.probed = tuple(map(str, results))
            failed = [f"{r.probe}: {r.detail}" for r in results if not r.ok]
            if not proc.is_alive(found.pid, found.start_ticks):
                if self.run.dry_run:
                    return self.record("would_start", f"pid {found.pid} died while it was "
                                       "probed")  # fmt: skip
                # It died while it was probed: what a dead target gets, under the lock.
                self.save()  # when it was last seen alive, for what it left behind
                return self.locked(self._act, wait=self.lock_wait)
            if failed:
                self.st = self.st._replace(probe_failures=self.st.probe_failures + 1)
                why = f"{'; '.join(failed)} ({self.st.probe_failures} of {health.failures} " \
                      "failing runs)"  # fmt: skip
                if self.run.dry_run:
                    then = "would restart it" if self.st.probe_failures >= health.failures else \
                        "not restarted yet"  # fmt: skip
                    return self.record("unhealthy", f"{evidence}; {why}: {then}")
                if self.st.probe_failures < health.failures:
                    self.save()
                    return self.record("unhealthy", why)
                self.save()
                return self.locked(lambda: self._restart_unhealthy(found, why),
                                   wait=self.lock_wait)  # fmt: skip
            self.st = self.st._replace(probe_failures=0)
        self.save()
        return self.record(action, evidence)

    def env(self) -> dict[str, str]:
        """The environment of its probes and hooks: the target's, but always guardian's own
        ``HOME``, ``USER`` and ``LOGNAME``. They run as guardian (root): a ``HOME`` meant
        for the target's user would let that user's files (``~/.local`` Python
        modules, say) run as root."""
        from guardian.config import own_identity

        return {**self.target.env, **own_identity()}

    def _restart_unhealthy(self, found: Found, why: str) -> AuditRecord:
        """Under the lock: the same process still there and still failing: stop it, start anew."""
        self.load(again=True)
        again = self.discover()
        if not isinstance(again, Found):
            return self._decide(again)  # it died meanwhile: what a dead target gets
        if again[:2] != found[:2]:  # another process now (another run restarted it)
            self.pid = again.pid
            self.st = state.seen_alive(self.st, again.pid, again.start_ticks, again.session,
                                       _seen(again), self.target.restart, again.exe)  # fmt: skip
            self.save()
            return self.record("ok", f"running: {again.evidence} (pid {found.pid}, which "
                               f"failed its probes, is gone: {why})")  # fmt: skip
        hold = self.held()
        if hold is not None:  # held while it was probed: left as it is
            return self.record("held", f"{hold.describe()}; unhealthy: {why}; not restarted",
                               hold=hold.to_dict())  # fmt: skip
        t = state.now()
        verdict = state.decide(self.st, t, self.target.restart)
        self.st = verdict.state
        if verdict.action != "start":
            self.save()
            return self.held_back(verdict, f"unhealthy: {why}")
        self.old_pid = found.pid
        # Told before the restart, while the failing process can still be looked at.
        self.hook(self.target.hooks.on_failure, "unhealthy", why, found.pid,
                  before=self.target.stop_timeout + self._start_time())  # fmt: skip
        if self.cut is not None:
            return self.record("interrupted" if isinstance(self.cut, Interrupted) else "timeout",
                               f"unhealthy: {why}; its on_failure hook was cut short, so it "
                               "was not restarted")  # fmt: skip
        gone, how = self.stop(found)
        if not gone:
            return self.record("error", f"unhealthy: {why}; {how}; not starting another copy")
        return self.start("restarted_unhealthy", f"unhealthy: {why}; {how}")

    def held(self) -> holds.Hold | None:
        """Its hold, if it is held now (``guardian stop``).

        An expired hold is noted (the start it lets through says so, and removes
        it); one that cannot be believed is said once, and ignored: keeping the
        target running is guardian's job, and a forged hold must not stop it.
        """
        try:
            hold = holds.read(self.settings.state_dir, self.target.name)
        except holds.HoldError as e:
            if not self.hold_said:
                self.hold_said = True
                self.run.warn(self.target, f"{e}; ignored: the target is kept running")
            return None
        if hold is None:
            return None
        if hold.expired():
            self.hold_note = f"; its hold has expired ({hold.describe()})"
            return None
        return hold

    def _drop_expired_hold(self) -> None:
        """Under the lock: remove the hold that has expired (a new one set meanwhile stays)."""
        try:
            hold = holds.read(self.settings.state_dir, self.target.name)
            if hold is not None and hold.expired():
                holds.release(self.settings.state_dir, self.target.name)
        except (holds.HoldError, OSError):
            pass  # said already, or left for the next run: it is ignored either way

    def held_back(self, verdict: state.Verdict, found: str) -> AuditRecord:
        # (held back: the rules always say until when)
        next_try = _wall(verdict.next_try) if verdict.next_try is not None else None
        would = "would wait: " if self.run.dry_run else ""
        if verdict.action == "gave_up":
            text = f"{would}{found}; {verdict.reason}: not starting it again before {next_try}"
            self.hook(self.target.hooks.on_give_up, "gave_up", text, None)
            return self.record("gave_up", text, next_try=next_try, **self.outage())
        return self.record(
            "backoff",
            f"{would}{found}; {verdict.reason}; next try at {next_try}",
            next_try=next_try,
            **self.outage(),
        )

    def outage(self, now: float | None = None) -> dict[str, str]:
        """The outage a record after a death bounds, as far as the state knows it (for
        ``report``): the target died after ``last_seen`` and before ``down_since``.
        ``now``: it is found dead now, and the state has not counted that yet. Nothing
        for a target not known dead (alive, stopped by hand, never seen)."""
        c, dead = self.st.current, self.st.dead_since
        if dead is None:
            if now is None or c is None or c.pid <= 0:
                return {}
            dead = now
        fields = {"down_since": _wall(dead, "milliseconds")}
        if c is not None and c.pid > 0 and c.last_seen:
            fields["last_seen"] = _wall(min(c.last_seen, dead), "milliseconds")
        return fields

    # --- acting: stop, leftovers, start ---

    def stop(self, found: Found) -> tuple[bool, str]:
        """Stop ``found`` as the target says; whether it is gone, and how it ended."""
        lost = self.lock_lost()
        if lost:
            return False, f"{lost}; not signalling pid {found.pid}"
        self.run.step(f"stopping pid {found.pid}")
        wait = min(self.target.stop_timeout, self.run.remaining() / 2)

        def still_the_target(pid: int) -> bool:
            seen = inspect(pid, self.matcher)
            return isinstance(seen, Found) and seen.start_ticks == found.start_ticks

        return proc.stop(found.pid, found.start_ticks, self.target.stop_signal, wait,
                         still_the_target)  # fmt: skip

    def leftovers(self) -> tuple[tuple[int, ...], str]:
        """What the last target left in its session; ended unless ``orphans = "keep"``.

        Only what provably is its own: a process in the session it led that
        started while it was still known to be alive (no later than guardian
        last saw it). Once one such process lives, the kernel has never freed
        the session's number, so every other member is its too; when none is
        proven, nothing is touched and the record says so.
        """
        current = self.st.current
        if self.rebuilt:
            return (), "; its state file was not believed, so what the last one left is unknown"
        if current is None or current.pid <= 0:
            return (), ""
        pid = current.pid
        if not current.leads_session:
            return (), (f"; pid {pid} did not lead a session of its own, so what it left "
                        "behind cannot be told apart: nothing ended")  # fmt: skip
        leader = proc.stat(pid)
        if leader is not None and not leader.dead:
            # The pid is alive again: either the old target under another command line
            # (not ours to signal) or a new process that reused the id. Neither is debris.
            return (), ""
        looked = proc.ticks(state.now())  # each member found is alive in it now, or later
        members = proc.session_members(pid)
        if not members:
            return (), ""
        # Started in a clock tick before the one it was last seen alive in (read before the
        # look): started while it lived, so in its session, not in one a stranger who got
        # its pid could have made since (the same tick proves nothing).
        seen = proc.ticks(current.last_seen)
        proven = [m for m in members if current.start_ticks <= m.start_ticks < seen]
        if not proven:
            shown = ", ".join(str(m.pid) for m in members)
            return (), (f"; pid(s) {shown} in its old session started after it was last seen "
                        "alive, so are not provably its own: left alone")  # fmt: skip
        # And what was born while one of those lived (the session's number held by it).
        rest = [m for m in members if m not in proven]
        members = proven + _born_while_held(rest, [(m.start_ticks, looked) for m in proven],
                                            looked)  # fmt: skip
        pids = tuple(m.pid for m in members)
        if self.target.orphans == "keep":
            return pids, f"; kept {len(pids)} process(es) it left behind"
        lost = self.lock_lost()
        if lost:
            return pids, f"; {lost}: left {len(pids)} process(es) it left behind alone"
        self.run.step(f"ending what pid {pid} left behind")
        wait = min(self.target.stop_timeout, self.run.remaining() / 2)
        later, unproven = self._end_session(pid, members, wait)
        pids += later
        unsaid = (f"; {unproven} more in its old session, not provably its own (born after "
                  "the last of its own was seen): left alone") if unproven else ""  # fmt: skip
        return pids, f"; ended {len(pids)} process(es) it left behind{unsaid}"

    def _end_session(
        self, session: int, members: list[proc.Member], wait: float
    ) -> tuple[tuple[int, ...], int]:
        """End ``members`` of ``session`` (all of them proven its own), within ``wait``: the
        pids of the members found after them (and ended too), and how many more are in the
        session, not provably its own (left alone).

        One that forked while the look went on, or while it was ending (a pre-fork server's
        master replaces its workers), has children the look did not see. So the session
        is looked at again, up to _SESSION_ROUNDS times, and a new member is ended only if
        it was born while the session's number was held by one of its own
        (``_born_while_held``): then it could not have been anyone else's (to be another's,
        every member must be gone and a stranger must get the leader's very pid and call
        setsid).
        """
        deadline = time.monotonic() + wait
        seen = {(m.pid, m.start_ticks) for m in members}
        later: list[int] = []
        # (start, tick): one of its own lived in the session from its start until at least
        # that tick, so the session's number was held all the while.
        spans: list[tuple[int, int]] = []
        for _ in range(_SESSION_ROUNDS):
            hit, seen_at = proc.signal_members(members, self.target.stop_signal, session)
            alive_at = proc.finish_members(hit, seen_at, session,
                                           max(0.0, deadline - time.monotonic()))  # fmt: skip
            spans += [(m.start_ticks, at) for m, at in alive_at.items()]
            looked = proc.ticks(state.now())  # each found below is alive in it now, or later
            found = [m for m in proc.session_members(session)
                     if (m.pid, m.start_ticks) not in seen]  # fmt: skip
            members = _born_while_held(found, spans, looked)
            if not members:
                break
            seen.update((m.pid, m.start_ticks) for m in members)
            later += [m.pid for m in members]
        else:
            # The last round's finds were signalled by no round: ended after all, here.
            hit, seen_at = proc.signal_members(members, self.target.stop_signal, session)
            proc.finish_members(hit, seen_at, session, max(0.0, deadline - time.monotonic()))
        unproven = [m for m in proc.session_members(session)
                    if (m.pid, m.start_ticks) not in seen]  # fmt: skip
        return tuple(later), len(unproven)

    def start(
        self,
        action: StartAction,
        reason: str,
        *,
        counts: bool = True,
        orphans: tuple[int, ...] | None = None,
        by_hand: bool = False,
    ) -> AuditRecord:
        """Under the lock: end what the last one left (unless done: ``orphans``), spawn,
        record that at once, and wait until it is ready. Never a held target, unless by
        hand (``guardian start`` and ``restart`` release the hold first)."""
        # The outage this start ends, as far as the records can prove it (``report``):
        # the target died after it was last seen alive and before it was first seen dead.
        outage = {} if by_hand else self.outage()
        if not by_hand:
            hold = self.held()
            if hold is not None:
                return self.record("held", f"{hold.describe()}; {reason}; not started",
                                   hold=hold.to_dict(), **outage)  # fmt: skip
            if self.hold_note:
                reason += self.hold_note
                self._drop_expired_hold()
        if orphans is None:
            orphans, said = self.leftovers()
            reason += said
        lost = self.lock_lost()
        if lost:
            return self.record("error", f"{reason}; {lost}: not starting it", orphans=orphans)
        try:
            launch = self._spawn(counts)
        except LaunchError as e:
            self.hook(self.target.hooks.on_failure, "start_failed", str(e), None)
            return self.record("start_failed", reason, error=str(e), orphans=orphans, **outage)
        error = self._write_pidfile(launch.proc.pid)
        try:
            self.run.step(f"waiting for pid {launch.proc.pid} to become ready")
            ready = launch.wait_ready(self._alive_meanwhile)
        except LaunchError as e:
            return self._not_ready(launch, reason, str(e), orphans, outage)
        self.launch = None
        launch.reap()
        found = ready.found
        self.pid = found.pid
        self.st = self.st._replace(current=_current(found, ready=True))
        cause: state.StartCause = (
            "by_hand" if by_hand else "unhealthy" if action == "restarted_unhealthy" else "died"
        )
        self.st = state.counted(self.st, cause, time.time())  # (metrics: starts_total)
        self.save()
        text = f"{reason}; ready after {ready.seconds:.1f}s"
        self.hook(self.target.hooks.on_start, action, text, found.pid)
        return self.record(action, text, error=error, orphans=orphans, **outage)

    def _spawn(self, counts: bool) -> Launch:
        """Spawn the target and record it in one step: a SIGTERM or a time-out waits for
        the state write, so the next run always knows what this one started."""
        from guardian.launch import Launch, output_size, spawn

        self.run.step("starting it")
        self.output_since = output_size(self.target.output)
        warnings: list[str] = []
        t = state.now()
        try:
            with deadline.critical():
                child = spawn(self.target, warnings)
                self.launch = launch = Launch(self.target, child, self.matcher)
                self.pid = child.pid
                current = state.Current(child.pid, launch.since_ticks, child.pid, False, t)
                self.st = state.started(self.st, t, current, counts=counts)
                self.save()
        except LaunchError:
            # A start that never ran (exec failed): pid 0, never ready: it counts as dying young.
            self.st = state.started(self.st, t, state.Current(0, 0, 0, False, t), counts=counts)
            self.st = state.seen_dead(state.start_failed(self.st), t, self.target.restart)
            self.save()
            raise
        for text in warnings:
            self.run.warn(self.target, text)
        return launch

    def _write_pidfile(self, pid: int) -> str | None:
        """Write the pidfile of a target that does not write its own; what went wrong, if so."""
        from guardian.launch import write_pidfile

        if self.target.daemonizes:
            return None
        self.run.step(f"writing pidfile {self.target.pidfile}")
        try:
            write_pidfile(self.target.pidfile, pid)
        except OSError as e:  # started all the same: the next run finds it by its command line
            error = f"cannot write pidfile {self.target.pidfile}: {e.strerror or e}"
            self.run.warn(self.target, error)
            return error
        return None

    def _alive_meanwhile(self, found: Found) -> None:
        """Alive, maybe not yet ready: if this run is killed now, the next one knows what
        runs (a daemon's own session, once found) and until when it was seen."""
        self.st = self.st._replace(current=_current(found, ready=False))
        self.save()

    def _not_ready(
        self,
        launch: Launch,
        reason: str,
        error: str,
        orphans: tuple[int, ...],
        outage: dict[str, str],
    ) -> AuditRecord:
        from guardian.launch import tail

        pid = launch.proc.pid
        self.run.step(f"ending pid {pid}, which did not become ready")
        self.end_launch(wait=2.0)
        # Its death is counted now, when it failed: a backoff runs from here, exactly
        # (a watcher waits just that long; without it, every look would count anew).
        self.st = state.seen_dead(state.start_failed(self.st), state.now(), self.target.restart)
        self.save()
        self.hook(self.target.hooks.on_failure, "start_failed", error, pid)
        tail_lines = tuple(tail(self.target.output, since=self.output_since))
        return self.record("start_failed", reason, error=error, output_tail=tail_lines,
                           orphans=orphans, **outage)  # fmt: skip

    def _start_time(self) -> float:
        """How long a start may take: what a hook run before one must leave it."""
        return self.target.start_timeout + self.target.start_grace

    def hook(self, argv: tuple[str, ...] | None, event: HookEvent, reason: str,
             pid: int | None, *, before: float = 0.0) -> None:  # fmt: skip
        """Run a hook (``GUARDIAN_ACTION`` is ``event``); what it did goes into the record.

        Whatever it does is only recorded. A dry run runs no hook (it changes nothing).
        ``before``: what the hook comes before needs this long, so the hook gets what is
        left after that (but at least a quarter of the time left): a slow hook must not
        eat the restart it is told about.
        """
        if argv is None or self.run.dry_run:
            return
        hook = _HOOK_OF[event]
        if event == "died" and self.save_failed:
            # Once per death is kept by the state file; without it, every run would tell
            # the same death again (a page a minute on a full disk).
            self.hooks_ran.append(f"{hook} ({event}): not run: its state file cannot be "
                                  "written, so the death could not be told only once")  # fmt: skip
            return
        from guardian.commands import run_command

        env = {
            **self.env(),
            "GUARDIAN_TARGET": self.target.name,
            "GUARDIAN_ACTION": event,
            "GUARDIAN_REASON": shorten(reason),  # the kernel limits what exec passes
            "GUARDIAN_PID": "" if pid is None else str(pid),
        }
        # Within what is left of the target's time, keeping a moment to write the record.
        left = self.run.remaining()
        limit = max(0.1, min(self.target.hooks.timeout, max(left - 1 - before, left / 4)))
        try:
            with self.run.aside(f"running its hook {argv[0]}"):
                result = run_command(argv, timeout=limit, env=env)
        except (Interrupted, RunTimeout) as cut:
            # The hook is ended (run_command kills it); the action it was told about
            # happened, and its record must still be written: the run stops after it.
            self.cut = cut
            why = "guardian's time ran out" if isinstance(cut, RunTimeout) else (
                f"guardian got {signal.Signals(cut.signum).name}")  # fmt: skip
            self.hooks_ran.append(f"{hook} ({event}): {argv[0]}: cut short ({why}); killed")
            return
        if result.status is None:
            what = f"still running after {limit:g}s; killed"
        else:
            last = f": {result.output[-1]}" if result.output and result.status else ""
            lingering = "; something it started still holds its output" if result.lingering \
                else ""  # fmt: skip
            what = f"exited {result.status}{last}{lingering}"
        self.hooks_ran.append(f"{hook} ({event}): {argv[0]}: {what}")

    # --- by hand ---

    def by_hand(self, what: str, hold: holds.Hold | None = None) -> AuditRecord:
        """``guardian stop`` (holding it: ``hold``), ``start``, ``restart`` or ``reset``:
        under the lock, waiting for it."""
        # Another run may hold the lock for a while (a start under way): wait for it, but
        # leave time to do the job once it is ours.
        wait = max(0.0, self.run.remaining() - self.target.stop_timeout - 5)
        return self.locked(lambda: self._by_hand(what, hold), wait=wait)

    def _release(self) -> str:
        """``start`` and ``restart``: the hold goes first; what the record says of it."""
        try:
            hold = holds.read(self.settings.state_dir, self.target.name)
        except holds.HoldError as e:
            hold, unbelieved = None, str(e)
        else:
            unbelieved = ""
        try:
            if not holds.release(self.settings.state_dir, self.target.name):
                return ""
        except OSError as e:
            if unbelieved:  # no check believes it either: it holds nothing down
                return f"; its hold file could not be removed ({e.strerror or e}), but no " \
                    f"check believes it ({unbelieved})"  # fmt: skip
            raise LaunchError(f"cannot remove its hold file: {e.strerror or e}") from None
        return f"; its hold released ({hold.describe()})" if hold is not None else \
            "; its hold file removed"  # fmt: skip

    def _by_hand(self, what: str, hold: holds.Hold | None) -> AuditRecord:
        self.load()
        if what == "reset":
            self.st = state.reset(self.st)
            self.save()
            return self.record("reset", "crash-loop history and probe failures cleared by hand")
        released = ""
        if what in ("start", "restart"):
            try:
                released = self._release()
            except LaunchError as e:  # still held: starting it would be undone by nothing,
                return self.record("error", f"{what} by hand: {e}; not started")  # but said
        elif what == "stop":
            if hold is None:  # pragma: no cover - a bug in the caller
                raise ValueError("a stop by hand always holds the target")
            # The hold first: from now on no check and no watcher starts it, so the stop
            # below is not undone in between. Without it, a stop would be undone within
            # the minute: then not stopped at all.
            try:
                holds.write(self.settings.state_dir, hold)
            except OSError as e:
                return self.record("error", f"stop by hand: cannot write its hold file "
                                   f"{holds.path_for(self.settings.state_dir, self.target.name)}"
                                   f": {e.strerror or e}; not stopped, as the next run would "
                                   "start it again")  # fmt: skip
        found = self.discover()
        if isinstance(found, Unsure):
            return self.record("error", f"{found.reason}{released}")
        how = "it was not running"
        if isinstance(found, Found):
            self.pid = self.old_pid = found.pid
            # Learn it first, so that what it leaves behind is known.
            self.st = state.seen_alive(self.st, found.pid, found.start_ticks, found.session,
                                       _seen(found), self.target.restart, found.exe)  # fmt: skip
            if what == "start":
                self.save()
                return self.record("ok", f"started by hand: already running, "
                                   f"{found.evidence}{released}")  # fmt: skip
            gone, how = self.stop(found)
            if not gone:
                return self.record("error", f"{what} by hand: {how}")
        orphans, said = self.leftovers()
        # Found dead (not stopped here): the death's outage ends in the hold (``report``).
        outage = self.outage(state.now()) if not isinstance(found, Found) else {}
        # Stopped by hand is not a crash: it must not count towards a crash loop.
        self.st = state.stopped_by_hand(self.st)
        if what == "stop" and hold is not None:
            self.save()
            return self.record("held", f"stopped by hand: {how}{said}; {hold.describe()}",
                               orphans=orphans, hold=hold.to_dict(), **outage)  # fmt: skip
        self.pid = None
        verb = "started" if what == "start" else "restarted"
        return self.start("restarted" if what == "restart" else "started",
                          f"{verb} by hand: {how}{said}{released}", counts=False,
                          orphans=orphans, by_hand=True)  # fmt: skip


def run_check(
    config: Config, targets: tuple[Target, ...], run: Run, *, lock_wait: float = 0.0
) -> RunResult:
    """Check every target, within the run's time.

    A target whose own program cannot be run is not checked (it could be neither
    started nor found), and says so. A missing probe or hook program is said, and
    the target checked all the same, without that probe (its health unjudged by
    it: a probe that cannot run says nothing of the target, and counting it as
    failing would restart a healthy supervisord every few minutes). Either way
    the others are checked: one uninstalled program must not keep anything down.

    Several targets: each gets a first look in turn (milliseconds for a healthy
    one); those that need acting or probing are then seen to side by side, each
    in a worker of its own with the whole of the run's time left, so twenty cold
    starts take about as long as one.
    """
    later: list[Target] = []
    parallel = run.sink is not None and not run.dry_run and len(targets) > 1

    def job(target: Target) -> AuditRecord | None:
        for key, problem in target.problems:
            if key.endswith(".health.command"):
                target = target._replace(health=target.health._replace(command=None))
                also = "the probe is not run until it is fixed"
            elif key.rsplit(".", 1)[-1].startswith("on_"):
                also = "the hook cannot run until it is fixed"
            else:
                guard = Guard(run, target, config.settings)
                guard.result = guard.record("error", f"{CONFIG_ERROR}{problem}; not checked "
                                            "until it is fixed")  # fmt: skip
                return guard.result
            run.emit(AuditRecord(target.name, "warning", f"{CONFIG_ERROR}{problem}; {also}"))
        guard = Guard(run, target, config.settings)
        guard.lock_wait = lock_wait
        guard.first_look = parallel
        try:
            guard.result = record = guard.check()
        except Later:
            later.append(target)  # (as fixed above: without a probe that cannot run)
            return None
        return record

    result = run.execute(targets, job)
    if not later:
        return result
    left = tuple(later)  # left to workers
    cut = result.interrupted
    try:
        if cut is None and (run.deadline is None or not run.deadline.over()):
            done = in_workers(config, left, run, lock_wait=lock_wait)
            return done._replace(timed_out=done.timed_out or result.timed_out)
    except Interrupted as stop:  # before a worker was forked (its own handling begins then)
        cut = stop.signum
    except RunTimeout:
        pass
    # Never reached a worker: each still has its record.
    if cut is not None:
        _unreached(run, left, "interrupted", f"guardian got {signal.Signals(cut).name}")
    else:
        _unreached(run, left, "timeout", f"{run.limit_named()} ran out")
    return RunResult(tuple(run.records), cut is None, cut, run.trouble)


def _unreached(run: Run, targets: tuple[Target, ...], why: Action, cause: str) -> None:
    """The records of targets with none yet (their check never began, or a signal cut the
    run as their workers' records came in), whatever arrives meanwhile."""
    with deadline.critical():
        done = {r.target for r in run.records if r.action != "warning"}
        for t in targets:
            if t.name not in done:
                run.emit(AuditRecord(t.name, why, f"not checked: {cause}"))


def checkable(target: Target) -> Target | None:
    """``target`` as a check sees to it: without a probe whose program is missing; None
    when its own program is (it can be neither started nor found). ``run_check`` says
    which; a watcher, after the check, leaves such a target to the next one."""
    for key, _ in target.problems:
        if key.endswith(".health.command"):
            target = target._replace(health=target.health._replace(command=None))
        elif not key.rsplit(".", 1)[-1].startswith("on_"):
            return None
    return target


def in_workers(
    config: Config, targets: tuple[Target, ...], run: Run, *, lock_wait: float = 0.0
) -> RunResult:
    """Check ``targets`` side by side, each in a worker, within what is left of the run."""
    from guardian import workers

    sink = run.sink
    if sink is None or run.deadline is None:  # pragma: no cover - a bug in the caller
        raise RuntimeError("in_workers() needs a run with a sink, inside Run.armed()")
    # Each worker's time ends a moment before the run's (counted from the run's clock, not
    # from its own start: the last of fifty is forked a while after the first).
    end = run.deadline.end - workers.MARGIN
    started: list[workers.Worker] = []

    def show(record: AuditRecord) -> None:
        run.records.append(record)
        sink.show(record)

    interrupted: int | None = None
    timed_out = False
    try:
        # Forking a hundred takes a while: a signal or the run's end may come meanwhile.
        for t in targets:
            run.step(f"starting a worker for {t.name}")
            body = worker_check(config, t, run, sink, end, lock_wait)
            with deadline.critical():  # forked is counted: a signal waits for the append
                started.append(workers.spawn(t.name, body))
        run.step(f"waiting for {len(started)} workers")
        workers.wait(started, show, run.deadline.end)
    except Interrupted as stop:
        interrupted = stop.signum
        with deadline.critical():
            workers.stop_all(started, stop.signum, show)
    except RunTimeout:
        timed_out = True
    # What follows is one step, whatever arrives meanwhile (a second signal waits for
    # it): those never reached have their records, and every worker is reaped.
    with deadline.critical():
        why: Action = "interrupted" if interrupted is not None else "timeout"
        cause = f"guardian got {signal.Signals(interrupted).name}" if interrupted is not None \
            else f"{run.limit_named()} ran out"  # fmt: skip
        for t in targets[len(started) :]:
            run.emit(AuditRecord(t.name, why, f"not checked: {cause}"))
        if not all(w.done for w in started):  # the run's time is up: theirs was, a moment ago
            timed_out = True
            with deadline.critical():
                workers.finish(started, show, run.deadline.end)
        codes = []
        for worker in started:
            if worker.status is None:
                worker.signal(signal.SIGKILL)
                worker.reap(1.0)
            codes.append(worker.status)
            if (text := workers.unrecorded(worker)) is not None:
                with deadline.critical():
                    if interrupted is not None and worker.status == 128 + interrupted:
                        # Passed on before the worker had armed its own handling: ended by it.
                        said = f"guardian got {signal.Signals(interrupted).name} as it began"
                        run.emit(AuditRecord(worker.target, "interrupted", f"{said}; {text}"))
                    else:
                        run.emit(AuditRecord(worker.target, "error", text))
                        run.trouble = True
    return RunResult(
        tuple(run.records),
        timed_out or any(c == 124 for c in codes),
        interrupted,
        run.trouble or any(map(workers.troubled, started)),
    )


def worker_check(
    config: Config,
    target: Target,
    parent: Run,
    sink: Sink,
    end: float,
    lock_wait: float | None = None,
    alive_until: tuple[int, int, float] | None = None,
    limit_words: str | None = None,
) -> Callable[[Callable[[AuditRecord], None]], int]:
    """What a worker does: a check of ``target`` alone, as a run of its own, until ``end``
    (monotonic: every process's clock); its exit code. ``lock_wait``: how long it waits for
    the target's lock (default: all its time; it has nothing else to do)."""

    def body(send: Callable[[AuditRecord], None]) -> int:
        def emit(record: AuditRecord) -> None:
            sink.log(record)
            send(record)

        run = Run(dry_run=False, emit=emit, say=parent.say)
        run.limit_words = limit_words or (
            f"guardian's own timeout of {parent.deadline.seconds:g}s" if parent.deadline else None
        )

        seconds = max(0.1, end - time.monotonic())

        def job(t: Target) -> AuditRecord:
            guard = Guard(run, t, config.settings)
            guard.lock_wait = max(0.0, seconds - 1.0) if lock_wait is None else lock_wait
            guard.alive_until = alive_until
            guard.result = record = guard.check()
            return record

        try:
            with run.armed(seconds):
                result = run.execute((target,), job)
        except RunTimeout:
            return EXIT_TIMEOUT
        except Interrupted as stop:
            return 128 + stop.signum
        if result.interrupted is not None:
            return 128 + result.interrupted
        if result.timed_out:
            return EXIT_TIMEOUT
        return EXIT_INTERNAL if result.trouble or sink.failed else 0

    return body


def by_hand(
    what: str, config: Config, target: Target, run: Run, hold: holds.Hold | None = None
) -> RunResult:
    """``guardian stop`` (``hold``: and hold it), ``start``, ``restart`` or ``reset`` for
    one target: under its lock, time-boxed."""

    def job(target: Target) -> AuditRecord:
        guard = Guard(run, target, config.settings)
        guard.result = record = guard.by_hand(what, hold)
        return record

    return run.execute((target,), job)

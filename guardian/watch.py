"""``guardian check --watch D``: after its check, a run keeps watching for D, then exits.

Cron's smallest step is a minute; a watcher notices a target's exit within a
millisecond, through a pidfd, and has it restarted at once. Nothing resident:
cron starts a fresh guardian every minute, and each watches until the next
one has taken over.

One loop for every target. The loop itself only waits and looks (a pidfile,
a few /proc reads); whatever takes time (a start, a stop, a probe round) is
done by a worker (``guardian.workers``) running the very check a cron run
does, so identity, the crash-loop rules, holds, orphans, hooks and records
are the same, and one target's start never delays noticing another's death.

Per target, a watcher holds the lock ``<name>.watch`` for as long as it
watches: never two watchers for one target. A run that finds it held waits
for it (trying every 20 ms) and then watches in turn: the watcher before it
is still watching meanwhile, so the hand-over leaves no gap. It writes who
it is into that lock file, for ``guardian status``. It does not hold the
target's own lock while it watches, only while a worker acts, so ``guardian
stop``, ``start`` and ``restart`` work at once; they leave a hold, or a new
process, which the watcher sees before acting.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from guardian import deadline, holds, locking, proc, state
from guardian.audit import AuditRecord
from guardian.check import checkable, worker_check
from guardian.config import Config, Target
from guardian.discovery import Found, Matcher, Missing, discover, inspect
from guardian.errors import RunTimeout
from guardian.files import open_regular
from guardian.run import ASIDES, RUNNING, Interrupted, Run, RunResult, Sink
from guardian.workers import MARGIN, Worker, finish, spawn, stop_all, troubled, unrecorded

LOCK_POLL = 0.02  # waiting for the watcher before: how often its lock is tried
PROC_POLL = 0.1  # without pidfds: how often /proc is looked at
HOLD_POLL = 1.0  # a held target: how often its hold is looked at
HOLDER_EVERY = 0.5  # waiting: how often the lock file is read for who holds it
# After a worker left the target down (start failed, two copies found...), the next
# try waits this long, then longer, unless the crash-loop rules say exactly when.
RETRY = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def _wall(seconds_from_now: float = 0.0) -> str:
    when = datetime.fromtimestamp(time.time() + seconds_from_now, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _pidfd_open(pid: int) -> int:
    if os.environ.get("GUARDIAN_NO_PIDFD"):  # the /proc fallback, on demand (tests, old kernels)
        raise OSError(errno.ENOSYS, "pidfds turned off by GUARDIAN_NO_PIDFD")
    return os.pidfd_open(pid)


class _Watched:
    """One target in the loop."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.lock: locking.Lock | None = None
        self.waiter: locking.Waiter | None = None  # trying the watch lock meanwhile
        self.never_locked = True
        self.holder = ""  # who holds the watch lock this run waits for
        self.holder_read = -HOLDER_EVERY  # when that was last read (monotonic)
        self.waited = 0.0  # how long it waited for the watcher before it
        self.pin: tuple[int, int] | None = None  # (pid, start ticks) being watched
        self.pidfd: int | None = None
        self.worker: Worker | None = None
        self.due: float | None = None  # when to look again (monotonic)
        self.probe_due: float | None = None
        self.tried: float | None = None  # when a worker last left it down
        self.retries = 0
        self.deaths = 0
        self.workers = 0
        self.no_pidfd = ""  # why pidfds cannot be used (said once, in the end record)
        self.problem = ""  # why it could not be watched


class Watcher:
    """The loop of one watch run."""

    def __init__(self, config: Config, targets: tuple[Target, ...], run: Run, sink: Sink) -> None:
        self.config = config
        self.settings = config.settings
        self.run = run
        self.sink = sink
        self.watched = [_Watched(t) for t in targets]
        self.failed: list[AuditRecord] = []
        self.hard_end = 0.0
        self.end = 0.0
        self.poller = select.poll()
        self.by_fd: dict[int, tuple[str, _Watched]] = {}
        me = proc.stat(os.getpid())
        self.my_ticks = me.start_ticks if me is not None else 0
        # Called after each action (a worker's end): the metrics file and the ping.
        self.after: Callable[[], None] | None = None
        # Called once it holds a watch lock it did not (it began to watch, or took over from
        # the watcher before it): the metrics file, which says who watches.
        self.locked: Callable[[], None] | None = None
        self.took = False  # a watch lock was taken in this turn of the loop

    # --- the watch lock ---

    @staticmethod
    def _busy(w: _Watched) -> bool:
        return w.worker is not None

    def _try_lock(self, w: _Watched, now: float, began: float) -> bool:
        """Take ``w``'s watch lock if it is free now; whether it is ours."""
        name = f"{w.target.name}.watch"
        if w.waiter is None:
            w.waiter = locking.Waiter(self.settings.lock_dir, name)
        try:
            lock = w.waiter.attempt()
        except locking.LockError as e:
            w.waiter.close()
            w.problem = f"cannot take its watch lock: {e}"
            w.never_locked = False
            self.run.warn(w.target, f"not watched: {e}")  # (exit 3: it needs looking at)
            return False
        if lock is None:
            if now < w.holder_read + HOLDER_EVERY:
                return False
            w.holder_read = now
            w.holder, ticks = _holder(locking.lock_path(self.settings.lock_dir, name))
            if ticks is not None and ticks > self.my_ticks:
                # A run started after this one holds it (both waited; it won): it watches
                # longer than this one would, so this one has nothing left to wait for.
                w.never_locked = False
                w.problem = f"a later run ({w.holder}) took the watch over while this one waited"
                w.waiter.close()
            return False
        w.lock, w.never_locked = lock, False
        w.waited = now - began
        info = {"pid": os.getpid(), "start_ticks": self.my_ticks,
                "since": _wall(), "until": _wall(self.end - now)}  # fmt: skip
        with contextlib.suppress(OSError):  # read-only: status cannot tell, nothing else
            os.ftruncate(lock.fd, 0)
            os.pwrite(lock.fd, (json.dumps(info) + "\n").encode(), 0)
        w.due = now  # look at once: it may have died since the watcher before let go
        self.took = True
        return True

    # --- looking (read-only, milliseconds) ---

    def _look(self, w: _Watched, now: float) -> None:
        """Where the target stands: watch it, wait (a hold, a backoff), or have it seen to."""
        w.due = None
        target = w.target
        try:
            hold = holds.read(self.settings.state_dir, target.name)
        except holds.HoldError:
            hold = None  # a worker says so, and acts as if there were none
        if hold is not None and not hold.expired():
            self._unpin(w)
            w.due = now + HOLD_POLL
            return
        store = state.Store(state.path_for(self.settings.state_dir, target.name))
        st = store.load()
        # By its pidfile, or as the process guardian remembers; never a scan of the process
        # table here (a worker scans, under the lock, if it must: once).
        matcher = Matcher.for_target(target)
        found = discover(target, remembered=state.remembered(st), matcher=matcher,
                         allow_scan=False)  # fmt: skip
        if isinstance(found, Found):
            if self._pin(w, found, now, matcher):
                w.retries, w.tried = 0, None
                if target.health.any and w.probe_due is None:
                    w.probe_due = now + target.health.interval
            return
        self._unpin(w)
        if isinstance(found, Missing):
            t = state.now()
            verdict = state.decide(state.seen_dead(st, t, target.restart), t, target.restart)
            # (A give-up not yet recorded is a worker's to record, and to tell on_give_up.)
            if verdict.action == "backoff" and verdict.next_try is not None:
                # Exactly when the rules allow it, not a cron interval later.
                w.due = now + max(0.0, verdict.next_try - t)
                return
        if w.tried is not None:  # a worker left it down just now: not again at once
            wait = RETRY[min(w.retries, len(RETRY) - 1)]
            if now < w.tried + wait:
                w.due = w.tried + wait
                return
            w.retries += 1
        self._start_worker(w, now)

    def _pin(self, w: _Watched, found: Found, now: float, matcher: Matcher) -> bool:
        """Watch ``found``: open its pidfd first, then check it is still the target, so
        the pidfd holds the very process that was checked (not one that reused its pid).
        ``matcher``: the one that found it (it knows the process guardian remembers, whose
        program's symlink may have moved since: a fresh one would call it an impostor,
        and the loop would look again and again, at full speed)."""
        if w.pin == (found.pid, found.start_ticks):
            return True
        self._unpin(w)
        fd = None
        if not w.no_pidfd:
            try:
                fd = _pidfd_open(found.pid)
            except OSError as e:
                if e.errno == errno.ESRCH:  # gone already: look again at once
                    w.due = now
                    return False
                w.no_pidfd = f"pidfd_open: {e.strerror or e}"
        seen = inspect(found.pid, matcher)
        if not isinstance(seen, Found) or seen.start_ticks != found.start_ticks:
            if fd is not None:
                os.close(fd)
            w.due = now + LOCK_POLL  # it changed while we looked: look again (not a spin)
            return False
        w.pin = (found.pid, found.start_ticks)
        if fd is not None:
            w.pidfd = fd
            self.by_fd[fd] = ("pidfd", w)
            self.poller.register(fd, select.POLLIN)
        return True

    def _unpin(self, w: _Watched) -> None:
        if w.pidfd is not None:
            self.poller.unregister(w.pidfd)
            del self.by_fd[w.pidfd]
            os.close(w.pidfd)
        w.pin, w.pidfd = None, None

    # --- acting: in a worker ---

    def _start_worker(
        self, w: _Watched, now: float, alive_until: tuple[int, int, float] | None = None
    ) -> None:
        # Its own time: the config's timeout, within what is left of the run. It waits for
        # the target's lock as long as it must: a stop or a restart by hand may be under way.
        end = min(now + self.settings.timeout, self.hard_end - MARGIN)
        if end - now < 0.5:
            return
        if w.lock is None or not w.lock.still_held():  # deleted or replaced: another may watch
            self._give_up(w, "its watch lock file was deleted or replaced while it watched, "
                          "so another watcher may be watching it")  # fmt: skip
            return
        words = f"guardian's own timeout of {self.settings.timeout:g}s (for one action in a watch)"
        body = worker_check(self.config, w.target, self.run, self.sink, end, None,
                             alive_until, words)  # fmt: skip
        # Its own locks only: not the watch locks held or tried here (a flock belongs to
        # the open file, which a worker would keep after this watcher let it go).
        locks = [x.lock.fd for x in self.watched if x.lock is not None]
        locks += [x.waiter.fd for x in self.watched if x.waiter and x.waiter.fd is not None]
        w.worker = spawn(w.target.name, body, close=locks)
        w.workers += 1
        self.by_fd[w.worker.fd] = ("worker", w)
        self.poller.register(w.worker.fd, select.POLLIN)

    def _give_up(self, w: _Watched, why: str) -> None:
        """Stop watching ``w`` (said in a warning): the next cron run looks at it anew."""
        self._unpin(w)
        if w.lock is not None:
            w.lock.release()
            w.lock = None
        w.problem, w.due, w.probe_due = why, None, None
        self.run.warn(w.target, f"not watched any more: {why}")

    def _show(self, record: AuditRecord) -> None:
        self.sink.show(record)
        if record.action not in RUNNING and record.action not in ASIDES:
            self.failed.append(record)  # what the exit code must say (not all: memory)

    def _worker_news(self, w: _Watched, now: float) -> None:
        worker = w.worker
        if worker is None:  # pragma: no cover - registered only while there is one
            return
        for record in worker.read():
            self._show(record)
        if not worker.eof:
            return
        self.poller.unregister(worker.fd)
        del self.by_fd[worker.fd]
        worker.reap()
        if (text := unrecorded(worker)) is not None:
            self.run.emit(AuditRecord(w.target.name, "error", text))
        self.run.trouble = self.run.trouble or text is not None or troubled(worker)
        w.worker = None
        w.tried = now
        if w.target.health.any:
            w.probe_due = now + w.target.health.interval
        self._look(w, now)
        if self.after is not None:
            self.after()

    def _died(self, w: _Watched, now: float) -> None:
        w.deaths += 1
        # Alive until now: what the crash-loop rules count its life by (young or not).
        until = (*w.pin, state.now()) if w.pin is not None else None
        self._unpin(w)
        if w.worker is None:
            w.tried = None  # a death is acted on at once (the crash-loop rules still apply)
            self._start_worker(w, now, until)
        # else: the worker (a probe round) finds it dead itself; looked at once it ends

    # --- the loop ---

    def watch(self, seconds: float) -> None:
        began = time.monotonic()
        self.end = began + seconds
        while (now := time.monotonic()) < self.end:
            if all(w.lock is None and not w.never_locked for w in self.watched):
                return  # nothing (any more) to watch: another run watches them all
            waits = [self.end]
            for w in self.watched:
                waits += self._tick(w, now, began)
            if self.took:
                self.took = False
                if self.locked is not None:
                    self.locked()
            self.run.step("watching")
            timeout = max(0.0, min(waits) - time.monotonic())
            for fd, _ in self.poller.poll(timeout * 1000 + 0.5):
                if fd not in self.by_fd:  # pragma: no cover - unregistered just before
                    continue
                kind, watched = self.by_fd[fd]
                if kind == "pidfd" and watched.pidfd == fd:
                    self._died(watched, time.monotonic())
                elif kind == "worker":
                    self._worker_news(watched, time.monotonic())

    def _tick(self, w: _Watched, now: float, began: float) -> list[float]:
        """What is due for ``w`` now; when it next needs the loop."""
        if w.lock is None:
            if not w.never_locked:
                return []  # could not be watched at all (said)
            if not self._try_lock(w, now, began):
                # Still waiting: try again soon. Given up: the loop looks again at once
                # (with nothing left to watch, the run ends).
                return [now + LOCK_POLL] if w.never_locked else [now]
        if w.worker is not None:
            return []  # its end wakes the loop
        if w.due is not None and w.due <= now:
            self._look(w, now)
        elif w.pin is not None and w.probe_due is not None and w.probe_due <= now:
            w.probe_due = None
            self._start_worker(w, now)
        if self._busy(w):
            return []
        waits = [x for x in (w.due, w.probe_due if w.pin is not None else None) if x is not None]
        if w.pin is not None and w.pidfd is None:  # no pidfd: /proc, every 100 ms
            if proc.is_alive(*w.pin):
                waits.append(now + PROC_POLL)
            else:
                self._died(w, now)
                waits.append(now)
        return waits

    def release(self) -> None:
        """Let the next watcher take over (at once: it is waiting)."""
        for w in self.watched:
            if w.waiter is not None:
                w.waiter.close()
            self._unpin(w)
            if w.lock is not None:
                w.lock.release()
                w.lock = None

    def workers(self) -> list[Worker]:
        return [w.worker for w in self.watched if w.worker is not None]

    def ended(self, w: _Watched, elapsed: float, how: str, pid: int | None) -> AuditRecord:
        if w.problem:
            text = f"{how}; not watched: {w.problem}"
        elif w.never_locked:
            who = f" ({w.holder})" if w.holder else ""
            text = (f"{how}; not watched: the watcher before it{who} held its watch lock "
                    "throughout")  # fmt: skip
        else:
            waited = f"; waited {w.waited:.2f}s for the watcher before it ({w.holder})" \
                if w.holder else ""  # fmt: skip
            means = f"polling /proc every {PROC_POLL * 1000:.0f} ms ({w.no_pidfd})" \
                if w.no_pidfd else "pidfd"  # fmt: skip
            text = (f"{how} after {elapsed:.1f}s, watching through {means}{waited}: "
                    f"{w.deaths} exit(s) noticed, {w.workers} worker run(s)")  # fmt: skip
        return AuditRecord(w.target.name, "watch_ended", text, pid=pid)


def _holder(path: Path) -> tuple[str, int | None]:
    """Who holds a watch lock, as its file says: in words, and when it started (its start
    ticks). For the record, and to let a later watcher be; never to signal anything."""
    try:
        fd = open_regular(path)
        try:
            info = json.loads(os.read(fd, 4096))
        finally:
            os.close(fd)
        ticks = info["start_ticks"]
        return f"pid {int(info['pid'])}", ticks if type(ticks) is int else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "", None


def watch(
    config: Config,
    targets: tuple[Target, ...],
    run: Run,
    checked: RunResult,
    seconds: float,
    *,
    after: Callable[[], None] | None = None,
    locked: Callable[[], None] | None = None,
) -> RunResult:
    """Watch ``targets`` for ``seconds`` after the check that gave ``checked``: ``after`` is
    called after each action, ``locked`` once it holds watch locks it did not before."""
    sink = run.sink
    if sink is None or run.deadline is None:  # pragma: no cover - a bug in the caller
        raise RuntimeError("watch() needs a run with a sink, inside Run.armed()")
    if checked.interrupted is not None:
        return checked
    # The hard limit: the watch, and the config's timeout after it for a last action.
    run.deadline.limit(run.deadline.seconds + seconds)
    usable = tuple(t for t in map(checkable, targets) if t is not None)
    watcher = Watcher(config, usable, run, sink)
    watcher.hard_end = run.deadline.end
    watcher.after, watcher.locked = after, locked
    began = time.monotonic()
    how, interrupted, timed_out = "ended", None, checked.timed_out
    try:
        watcher.watch(seconds)
    except Interrupted as stop:
        interrupted = stop.signum
        how = f"ended early: guardian got {signal.Signals(stop.signum).name}"
    except RunTimeout:
        timed_out = True
        how = "ended early: guardian's own time ran out"
    with deadline.critical():
        ends = [w.pin[0] if w.pin else None for w in watcher.watched]
        watcher.release()  # first: the next watcher is waiting for it
        live = watcher.workers()
        if interrupted is not None:
            stop_all(live, interrupted, watcher._show)
        else:  # a start under way is let finish, within its own time (bounded: MARGIN)
            finish(live, watcher._show, watcher.hard_end - MARGIN)
        elapsed = time.monotonic() - began
        for w, ended in zip(watcher.watched, ends, strict=True):
            run.emit(watcher.ended(w, elapsed, how, ended))
    records = (*run.records, *watcher.failed)
    return RunResult(records, timed_out, interrupted, checked.trouble or run.trouble)

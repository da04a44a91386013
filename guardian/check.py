"""One guard cycle: find, decide, and (under the target's lock) act.

A healthy target without health probes costs a pidfile read, a few small
/proc reads and its state file: no lock, no process-table scan, no filelock,
psutil or subprocess import. Anything else is decided again under the lock,
so that of several overlapping runs exactly one acts and the others see
what it did.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime

from guardian import locking, state
from guardian.audit import AuditRecord
from guardian.config import Config, Target
from guardian.discovery import Found, Matcher, Missing, Unsure, discover, proc_stat
from guardian.errors import LaunchError
from guardian.run import Job, Recorder, Run, RunResult, execute


def _wall(boottime: float | None) -> str | None:
    if boottime is None:
        return None
    when = time.time() + (boottime - state.now())
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _current(found: Found, *, ready: bool = True) -> state.Current:
    """``found`` as the state file remembers it: identity, and whether it leads a session."""
    stat = proc_stat(found.pid)
    leader = stat is not None and stat.session == found.pid
    return state.Current(found.pid, found.start_ticks, leader, ready)


def _stop(target: Target, run: Run, found: Found) -> tuple[bool, str]:
    """Stop ``found`` as the target says; whether it is gone, and how it ended."""
    from guardian.launch import stop

    if run.current is not None:
        run.current.doing = f"stopping pid {found.pid}"
    wait = min(target.stop_timeout, run.remaining() / 2)
    return stop(found.pid, found.start_ticks, target.stop_signal, wait, Matcher(target.match))


def check_target(target: Target, run: Run) -> AuditRecord:
    record = run.current = Recorder(target, run.dry_run)
    store = run.store(target)
    found = discover(target)
    if isinstance(found, Found):
        record.pid = found.pid
        if found.via == "pidfile":
            return _running(target, run, store, found, record)
    else:
        record.old_pid = found.old_pid
    if run.dry_run:
        return _dry_run(found, record)
    return _locked(target, run, record, lambda: _act(target, run, store, record))


def _locked(
    target: Target, run: Run, record: Recorder, act: Callable[[], AuditRecord]
) -> AuditRecord:
    record.doing = "taking its lock"
    lock_dir = run.config.settings.lock_dir
    try:
        with locking.hold(lock_dir, target.name) as locked:
            if locked != locking.lock_path(lock_dir, target.name):
                run.warn(target, f"lock file not writable; locked {locked} instead")
            return act()
    except locking.Busy as busy:
        return record("skipped", f"another guardian holds its lock, {busy}, and is seeing to it")


def _dry_run(found: Found | Missing | Unsure, record: Recorder) -> AuditRecord:
    if isinstance(found, Found):
        return record("ok", f"would adopt: {found.evidence}")
    if isinstance(found, Unsure):
        return record("error", found.reason)
    return record("would_start", found.reason)


def _running(
    target: Target, run: Run, store: state.Store, found: Found, record: Recorder
) -> AuditRecord:
    """Alive by its pidfile: learn from it, and probe it if it has probes."""
    now = state.now()
    st = state.seen_alive(
        run.load(target, store), found.pid, found.start_ticks, now, target.restart
    )
    if target.health.any and not run.dry_run:
        from guardian import probes

        record.doing = "probing its health"
        failed = probes.run(target.health, env=dict(target.env), remaining=run.remaining())
        if failed:
            st = st._replace(probe_failures=st.probe_failures + 1)
            run.save(target, store, st)
            details = tuple(map(str, failed))
            count = f"{st.probe_failures} of {target.health.failures} failing runs"
            if st.probe_failures < target.health.failures:
                return record("unhealthy", f"{'; '.join(details)} ({count})", probes=details)
            why = f"{'; '.join(details)} ({count})"
            return _locked(
                target,
                run,
                record,
                lambda: _restart_unhealthy(target, run, store, found, record, why),
            )
        st = st._replace(probe_failures=0)
    run.save(target, store, st)
    return record("ok", f"running: {found.evidence}")


def _act(target: Target, run: Run, store: state.Store, record: Recorder) -> AuditRecord:
    """Under the lock: look again (another run may have acted), then adopt or start."""
    found = discover(target)
    st = run.load(target, store)
    if isinstance(found, Found):
        record.pid = found.pid
        if found.via == "pidfile":
            return record("ok", f"running (found after taking the lock): {found.evidence}")
        return _adopt(target, run, store, st, found, record)
    record.pid, record.old_pid = None, found.old_pid
    if isinstance(found, Unsure):
        return record("error", found.reason)

    now = state.now()
    verdict = state.decide(state.seen_dead(st, now), now, target.restart)
    if verdict.action != "start":
        run.save(target, store, verdict.state)
        return _held_back(target, run, record, verdict, found.reason)
    orphans = _orphans(target, run, verdict.state, record)
    return _start(target, run, store, verdict.state, record, "started", found.reason, orphans)


def _held_back(
    target: Target, run: Run, record: Recorder, verdict: state.Verdict, found: str
) -> AuditRecord:
    next_try = _wall(verdict.next_try)
    if verdict.action == "gave_up":
        text = f"{found}; {verdict.reason}: not starting it again before {next_try}"
        hooks = _hooks(target, run, target.hooks.on_give_up, "gave_up", text, None)
        return record("gave_up", text, next_try=next_try, hooks=hooks)
    return record(
        "backoff", f"{found}; {verdict.reason}; next try at {next_try}", next_try=next_try
    )


def _adopt(
    target: Target,
    run: Run,
    store: state.Store,
    st: state.State,
    found: Found,
    record: Recorder,
) -> AuditRecord:
    from guardian.launch import write_pidfile

    adopted = st._replace(current=_current(found), stable=False, dead_since=None)
    run.save(target, store, state.seen_alive(adopted, found.pid, found.start_ticks, state.now(),
                                             target.restart))  # fmt: skip
    if target.daemonizes:  # the pidfile is the target's own: not ours to write
        return record("adopted", found.evidence)
    try:
        write_pidfile(target.pidfile, found.pid)
    except OSError as e:
        error = f"cannot write pidfile {target.pidfile}: {e.strerror or e}"
        return record("adopted", f"{found.evidence}; pidfile not rewritten", error=error)
    return record("adopted", f"{found.evidence}; pidfile {target.pidfile} rewritten")


def _orphans(target: Target, run: Run, st: state.State, record: Recorder) -> tuple[int, ...]:
    """What the last target left in its session; ended unless ``orphans = "keep"``."""
    from guardian.discovery import session_members
    from guardian.launch import end_members

    current = st.current
    if current is None or not current.session_leader:
        return ()
    leader = proc_stat(current.pid)
    if leader is not None and leader.state != "Z":
        # The pid is alive again: either the old target under another command line
        # (not ours to signal) or a new process that reused the id. Neither is debris.
        return ()
    members = session_members(current.pid, current.start_ticks)
    if members and target.orphans == "kill":
        record.doing = f"ending what pid {current.pid} left behind"
        end_members(members, target.stop_signal, min(target.stop_timeout, run.remaining() / 2))
    return tuple(m.pid for m in members)


def _start(
    target: Target,
    run: Run,
    store: state.Store,
    st: state.State,
    record: Recorder,
    action: str,
    reason: str,
    orphans: tuple[int, ...] = (),
) -> AuditRecord:
    from guardian.launch import start, tail, write_pidfile

    kept = "kept" if target.orphans == "keep" else "ended"
    if orphans:
        reason += f"; {kept} {len(orphans)} process(es) it left behind"
    record.doing = "starting it"
    warnings: list[str] = []
    began = state.now()
    try:
        launch = run.launch = start(target, warnings)
    except LaunchError as e:
        # A start that never ran (exec failed): pid 0, never ready, so it counts as dying young.
        run.save(target, store, state.started(st, began, state.Current(0, 0, False, False)))
        hooks = _hooks(target, run, target.hooks.on_failure, "start_failed", str(e), None)
        return record("start_failed", reason, error=str(e), orphans=orphans, hooks=hooks)
    for text in warnings:
        run.warn(target, text)
    record.pid = pid = launch.proc.pid
    error = None
    if not target.daemonizes:
        try:
            write_pidfile(target.pidfile, pid)
        except OSError as e:  # started all the same: the next run finds it by its command line
            error = f"cannot write pidfile {target.pidfile}: {e.strerror or e}"
            run.warn(target, error)
    try:
        record.doing = f"waiting for pid {pid} to become ready"
        ready = launch.wait_ready()
    except LaunchError as e:
        record.doing = f"ending pid {pid}, which did not become ready"
        run.end_launch(wait=2.0)
        failed = state.Current(pid, launch.since_ticks, True, ready=False)
        run.save(target, store, state.started(st, began, failed))
        hooks = _hooks(target, run, target.hooks.on_failure, "start_failed", str(e), pid)
        tail_lines = tuple(tail(target.output))
        return record("start_failed", reason, error=str(e), output_tail=tail_lines,
                      orphans=orphans, hooks=hooks)  # fmt: skip
    run.launch = None
    launch.reap()
    found = ready.found
    run.save(target, store, state.started(st, began, _current(found)))
    record.pid = found.pid
    text = f"{reason}; ready after {ready.seconds:.1f}s"
    hooks = _hooks(target, run, target.hooks.on_start, action, text, found.pid)
    return record(action, text, error=error, orphans=orphans, hooks=hooks)


def _restart_unhealthy(
    target: Target,
    run: Run,
    store: state.Store,
    found: Found,
    record: Recorder,
    why: str,
) -> AuditRecord:
    """Under the lock: the same process still there and still failing: stop it, start anew."""
    again = discover(target)
    if not isinstance(again, Found) or again[:2] != found[:2]:
        return record("ok", f"changed while it was probed, so left alone: {why}")
    now = state.now()
    st = run.load(target, store)
    verdict = state.decide(st, now, target.restart)
    if verdict.action != "start":
        run.save(target, store, verdict.state)
        return _held_back(target, run, record, verdict, f"unhealthy: {why}")
    record.old_pid = found.pid
    gone, how = _stop(target, run, found)
    if not gone:
        return record("error", f"unhealthy: {why}; {how}; not starting another copy")
    st = verdict.state._replace(probe_failures=0)
    orphans = _orphans(target, run, st, record)
    return _start(target, run, store, st, record, "restarted_unhealthy",
                  f"unhealthy: {why}; {how}", orphans)  # fmt: skip


def _hooks(
    target: Target, run: Run, argv: tuple[str, ...] | None, action: str, reason: str,
    pid: int | None,
) -> tuple[str, ...]:  # fmt: skip
    """Run a hook after the action it is about; whatever it does is only recorded."""
    if argv is None:
        return ()
    from guardian.launch import run_command

    env = {
        **target.env,
        "GUARDIAN_TARGET": target.name,
        "GUARDIAN_ACTION": action,
        "GUARDIAN_REASON": reason,
        "GUARDIAN_PID": "" if pid is None else str(pid),
    }
    limit = min(target.hooks.timeout, max(0.5, run.remaining() - 2))
    result = run_command(argv, timeout=limit, env=env)
    if result.status is None:
        return (f"{argv[0]}: still running after {limit:g}s; killed",)
    last = f": {result.output[-1]}" if result.output and result.status else ""
    return (f"{argv[0]}: exited {result.status}{last}",)


def run_check(
    config: Config,
    targets: tuple[Target, ...],
    *,
    dry_run: bool,
    timeout: float,
    emit: Callable[[AuditRecord], None],
) -> RunResult:
    """Check every target in turn, within ``timeout``; ``emit`` each record as it is made."""
    jobs: list[Job] = [(target, functools.partial(check_target, target)) for target in targets]
    return execute(config, jobs, dry_run=dry_run, timeout=timeout, emit=emit)


def by_hand(
    what: str,
    config: Config,
    target: Target,
    *,
    timeout: float,
    emit: Callable[[AuditRecord], None],
) -> RunResult:
    """``guardian stop``, ``restart`` or ``reset`` for one target: under its lock, time-boxed."""

    def job(run: Run) -> AuditRecord:
        record = run.current = Recorder(target, False)
        store = run.store(target)
        return _locked(target, run, record, lambda: _manual(what, target, run, store, record))

    return execute(config, [(target, job)], dry_run=False, timeout=timeout, emit=emit)


def _manual(
    what: str, target: Target, run: Run, store: state.Store, record: Recorder
) -> AuditRecord:
    st = run.load(target, store)
    if what == "reset":
        run.save(target, store, state.reset(st))
        return record("reset", "crash-loop history and probe failures cleared by hand")
    found = discover(target)
    if isinstance(found, Unsure):
        return record("error", found.reason)
    how = "it was not running"
    if isinstance(found, Found):
        record.pid = record.old_pid = found.pid
        gone, how = _stop(target, run, found)
        if not gone:
            return record("error", f"{what} by hand: {how}")
    orphans = _orphans(target, run, st, record)
    # Stopped by hand is not a crash: it must not count towards a crash loop.
    st = st._replace(current=None, dead_since=None)
    if what == "stop":
        run.save(target, store, st)
        return record("stopped", f"stopped by hand: {how}", orphans=orphans)
    return _start(target, run, store, st, record, "restarted", f"restarted by hand: {how}", orphans)

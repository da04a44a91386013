"""What guardian remembers of a target between runs, and the crash-loop policy built on it.

One small JSON file per target, ``<state_dir>/state/<name>.json``, written
atomically. Times are CLOCK_BOOTTIME seconds: the clock a process's start
time is counted on, shared by every process, unmoved by the wall clock. A
reboot starts it again, so the file carries the boot id and history from an
earlier boot is dropped (a reboot is a fresh start).

The file is input, not trusted: it names processes guardian may signal. One
that anyone but guardian's own user could have written or replaced, or that
does not parse, or whose values are impossible (times in the future, pids
out of range), is set aside and rebuilt, and the caller told so it can
record a warning.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Literal, NamedTuple

from guardian import proc
from guardian.config import Restart
from guardian.files import atomic_write, open_regular

now = proc.now
since_boot = proc.since_boot

_MAX_BYTES = 1 << 16  # a few hundred bytes in use; anything much bigger is not ours
_PID_MAX = 4_194_304
_MAX_STARTS = 1000  # more than any burst: a longer list is not one guardian wrote
# A counter's ceiling: far beyond any real count (a start a second for 30,000 years), and
# exact as a float (Prometheus's value). A count reaching it stays there, never past it:
# a file guardian wrote must never be one it then refuses.
_MAX_COUNT = 1 << 40
_WALL_FROM = 1577836800.0  # 2020-01-01: a wall time before it is a clock not yet set
_WALL_AHEAD = 86400.0  # a start "later than now" by more than this is not believed
_ANY_BOOT = 1e10  # boot-clock seconds (three centuries) no boot outlasts


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - every Linux since 2.6 has it
        return "unknown"


class Current(NamedTuple):
    """The process guardian last started or found running as the target.

    What is needed to end what it leaves behind is learnt the moment it is
    first seen (or spawned), not only once a start completes.
    """

    pid: int
    start_ticks: int
    session: int  # its session id: what it left behind is found there
    ready: bool  # became ready (one found running counts as ready)
    last_seen: float  # when guardian last saw it alive (CLOCK_BOOTTIME)
    adopted: bool = False  # found running rather than started by guardian
    exe: str = ""  # the program it ran when guardian saw it (a symlink may move since)

    @property
    def leads_session(self) -> bool:
        return self.session == self.pid


class State(NamedTuple):
    boot_id: str
    starts: tuple[float, ...] = ()  # starts that count towards `burst`, newest last
    current: Current | None = None
    stable: bool = False  # current has been seen up for min_uptime
    young: int = 0  # starts in a row that died young or never became ready
    dead_since: float | None = None  # when current was first found dead
    probe_failures: int = 0
    gave_up_at: float | None = None
    stopped_by_hand: bool = False  # the next start follows a stop by hand: it does not count
    # Counters for metrics (``guardian.metrics``): plain counts, so kept across a reboot.
    starts_died: int = 0  # automatic starts of a target found not running (``started``)
    starts_unhealthy: int = 0  # ``restarted_unhealthy``
    starts_by_hand: int = 0  # ``guardian start`` / ``restart``
    start_failures: int = 0  # ``start_failed``, whatever the cause
    last_start_wall: float | None = None  # wall clock (epoch seconds) of the last good start

    def to_json(self) -> bytes:
        data = self._asdict()
        data["current"] = self.current._asdict() if self.current else None
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, t: float, boot: str | None = None) -> State:
        """Parse and check; ValueError (with the reason) for anything guardian did not write.

        ``boot``: this boot's id. A file from another boot has its boot-clock times counted
        from that boot's start, so they are checked only as times some boot could reach
        (after a reboot they are usually later than ``t``, and none the worse for it)."""
        raw = json.loads(data)
        try:
            current = raw.pop("current", None)
            if isinstance(current, dict) and "session_leader" in current:
                # Written by guardian 0.1 (no session id, no last_seen): what it knew holds.
                leader = current.pop("session_leader")
                current["session"] = current.get("pid", 0) if leader is True else 0
                current.setdefault("last_seen", 0.0)
            raw["starts"] = tuple(raw.get("starts", ()))
            # Fields a later guardian added are left out, not taken for a corrupt file: a
            # downgrade keeps what this version knows (a file it then writes drops them).
            # (A current left with none of its own fields is still corrupt, not "none".)
            raw = {k: v for k, v in raw.items() if k in cls._fields}
            known = current
            if isinstance(current, dict):
                known = {k: v for k, v in current.items() if k in Current._fields}
            state = cls(**raw, current=Current(**known) if current else None)
        except (TypeError, AttributeError, KeyError) as e:  # not the shape guardian writes
            raise ValueError(f"not a state file ({type(e).__name__})") from None
        state.check(t if boot is None or state.boot_id == boot else None)
        wall = state.last_start_wall
        if wall is not None and not _WALL_FROM <= wall <= time.time() + _WALL_AHEAD:
            # A time that cannot be true (a forged file, or a clock stepped back a long way)
            # is not believed, and says nothing else is wrong with the file: forgotten.
            state = state._replace(last_start_wall=None)
        return state

    def check(self, t: float | None) -> None:
        """ValueError unless every field has its type and a possible value at time ``t``
        (None: at some time of another boot, as long as any boot lasts)."""
        if t is None:
            t = _ANY_BOOT

        def is_time(v: object) -> bool:
            # Boot-clock seconds: never negative, never later than now (a second's slack).
            return isinstance(v, float | int) and not isinstance(v, bool) and 0 <= v <= t + 1

        def is_count(v: object, top: int = 1 << 30) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top

        c = self.current
        problems = {
            "boot_id": isinstance(self.boot_id, str),
            "starts": len(self.starts) <= _MAX_STARTS and all(is_time(s) for s in self.starts),
            "stable": isinstance(self.stable, bool),
            "young": is_count(self.young),
            "probe_failures": is_count(self.probe_failures),
            "dead_since": self.dead_since is None or is_time(self.dead_since),
            "gave_up_at": self.gave_up_at is None or is_time(self.gave_up_at),
            "stopped_by_hand": isinstance(self.stopped_by_hand, bool),
            "starts_died": is_count(self.starts_died, _MAX_COUNT),
            "starts_unhealthy": is_count(self.starts_unhealthy, _MAX_COUNT),
            "starts_by_hand": is_count(self.starts_by_hand, _MAX_COUNT),
            "start_failures": is_count(self.start_failures, _MAX_COUNT),
            # Wall clock, which may step back: only a possible time, not one before now.
            "last_start_wall": self.last_start_wall is None
            or (
                isinstance(self.last_start_wall, float | int)
                and not isinstance(self.last_start_wall, bool)
                and 0 <= self.last_start_wall < 1e11
            ),
            "current": c is None
            or (
                is_count(c.pid, _PID_MAX)
                and is_count(c.start_ticks, proc.ticks(t) + proc.CLK_TCK)
                and is_count(c.session, _PID_MAX)
                and isinstance(c.ready, bool)
                and isinstance(c.adopted, bool)
                and isinstance(c.exe, str)
                and (c.last_seen == 0 or is_time(c.last_seen))
            ),
        }
        bad = [name for name, ok in problems.items() if not ok]
        if bad:
            raise ValueError(f"impossible {', '.join(bad)}")


def path_for(state_dir: Path, name: str) -> Path:
    """Where target ``name``'s state file lives."""
    return state_dir / "state" / f"{name}.json"


def remembered(state: State) -> tuple[int, int, str] | None:
    """The process the state names as the target (pid, start ticks, program), if any."""
    c = state.current
    return (c.pid, c.start_ticks, c.exe) if c is not None and c.pid > 0 else None


class Store:
    """One target's state file: loaded once per run, saved only when it changed.

    Read-modify-write happens under the target's lock (the caller's job): a run
    that read it without the lock writes only if no other run has since.
    """

    def __init__(self, path: Path, owner: int | None = None) -> None:
        self.path = path
        # Who alone may have written it: guardian's own user, unless ``status`` looks on
        # behalf of the user another guardian runs as.
        self.owner = os.geteuid() if owner is None else owner
        self.warnings: list[str] = []
        self._loaded: State | None = None
        self._file: tuple[int, ...] | None = None  # the file it was loaded from

    def _identity(self) -> tuple[int, ...] | None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return None
        # An inode number can be reused by the next file: its times tell them apart.
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)

    def changed(self) -> bool:
        """Has another run written the file since this one loaded (or last wrote) it?

        Every write replaces the file, so a new inode means a new state.
        """
        return self._identity() != self._file

    def load(self, *, again: bool = False) -> State:
        """The state (read once; ``again``: read anew if another run has written it since)."""
        if self._loaded is not None and not (again and self.changed()):
            return self._loaded
        self._file = self._identity()
        fresh = State(boot_id())
        try:
            data = self._read()
        except FileNotFoundError:
            state = fresh
        except OSError as e:
            why = e.strerror or str(e)
            what = why if why.startswith("is ") else f"cannot be read ({why})"
            self.warnings.append(f"state file {self.path} {what}; not believed, rebuilt")
            state = fresh
        else:
            try:
                # Empty: what a power cut can leave of a write that was not synced (it is
                # not, on purpose: see save); the boot that follows forgets it anyway.
                # A file from another boot is known by its boot id before its times are
                # judged: they count from that boot's start, not this one's.
                state = State.from_json(data, now(), fresh.boot_id) if data else fresh
            except (ValueError, RecursionError) as e:  # RecursionError: nesting too deep
                problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)
                self.warnings.append(f"state file {self.path} was corrupt ({problem}); rebuilt")
                state = fresh
            if state.boot_id != fresh.boot_id:
                # The machine rebooted: history from before means nothing now, but the
                # counters are plain counts (metrics), and carry on.
                state = carry(state, fresh)
        self._loaded = state
        return state

    def _read(self) -> bytes:
        """The file's bytes, only if guardian's own user alone could have written it."""
        folder = os.lstat(self.path.parent)
        fd = open_regular(self.path)
        try:
            st = os.fstat(fd)
            me = self.owner
            if st.st_uid != me or st.st_mode & 0o022:
                raise PermissionError(
                    0, f"is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}, "
                    "so others could have written it"
                )  # fmt: skip
            if folder.st_uid != me or folder.st_mode & 0o022:
                raise PermissionError(0, f"is in {self.path.parent}, which others can write to")
            data = os.read(fd, _MAX_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > _MAX_BYTES:
            raise OSError(0, f"is larger than {_MAX_BYTES} bytes, so not one of guardian's")
        return data

    def save(self, state: State) -> None:
        """Write ``state`` if it changed; raises OSError (the caller reports it, and goes on)."""
        if state == self._loaded:
            return
        # No fsync: the file is forgotten at every reboot (its times count from boot), and
        # a power cut is a reboot; what a crash of guardian leaves is whole either way.
        atomic_write(self.path, state.to_json(), mode=0o600, durable=False)
        self._loaded = state  # only once written: a failed write is tried again
        self._file = self._identity()


# --- the crash-loop policy: pure functions of the state and the clock ---


def seen_alive(
    state: State, pid: int, start_ticks: int, session: int, t: float, policy: Restart, exe: str = ""
) -> State:
    """The target runs as ``pid``: remember it (found running, if it is not the one we knew),
    when it was last seen, and once it has run ``min_uptime``, that it is no longer young."""
    current = state.current
    if current is None or (current.pid, current.start_ticks) != (pid, start_ticks):
        # Not the one guardian knew (started by its init script, or by hand): learn it now,
        # so that what it leaves behind can be ended if it dies.
        current = Current(pid, start_ticks, session, True, t, adopted=True, exe=exe)
        state = state._replace(current=current, stable=False, dead_since=None)
    else:
        current = current._replace(last_seen=t, ready=True, exe=current.exe or exe)
        state = state._replace(current=current, dead_since=None)
    if not state.stable and t - since_boot(start_ticks) >= policy.min_uptime:
        state = state._replace(stable=True, young=0)
    return state


def seen_dead(state: State, t: float, policy: Restart) -> State:
    """The target is gone: count its death once (young unless it had run ``min_uptime``)."""
    current = state.current
    if current is None or state.dead_since is not None:
        return state
    # How long it is known to have run: from its start to when it was last seen alive.
    known = current.last_seen - since_boot(current.start_ticks)
    died_young = not current.ready or (not state.stable and known < policy.min_uptime)
    return state._replace(young=state.young + 1 if died_young else 0, dead_since=t)


class Verdict(NamedTuple):
    action: Literal["start", "backoff", "gave_up"]
    state: State
    next_try: float | None = None
    reason: str = ""


def delay_for(young: int, policy: Restart) -> float:
    """The first restart is never delayed; the second young death in a row waits backoff,
    the next twice that, and so on up to max_backoff."""
    if young <= 1:
        return 0.0
    doublings = min(young - 2, 32)  # a corrupt count must not make a huge number
    return min(policy.backoff * float(2**doublings), policy.max_backoff)


def decide(state: State, t: float, policy: Restart) -> Verdict:
    """May the target be started now?"""
    if state.stopped_by_hand:
        return Verdict("start", state)  # not a death: no crash-loop rule applies
    if state.gave_up_at is not None:
        until = state.gave_up_at + policy.window
        if t < until:
            return Verdict("backoff", state, until, "gave up on it earlier; waiting out the window")
        state = state._replace(gave_up_at=None, starts=())  # re-armed, as supervisord is not
    recent = tuple(s for s in state.starts if t - s < policy.window)
    state = state._replace(starts=recent)
    if len(recent) >= policy.burst:
        given_up = state._replace(gave_up_at=t)
        why = f"started {len(recent)} times in {policy.window:g}s (burst {policy.burst})"
        return Verdict("gave_up", given_up, t + policy.window, why)
    delay = delay_for(state.young, policy)
    next_try = (state.dead_since if state.dead_since is not None else t) + delay
    if t < next_try:
        why = f"died young {state.young} times in a row; waiting {delay:g}s"
        return Verdict("backoff", state, next_try, why)
    return Verdict("start", state)


def started(state: State, t: float, current: Current, *, counts: bool = True) -> State:
    """A start: it counts towards ``burst`` unless it follows a stop or comes by hand
    (only deaths guardian did not cause make a crash loop)."""
    counts = counts and not state.stopped_by_hand
    return state._replace(
        starts=(*state.starts, t) if counts else state.starts,
        current=current,
        stable=False,
        dead_since=None,
        probe_failures=0,
        stopped_by_hand=False,
    )


def stopped_by_hand(state: State) -> State:
    return state._replace(current=None, dead_since=None, probe_failures=0, stopped_by_hand=True)


def reset(state: State) -> State:
    return carry(state, State(state.boot_id, current=state.current, stable=state.stable))


_COUNTERS = ("starts_died", "starts_unhealthy", "starts_by_hand", "start_failures",
             "last_start_wall")  # fmt: skip


def carry(old: State, new: State) -> State:
    """``new`` with ``old``'s counters: they never go back while the file is believed."""
    return new._replace(**{name: getattr(old, name) for name in _COUNTERS})


StartCause = Literal["died", "unhealthy", "by_hand"]


def counted(state: State, cause: StartCause, wall: float) -> State:
    """A start that became ready, counted by its cause, at ``wall`` (epoch seconds)."""
    field = f"starts_{cause}"
    count = min(getattr(state, field) + 1, _MAX_COUNT)
    return state._replace(**{field: count, "last_start_wall": wall})


def start_failed(state: State) -> State:
    """A start that failed (never ran, or never became ready)."""
    return state._replace(start_failures=min(state.start_failures + 1, _MAX_COUNT))

"""What guardian remembers of a target between runs, and the crash-loop policy built on it.

One small JSON file per target, ``<state_dir>/state/<name>.json``, written
atomically. Times are CLOCK_BOOTTIME seconds: the clock a process's start
time is counted on, shared by every process, unmoved by the wall clock. A
reboot starts it again, so the file carries the boot id and history from an
earlier boot is dropped (a reboot is a fresh start). A file that cannot be
read or parsed is rebuilt, and the caller told so it can record a warning.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal, NamedTuple

from guardian.config import Restart
from guardian.files import atomic_write

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def since_boot(start_ticks: int) -> float:
    """A process's start, on the same clock as ``now()``."""
    return start_ticks / _CLK_TCK


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - every Linux since 2.6 has it
        return "unknown"


class Current(NamedTuple):
    """The process guardian last started or adopted as the target."""

    pid: int
    start_ticks: int
    session_leader: bool
    ready: bool


class State(NamedTuple):
    boot_id: str
    starts: tuple[float, ...] = ()  # when guardian started it, newest last
    current: Current | None = None
    stable: bool = False  # current has been seen up for min_uptime
    young: int = 0  # starts in a row that died young or never became ready
    dead_since: float | None = None  # when current was first found dead
    probe_failures: int = 0
    gave_up_at: float | None = None

    def to_json(self) -> bytes:
        data = self._asdict()
        data["current"] = self.current._asdict() if self.current else None
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> State:
        raw = json.loads(data)
        current = raw.pop("current", None)
        raw["starts"] = tuple(float(t) for t in raw.get("starts", ()))
        state = cls(**raw, current=Current(**current) if current else None)
        state.check()
        return state

    def check(self) -> None:
        """TypeError unless every field has its type: a state file is input, not trusted."""

        def is_time(v: object) -> bool:
            return isinstance(v, float | int) and not isinstance(v, bool)

        def is_count(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 0

        c = self.current
        ok = (
            isinstance(self.boot_id, str)
            and all(is_time(s) for s in self.starts)
            and isinstance(self.stable, bool)
            and is_count(self.young)
            and is_count(self.probe_failures)
            and (self.dead_since is None or is_time(self.dead_since))
            and (self.gave_up_at is None or is_time(self.gave_up_at))
            and (
                c is None
                or (
                    (is_count(c.pid) and is_count(c.start_ticks))
                    and isinstance(c.session_leader, bool)
                    and isinstance(c.ready, bool)
                )
            )
        )
        if not ok:
            raise TypeError("a field has the wrong type")


class Store:
    """One target's state file: loaded once per run, saved only when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._loaded: State | None = None

    def load(self) -> State:
        if self._loaded is not None:
            return self._loaded
        fresh = State(boot_id())
        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 20)
        except FileNotFoundError:
            state = fresh
        except OSError as e:
            self.warnings.append(f"state file {self.path} unreadable ({e.strerror}); rebuilt")
            state = fresh
        else:
            try:
                state = State.from_json(data)
            except (ValueError, TypeError, KeyError, AttributeError):
                self.warnings.append(f"state file {self.path} was corrupt; rebuilt")
                state = fresh
            if state.boot_id != fresh.boot_id:
                state = fresh  # the machine rebooted: history from before means nothing now
        self._loaded = state
        return state

    def save(self, state: State) -> None:
        """Write ``state`` if it changed; raises OSError (the caller reports it, and goes on)."""
        if state == self._loaded:
            return
        atomic_write(self.path, state.to_json(), mode=0o644)
        self._loaded = state  # only once written: a failed write is tried again


# --- the crash-loop policy: pure functions of the state and the clock ---


def seen_alive(state: State, pid: int, start_ticks: int, t: float, policy: Restart) -> State:
    """The target runs as ``pid``: once it has run ``min_uptime``, it is no longer young."""
    current = state.current
    if current is None or (current.pid, current.start_ticks) != (pid, start_ticks):
        return state  # not one guardian started or adopted: nothing to learn from it
    if state.stable or t - since_boot(start_ticks) < policy.min_uptime:
        return state
    return state._replace(stable=True, young=0, dead_since=None)


def seen_dead(state: State, t: float) -> State:
    """The target is gone: count its death once (young unless it had proved stable)."""
    if state.current is None or state.dead_since is not None:
        return state
    died_young = not state.current.ready or not state.stable
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


def started(state: State, t: float, current: Current) -> State:
    return state._replace(
        starts=(*state.starts, t),
        current=current,
        stable=False,
        dead_since=None,
        probe_failures=0,
    )


def reset(state: State) -> State:
    return State(state.boot_id, current=state.current, stable=state.stable)

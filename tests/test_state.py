"""The crash-loop policy (pure functions of state and clock) and the state file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardian import state
from guardian.config import Restart
from guardian.state import (
    Current,
    State,
    Store,
    boot_id,
    decide,
    delay_for,
    now,
    seen_alive,
    seen_dead,
    started,
)

POLICY = Restart(burst=5, window=600, backoff=10, max_backoff=300, min_uptime=60)
ME = Current(pid=100, start_ticks=1000, session=100, ready=True, last_seen=10.0)


def test_first_restart_is_never_delayed_then_backoff_doubles_to_the_cap() -> None:
    assert [delay_for(n, POLICY) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert delay_for(10**9, POLICY) == 300  # a corrupt count cannot blow it up


def test_a_target_that_ran_long_enough_is_not_young() -> None:
    s = started(State("b"), t=0.0, current=ME)
    # start_ticks 1000 = 10 s after boot at 100 ticks a second (CLK_TCK is 100 on Linux)
    assert seen_alive(s, 100, 1000, 100, t=10 + 59, policy=POLICY).stable is False
    s = seen_alive(s, 100, 1000, 100, t=10 + 61, policy=POLICY)
    assert s.stable is True
    assert s.current is not None
    assert s.current.last_seen == 71
    dead = seen_dead(s, t=200, policy=POLICY)
    assert (dead.young, dead.dead_since) == (0, 200)
    assert seen_dead(dead, t=300, policy=POLICY) == dead  # a death is counted once
    assert decide(dead, 200, POLICY).action == "start"  # at once


def test_dying_young_in_a_row_is_spaced_out() -> None:
    s = State("b")
    t = 0.0
    actions = []
    for _ in range(4):
        s = seen_dead(started(s, t, ME), t + 1, POLICY)  # never seen stable: died young
        verdict = decide(s, t + 1, POLICY)
        actions.append(
            (verdict.action, None if verdict.next_try is None else verdict.next_try - t - 1)
        )
        t += 100
    assert actions == [("start", None), ("backoff", 10), ("backoff", 20), ("backoff", 40)]


def test_burst_starts_in_the_window_give_up_once_then_rearm() -> None:
    s = State("b")
    for t in range(5):
        s = started(s, float(t), ME)
    verdict = decide(s, 10.0, POLICY)
    assert verdict.action == "gave_up"
    assert verdict.next_try == 610
    later = decide(verdict.state, 300.0, POLICY)
    assert later.action == "backoff"  # gave_up is recorded once; then it waits
    assert later.next_try == 610
    rearmed = decide(verdict.state, 611.0, POLICY)
    assert rearmed.action == "start"
    assert rearmed.state.starts == ()


def test_starts_outside_the_window_do_not_count() -> None:
    s = State("b", starts=(0.0, 1.0, 2.0, 3.0, 700.0))
    assert decide(s, 701.0, POLICY).action == "start"


def test_state_file_round_trip_and_corruption(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.json")
    fresh = store.load()
    assert fresh == State(boot_id())
    saved = started(fresh, 5.0, ME)
    store.save(saved)
    assert Store(tmp_path / "t.json").load() == saved
    (tmp_path / "t.json").write_text('{"boot_id": "x", "young": "lots"}')
    rebuilt = Store(tmp_path / "t.json")
    assert rebuilt.load() == State(boot_id())
    assert rebuilt.warnings == [
        f"state file {tmp_path / 't.json'} was corrupt (impossible young); rebuilt"
    ]


def test_state_from_an_earlier_boot_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_bytes(State("another-boot", young=3).to_json())
    assert Store(tmp_path / "t.json").load() == State(boot_id())


@given(st.binary(max_size=300))
def test_any_state_file_bytes_load_or_rebuild(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.json"
        path.write_bytes(data)
        store = Store(path)
        loaded = store.load()
        assert isinstance(loaded, State)
        loaded.check(now())


@given(
    st.dictionaries(
        st.sampled_from(["boot_id", "starts", "young", "stable", "dead_since", "probe_failures",
                         "gave_up_at", "current", "extra"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.booleans(),
                  st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                       st.integers())),
    )
)  # fmt: skip
def test_any_json_object_loads_or_rebuilds(raw: dict[str, object]) -> None:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.json"
        path.write_text(json.dumps(raw))
        Store(path).load().check(now())


def test_a_counter_at_its_ceiling_stays_there_and_the_file_stays_believed(
    tmp_path: Path,
) -> None:
    # A forged (or absurdly old) count: guardian's next start must not write a file it
    # would then refuse as corrupt (that rebuild forgets what the target left behind).
    path = tmp_path / "state" / "agent.json"
    path.parent.mkdir(mode=0o700)
    top = state._MAX_COUNT
    forged = state.State(state.boot_id(), starts_died=top, start_failures=top)
    path.write_bytes(forged.to_json())
    path.chmod(0o600)
    store = state.Store(path)
    loaded = store.load()
    assert loaded.starts_died == top
    after = state.start_failed(state.counted(loaded, "died", time.time()))
    assert (after.starts_died, after.start_failures) == (top, top)
    store.save(after)
    again = state.Store(path)
    assert again.load().starts_died == top
    assert not again.warnings
    path.write_text(json.dumps({**json.loads(path.read_text()), "starts_died": top + 1}))
    beyond = state.Store(path)
    assert beyond.load().starts_died == 0  # past the ceiling: not one guardian wrote
    assert beyond.warnings


@pytest.mark.parametrize("wall", [9.9e10, 1.0, 0.0, time.time() + 3 * 86400])
def test_a_last_start_time_that_cannot_be_true_is_forgotten_quietly(
    tmp_path: Path, wall: float
) -> None:
    path = tmp_path / "state" / "agent.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(state.State(state.boot_id(), starts_died=3, last_start_wall=wall).to_json())
    path.chmod(0o600)
    store = state.Store(path)
    loaded = store.load()
    assert (loaded.starts_died, loaded.last_start_wall) == (3, None)
    assert not store.warnings  # the rest of the file is believed: no rebuild, no exit 3
    good = time.time() - 60
    path.write_bytes(state.State(state.boot_id(), last_start_wall=good).to_json())
    assert state.Store(path).load().last_start_wall == good


def test_a_state_file_from_a_later_guardian_is_believed_without_its_new_fields(
    tmp_path: Path,
) -> None:
    """A downgrade (a rollout reverted) must not make every target's first run exit 3 with
    its counters lost: fields this version does not know are left out, not taken for
    corruption. What it knows is checked as ever."""
    path = tmp_path / "state" / "agent.json"
    path.parent.mkdir(mode=0o700)
    written = state.State(state.boot_id(), starts_died=7, current=ME)
    raw = json.loads(written.to_json())
    raw["a_later_field"] = {"anything": [1, 2]}
    raw["current"]["cgroup"] = "/system.slice/x"
    path.write_text(json.dumps(raw))
    path.chmod(0o600)
    store = state.Store(path)
    assert store.load() == written
    assert not store.warnings
    for current in ({"pid_renamed": 5}, {"cgroup": "/x"}):  # none of its own fields left
        path.write_text(json.dumps({**raw, "current": current}))
        renamed = state.Store(path)
        assert renamed.load() == State(boot_id())
        assert renamed.warnings  # corrupt, not a target silently forgotten
    raw["young"] = "lots"  # a known field with an impossible value: still refused
    path.write_text(json.dumps(raw))
    refused = state.Store(path)
    assert refused.load() == State(boot_id())
    assert refused.warnings

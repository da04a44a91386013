"""``guardian report``: availability, outages and starts per target, from the audit log.

The log and its rotated files are streamed oldest first, a chunk at a time, and
folded into a few numbers per target and a fixed number of timeline cells:
memory stays bounded whatever the log's length (a chunk, the longest line kept,
``MAX_LINE``, and the cells). Guardian's writer has a fixed field order, so the
common lines (``ok``, ``adopted``, ``unhealthy``, ``held``, ``backoff``, not dry runs
for the last three, whatever fields follow ``dry_run``) are read by one bytes regex;
only the rest are decoded as JSON (decoding every line of a year takes seconds).

The work is bounded too (the promise is never to hang): a ``.gz`` is decompressed to
at most ``GZ_RATIO`` times its size (or ``GZ_FLOOR``); a file with more than
``BAD_LINES`` unreadable lines, and more of them than records, is not a log and is
left; and the whole report stops at ``TIME_BUDGET``. Each says the report is partial.

What the records prove, and how it is counted:

- up: ``ok``, ``adopted``, ``unhealthy`` (still running), and a ready start
  (``started``, ``restarted_unhealthy``, ``restarted``); down: ``start_failed``,
  ``backoff``, ``gave_up`` (and a dry run's ``would_start``); held: ``held`` and
  ``stopped`` (down on purpose). Dry runs are observations of the state, never
  starts. A ``watch_ended`` of a real watch says the state held throughout it.
  Other records (``error``, ``timeout``, ``warning``, ...) say nothing of the state.
- Between two observations the state held, unless they are further apart than
  ``GAP_INTERVALS`` intervals: then the last state is credited one interval, the
  rest is unknown. The interval is inferred from the records (the median gap of
  each target's first records, at least a minute).
- An outage runs from the death to ready again: the death is between
  ``last_seen`` and ``down_since`` (the fields of the first record after it: a start,
  ``backoff``, ``gave_up``, a ``held``; for older records, the last "up" and the first
  "down" observations). It is counted from ``last_seen``, the longest the records
  allow, and its precision is that gap. A ``held`` that carries them ends an outage
  (the target was found dead, then held): down until then, never "recovered".
- A hold ends at its ``until``: the time from then to the next observation is down
  if that found the target not running (a ``started``, a "down" record), else
  unknown; it is not an outage (nothing died).
- availability = up / (up + down): held time and unknown time are left out.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from guardian.audit import ACTIONS, MAX_LINE, open_logs

UP, DOWN, HELD = 0, 1, 2
_STATE_NAMES = ("up", "down", "held")
GAP_INTERVALS = 3  # observations further apart than this many intervals leave a gap
MIN_INTERVAL = 60.0  # cron runs at most once a minute
LEARN = 32  # a target's first records, held back until its interval is known
FUTURE_SLACK = 60.0  # a record dated after now plus this is not believed (as status)
MAX_FOREIGN_NAMES = 50  # foreign targets named in the report; the rest are counted
_CHUNK = 1 << 20
# A death bounded within this is "known to the second or better" (a watcher saw it, through a
# pidfd: milliseconds); wider ones are known to about the interval (cron's runs).
_MS_PRECISE = 1.0
# A rotated .gz is decompressed to at most this many times its size (guardian's records
# compress about 10 to 1, a year of identical "ok" lines about 20 to 1), or GZ_FLOOR: a
# gzip bomb is left, said, there.
GZ_RATIO = 60
GZ_FLOOR = 64 << 20
BAD_LINES = 10_000  # more unreadable lines than this, and than records: not a log, left
TIME_BUDGET = 60.0  # the whole report, at most (a year takes about a second)
# Records older than this are not believed (a clock at 1970 after a boot without RTC).
NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
# Records that go back in time by more than this are counted as out of order (a clock set
# back); less is normal: a record is dated when it is made, overlapping runs write later.
OUT_OF_ORDER = 60.0

_UP_ACTIONS = {"ok": UP, "adopted": UP, "unhealthy": UP, "restarted_unhealthy": UP,
               "started": UP, "restarted": UP, "start_failed": DOWN, "backoff": DOWN,
               "gave_up": DOWN, "would_start": DOWN, "held": HELD, "stopped": HELD}  # fmt: skip
_STARTS = frozenset({"started", "restarted_unhealthy", "restarted"})
_FAILURES = frozenset({"start_failed", "error", "timeout", "gave_up"})
_KNOWN_ACTIONS = frozenset(ACTIONS)

# The common line, exactly as guardian's writer lays it out; anything else is decoded.
# Its tail never holds a line's start, '{"ts": "' (a record's own text holds it escaped):
# a line that does is a torn one that a record joined, unreadable. (A string of the
# fixed part ends at its first quote, so only the tail could take it in and match.)
_STR = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_FAST = re.compile(
    rb'\{"ts": "(\d{4}-\d\d-\d\dT\d\d):(\d\d):(\d\d\.\d{3})Z", "host": ' + _STR
    + rb', "guardian_pid": \d+, "version": ' + _STR
    + rb', "target": "([A-Za-z0-9._-]+)", "action": "(ok|adopted|unhealthy|held|backoff)", '
    rb'"reason": ' + _STR + rb', "pid": (?:\d+|null), "old_pid": (?:\d+|null), '
    rb'"duration_ms": \d+, "dry_run": (false|true)(?:, "[a-z_]+": (?!.*\{"ts": ").*)?\}\r?'
)  # fmt: skip
# What the fast path makes of each action: its state, whether it is an unhealthy run.
_FAST_KIND = {b"ok": UP, b"adopted": UP, b"unhealthy": UP, b"held": HELD, b"backoff": DOWN}
_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d):(\d\d):(\d\d\.\d{3})Z")
_NOTICED = re.compile(r"watching through .*: \d+ exit\(s\) noticed")


class ReportError(Exception):
    """The report cannot be made (not a problem with one file: those are said in it)."""


class _Clock:
    """RFC 3339 to epoch seconds, cheaply: the hour is converted once, then cached."""

    def __init__(self) -> None:
        self.hour = b""
        self.base = 0.0

    def fast(self, hour: bytes, minute: bytes, second: bytes) -> float | None:
        if hour != self.hour:
            try:
                self.base = datetime.fromisoformat(hour.decode() + ":00:00+00:00").timestamp()
            except ValueError:
                return None
            self.hour = hour
        sec = float(second)
        m = int(minute)
        if m > 59 or sec >= 60:
            return None
        return self.base + m * 60 + sec

    def parse(self, text: object) -> float | None:
        """Any RFC 3339 time with a zone; None for anything else."""
        if not isinstance(text, str):
            return None
        m = _TS.fullmatch(text)
        if m is not None:
            return self.fast(m[1].encode(), m[2].encode(), m[3].encode())
        try:
            when = datetime.fromisoformat(text)
            return when.timestamp() if when.tzinfo is not None else None
        except (ValueError, OverflowError):
            return None


class Failure(NamedTuple):
    at: float
    action: str  # start_failed, error, timeout, gave_up; or died / unhealthy (a start after)
    reason: str
    error: str | None


class _Outage:
    __slots__ = ("hi", "lo")

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, max(lo, hi)  # the death is between lo and hi


class Timeline:
    """Fixed cells over the period; seconds up, down and held in each, and starts."""

    def __init__(self, start: float, end: float, cells: int) -> None:
        self.start, self.end, self.cells = start, end, cells
        self.width = (end - start) / cells
        self.secs = [[0.0] * cells for _ in range(3)]
        self.starts = [0] * cells

    def paint(self, a: float, b: float, state: int) -> None:
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return
        secs, width = self.secs[state], self.width
        i = min(int((a - self.start) / width), self.cells - 1)
        while a < b and i < self.cells:
            edge = self.start + (i + 1) * width
            upto = b if b < edge or i == self.cells - 1 else edge
            secs[i] += upto - a
            a, i = upto, i + 1

    def mark(self, t: float) -> None:
        if self.start <= t <= self.end:
            self.starts[min(int((t - self.start) / self.width), self.cells - 1)] += 1

    def cell(self, i: int) -> str:
        """The worst that happened in cell ``i``: down (a quarter of it or more), restarted
        (a start, or a shorter outage), held, unknown (half of it or more), up."""
        up, down, held = (s[i] for s in self.secs)
        if down >= self.width / 4:
            return "down"
        if down > 0 or self.starts[i]:
            return "restarted"
        if held > 0:
            return "held"
        if up + held + down < self.width / 2:
            return "unknown"
        return "up"

    def states(self) -> list[str]:
        return [self.cell(i) for i in range(self.cells)]


class TargetReport:
    """One target's records, folded in oldest first."""

    def __init__(self, name: str, start: float, end: float, cells: int) -> None:
        self.name = name
        self.start, self.end = start, end
        self.timeline = Timeline(start, end, cells)
        self.interval: float | None = None
        self.learning: list[tuple[float, int, dict[str, Any] | None, float | None]] | None = []
        self.state: int | None = None  # the last observed state
        self.run_from = 0.0  # when the current run of one state began
        self.last = 0.0  # the last observation's time
        self.until: float | None = None  # held: when its hold ends (None: not by itself)
        self.outage: _Outage | None = None
        self.seconds = [0.0, 0.0, 0.0]
        self.outages = 0
        self.recovered = 0
        self.rec_max_sum = self.rec_min_sum = 0.0
        self.rec_max = self.rec_min = 0.0
        self.rec_max_at: float | None = None
        self.precise = 0  # deaths bounded within _MS_PRECISE
        self.worst_precision = 0.0
        self.starts = {"died": 0, "unhealthy": 0, "by_hand": 0, "other": 0}
        self.failed_starts = 0
        self.gave_up = 0
        self.unhealthy_runs = 0
        self.dry_runs = 0
        self.out_of_order = 0
        self.last_failure: Failure | None = None
        self.records = 0

    # --- the fold ---

    def seen(
        self, t: float, state: int, raw: dict[str, Any] | None = None, until: float | None = None
    ) -> None:
        """An observation at ``t``; ``raw`` the decoded record when it is more than a
        state (a start, a failure), None for the common lines; ``until``: held, when the
        hold ends (a common line's, read by the caller; a decoded one's is read here)."""
        self.records += 1
        if raw is not None and state == HELD:
            until = _hold_until(raw)
        if self.learning is not None:
            self.learning.append((t, state, raw, until))
            if len(self.learning) >= LEARN:
                self._learnt()
            return
        if t < self.last:
            # Taken at the last time seen. Counted only when it is more than a moment:
            # records are dated when made, and overlapping runs write them out of order.
            self.out_of_order += self.last - t > OUT_OF_ORDER
            t = self.last
        if until is not None:
            # Held when it was made (its until is to the second); one before 2020: unread.
            until = max(until, t) if until >= NOT_BEFORE else None
        if (
            raw is None
            and state == self.state
            and self.interval is not None
            and t - self.last <= self.interval * GAP_INTERVALS
            and (self.until is None or t <= self.until)  # not after the last hold ended
        ):
            self.last, self.until = t, until  # the common case: more of the same
            return
        self._step(t, state, raw, until)

    def _learnt(self) -> None:
        learning, self.learning = self.learning or [], None
        times = [t for t, _, _, _ in learning]
        gaps = sorted(b - a for a, b in itertools.pairwise(times) if 0 < b - a < 86400)
        median = gaps[len(gaps) // 2] if gaps else MIN_INTERVAL
        self.interval = max(MIN_INTERVAL, median)
        self.records -= len(learning)
        for t, state, raw, until in learning:
            self.seen(t, state, raw, until)

    def _close_run(self, upto: float) -> None:
        """The current run of one state, painted up to ``upto`` (bounded by a gap)."""
        if self.state is not None:
            self._paint(self.run_from, upto, self.state)

    def _paint(self, a: float, b: float, state: int) -> None:
        self.timeline.paint(a, b, state)
        lo, hi = max(a, self.start), min(b, self.end)
        if hi > lo:
            self.seconds[state] += hi - lo

    # One decision table, read top to bottom: split, it would be harder to follow.
    def _step(  # noqa: PLR0912, PLR0915
        self, t: float, state: int, raw: dict[str, Any] | None, until: float | None = None
    ) -> None:
        """A change of state, a gap, or a record with more to say than its state."""
        interval = self.interval or MIN_INTERVAL
        prev, last = self.state, self.last
        # Held at the last observation, by a hold that ended before this one.
        ended = max(last, self.until) if self.until is not None and self.until < t else None
        action = raw["action"] if raw is not None else None
        dry = bool(raw.get("dry_run")) if raw is not None else False
        if raw is not None and dry:
            self.dry_runs += 1
        gap = prev is not None and t - last > interval * GAP_INTERVALS
        # Close the run so far: up to the last observation, plus the span to this one
        # (or, over a gap, one interval: the rest is unknown).
        self._close_run(last)
        lo_hint, hi_hint = _hints(raw, t)
        start = action in _STARTS and not dry
        by_hand = action == "restarted" or (
            action == "started" and str(raw.get("reason", "")).startswith("started by hand")
            if raw is not None
            else False
        )
        died = start and not by_hand and action == "started" and (
            hi_hint is not None or prev == DOWN or (prev == UP and not gap)
        )  # fmt: skip
        # Found dead, then held (a stop by hand): the record says when it died.
        found_dead = state == HELD and hi_hint is not None
        failing = state == DOWN or died or (action == "start_failed" and not dry) or found_dead
        death_from: float | None = None
        if prev is not None:
            if ended is not None:
                # Held until its hold ended; then down if this observation found it not
                # running (a check's start, or a "down" record), else unknown.
                self._paint(last, min(ended, last + interval) if gap else ended, HELD)
                if not gap and (state == DOWN or action == "started"):
                    self._paint(ended, t, DOWN)
            elif gap:
                self._paint(last, last + interval, prev)
            elif prev == UP and failing:
                # Known alive at last_seen (a moment before its run's record), else at the
                # last record; down from then: the longest the records allow.
                death_from = min(lo_hint if lo_hint is not None else last, t)
                self._paint(last, max(last, death_from), UP)
                self._paint(max(last, death_from), t, DOWN)
            else:
                self._paint(last, t, prev)
        # Outages: opened by the first sign of death, closed by the next "up".
        if failing and self.outage is None:
            lo = death_from if death_from is not None else lo_hint
            if lo is None:
                lo = last if prev == UP else (hi_hint if hi_hint is not None else t)
            elif prev not in (None, UP) and not gap:
                lo = max(lo, last)  # not before the last record of another state (a hold)
            self.outage = _Outage(lo, hi_hint if hi_hint is not None else t)
        if state == UP and self.outage is not None:
            self._recover(t)
        elif state == HELD and self.outage is not None:
            self.outage = None  # held while down: planned from now on, never "recovered"
            self.outages += t >= self.start
        if start:
            self.timeline.mark(t)
            if t >= self.start:
                cause = (
                    "by_hand"
                    if by_hand
                    else "unhealthy"
                    if action == "restarted_unhealthy"
                    else "died"
                    if died
                    else "other"
                )
                self.starts[cause] += 1
        if raw is not None and not dry and t >= self.start:
            self._count(t, str(action), raw, died)
        self.state, self.run_from, self.last = state, t, t
        self.until = until if state == HELD else None

    def _recover(self, t: float) -> None:
        o, self.outage = self.outage, None
        if o is None or t < self.start:
            return
        worst, best = t - o.lo, max(0.0, t - o.hi)
        self.outages += 1
        self.recovered += 1
        self.rec_max_sum += worst
        self.rec_min_sum += best
        if worst > self.rec_max:
            self.rec_max, self.rec_max_at = worst, t
        self.rec_min = max(self.rec_min, best)
        precision = o.hi - o.lo
        self.precise += precision < _MS_PRECISE
        self.worst_precision = max(self.worst_precision, precision)

    def _count(self, t: float, action: str, raw: dict[str, Any], died: bool) -> None:
        if action == "start_failed":
            self.failed_starts += 1
        elif action == "gave_up":
            self.gave_up += 1
        elif action == "unhealthy":
            self.unhealthy_runs += 1
        reason, error = str(raw.get("reason", "")), raw.get("error")
        if action in _FAILURES:
            self._failed(Failure(t, action, reason, error if isinstance(error, str) else None))
        elif died or action == "restarted_unhealthy":
            self._failed(Failure(t, "died" if died else "unhealthy", reason, None))

    def _failure_dict(self) -> dict[str, object] | None:
        f = self.last_failure
        if f is None:
            return None
        return {"at": _iso(f.at), "action": f.action, "reason": f.reason, "error": f.error}

    def _failed(self, failure: Failure) -> None:
        if self.last_failure is None or failure.at >= self.last_failure.at:
            self.last_failure = failure

    def aside(self, t: float, raw: dict[str, Any]) -> None:
        """A record that is not an observation of the state (error, timeout, ...): it may
        still be the last failure; a real watch's end says the state held throughout."""
        self.records += 1
        action = raw["action"]
        if (
            action == "watch_ended"
            and self.state is not None
            and self.learning is None
            and _NOTICED.search(str(raw.get("reason", "")))
        ):
            self.records -= 1
            if self.until is None or t <= self.until:  # (a hold that ended: not held through)
                self.seen(t, self.state, None, self.until)
            return
        if action in _FAILURES and not raw.get("dry_run") and t >= self.start:
            error = raw.get("error")
            self._failed(Failure(t, action, str(raw.get("reason", "")),
                                 error if isinstance(error, str) else None))  # fmt: skip

    def finish(self) -> None:
        if self.learning is not None:
            self._learnt()
        if self.state is None:
            return
        self._close_run(self.last)
        # After the last observation: its state, for one interval at most (a hold: to its end).
        interval = self.interval or MIN_INTERVAL
        upto = min(self.end, self.last + interval)
        if self.until is not None:
            upto = min(upto, max(self.last, self.until))
        self._paint(self.last, upto, self.state)
        self.run_from = self.last

    # --- what it says ---

    def to_dict(self) -> dict[str, object]:
        up, down, held = self.seconds
        period = self.end - self.start
        unknown = max(0.0, period - up - down - held)
        o = self.outage
        rec = self.recovered
        return {
            "target": self.name,
            "interval_s": self.interval,
            "availability": round(up / (up + down), 6) if up + down > 0 else None,
            "seconds": {
                "up": round(up, 3),
                "down": round(down, 3),
                "held": round(held, 3),
                "unknown": round(unknown, 3),
            },
            "outages": self.outages + (o is not None),
            "down_now_since": _iso(o.lo) if o is not None else None,
            "starts": dict(self.starts),
            "failed_starts": self.failed_starts,
            "unhealthy_runs": self.unhealthy_runs,
            "gave_up": self.gave_up,
            "recovery_s": {
                "recovered": rec,
                "mean": round(self.rec_max_sum / rec, 3) if rec else None,
                "longest": round(self.rec_max, 3) if rec else None,
                "longest_at": _iso(self.rec_max_at),
                "mean_at_least": round(self.rec_min_sum / rec, 3) if rec else None,
                "longest_at_least": round(self.rec_min, 3) if rec else None,
                "within_a_second": self.precise,
                "wider": rec - self.precise,
                "worst_precision_s": round(self.worst_precision, 3),
            },
            "last_failure": self._failure_dict(),
            "dry_run_records": self.dry_runs,
            "out_of_order": self.out_of_order,
            "timeline": draw(self.timeline.states(), colour=False),
        }


def _hints(raw: dict[str, Any] | None, t: float) -> tuple[float | None, float | None]:
    """A start's ``last_seen`` and ``down_since``, if they can be true: each after
    NOT_BEFORE and not after the record itself, and alive before dead; else neither."""
    lo, hi = _float(raw, "last_seen"), _float(raw, "down_since")
    if lo is not None and not NOT_BEFORE <= lo <= t:
        lo = None
    if hi is not None and not NOT_BEFORE <= hi <= t:
        hi = None
    if lo is not None and hi is not None and lo > hi:
        return None, None
    return lo, hi


def _hold_until(raw: dict[str, Any]) -> float | None:
    """A held record's hold's ``until``; None for a hold until ``guardian start``, or an
    ``until`` that cannot be read (held until the next observation, as before)."""
    hold = raw.get("hold")
    until = _CLOCK.parse(hold.get("until")) if isinstance(hold, dict) else None
    return until if until is not None and until >= NOT_BEFORE else None


# A common held line's hold's until, found by its key: the only "until" guardian writes
# (in a string, a quote is escaped: the key cannot be matched inside one). A hold until
# `guardian start` has "until": null, and costs a find.
_UNTIL_KEY = b'"until": "'
_DOWN_SINCE = b'"down_since": "'
_UNTIL_AT = len(_UNTIL_KEY)
_UNTIL_TS = re.compile(rb'(\d{4}-\d\d-\d\dT\d\d):(\d\d):(\d\d(?:\.\d{1,6})?)Z"')


def _float(raw: dict[str, Any] | None, key: str) -> float | None:
    if raw is None:
        return None
    return _CLOCK.parse(raw.get(key))


_CLOCK = _Clock()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    when = datetime.fromtimestamp(t, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Report(NamedTuple):
    start: float
    end: float
    targets: list[TargetReport]
    files: list[str]  # read, oldest first
    skipped_files: list[str]  # rotated files older than the period, by their mtime
    unreadable_files: list[str]  # "path: why"
    unreadable_lines: int  # torn, not JSON, not UTF-8, too long, or not a record
    future_records: int
    foreign: dict[str, int]  # records of targets not in the config
    foreign_other: int  # ... of more names than MAX_FOREIGN_NAMES
    old_records: int = 0  # dated before NOT_BEFORE: not believed
    no_log: str | None = None  # the audit log's path, when there is none at all

    def to_dict(self) -> dict[str, object]:
        return {
            "from": _iso(self.start),
            "to": _iso(self.end),
            "cells": self.targets[0].timeline.cells if self.targets else 0,
            "cell_s": round(self.targets[0].timeline.width, 3) if self.targets else None,
            "timeline_legend": dict(zip(_PLAIN.values(), _PLAIN, strict=True)),
            "targets": [t.to_dict() for t in self.targets],
            "files": self.files,
            "skipped_files": self.skipped_files,
            "unreadable_files": self.unreadable_files,
            "unreadable_lines": self.unreadable_lines,
            "future_records": self.future_records,
            "old_records": self.old_records,
            "no_log": self.no_log,
            "foreign_targets": dict(self.foreign),
            "foreign_other": self.foreign_other,
        }


def _chunks(f: Any, too_long: Callable[[], None]) -> Iterator[tuple[list[bytes], int]]:
    """The lines of ``f``, a chunk's worth at a time, with the bytes read for them; a line
    longer than MAX_LINE is dropped (``too_long`` is told) without being held whole. Runs
    of empty lines are squeezed first (in C: a file of newlines must not cost a loop each)."""
    carry = b""
    skipping = False
    read = f.read
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            break
        size = len(chunk)
        while b"\n\n" in chunk:
            chunk = chunk.replace(b"\n\n\n\n", b"\n").replace(b"\n\n", b"\n")
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                yield [], size
                continue
            skipping = False
            too_long()
            chunk = chunk[cut + 1 :]
            carry = b""
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        yield lines, size
        if len(carry) > MAX_LINE:
            carry, skipping = b"", True
    if skipping:
        too_long()
    elif carry:
        yield [carry], 0


# One streaming loop, kept in one frame: a function call per line is a tenth of the budget.
def build(  # noqa: PLR0912, PLR0915
    log: Path,
    names: Iterable[str],
    *,
    since: float,
    cells: int,
    now: float | None = None,
    budget: float = TIME_BUDGET,
) -> Report:
    """The report over the last ``since`` seconds for targets ``names``, within ``budget``
    seconds of work (past it, the files not yet read are said to be unread)."""
    import json
    import time

    began = time.monotonic()
    end = datetime.now(UTC).timestamp() if now is None else now
    start = end - since
    targets = {n: TargetReport(n, start, end, cells) for n in names}
    by_bytes = {n.encode(): t for n, t in targets.items()}
    future = end + FUTURE_SLACK
    bad = 0
    in_future = 0
    too_old = 0
    foreign: dict[str, int] = {}
    foreign_other = 0
    read: list[str] = []
    skipped: list[str] = []
    unreadable_files: list[str] = []
    decode = json.JSONDecoder().decode
    fast_match = _FAST.fullmatch
    fast_kind = _FAST_KIND
    until_at = _UNTIL_TS.match
    until_clock = _Clock()  # its own hour cached: a hold's end is hours from its records
    until_text, hold_end = b"", None  # the last hold's end, as read and as parsed
    clock = _CLOCK
    kinds = _UP_ACTIONS

    def too_long() -> None:
        nonlocal bad
        bad += 1

    # Every file opened before any is read: a rotation meanwhile neither hides one nor
    # shows one twice (it renames names; what is open stays open).
    opened = open_logs(log)
    try:
        unreadable_files += [f"{p}: {e.strerror or e}" for p, e in opened.failed]
        out_of_time = False
        for path, f in reversed(opened.files):
            if out_of_time:
                unreadable_files.append(f"{path}: not read, the report's {budget:g}s ran out")
                continue
            st = os.fstat(f.fileno())
            if path != log and st.st_mtime < start - 86400:
                skipped.append(str(path))  # its newest record is older than the period
                continue
            read.append(str(path))
            most = max(GZ_FLOOR, GZ_RATIO * st.st_size) if path.name.endswith(".gz") else None
            total = file_bad = file_lines = 0
            try:
                for lines, size in _chunks(f, too_long):
                    total += size
                    file_lines += len(lines)
                    if time.monotonic() - began > budget:
                        out_of_time = True
                        unreadable_files.append(f"{path}: not read to its end, the report's "
                                                f"{budget:g}s ran out")  # fmt: skip
                        break
                    if most is not None and total > most:
                        unreadable_files.append(f"{path}: decompresses to more than "
                                                f"{most >> 20} MiB (not a log of its size: a "
                                                "gzip bomb?): not read on")  # fmt: skip
                        break
                    if file_bad > BAD_LINES and 2 * file_bad > file_lines:
                        unreadable_files.append(f"{path}: mostly not records ({file_bad} of "
                                                f"{file_lines} lines): not a log, not read "
                                                "on")  # fmt: skip
                        break
                    for line in lines:
                        m = fast_match(line)
                        if m is not None and (m[6] == b"false" or m[5] in (b"ok", b"adopted")):
                            t = clock.fast(m[1], m[2], m[3])
                            kind = fast_kind[m[5]]
                            if (
                                t is not None
                                and NOT_BEFORE <= t <= future
                                # after a death (its last_seen, down_since: the last
                                # field guardian writes): decoded
                                and (kind == UP or line.find(_DOWN_SINCE, len(line) - 48) < 0)
                            ):
                                target = by_bytes.get(m[4])
                                if target is not None:
                                    if m[5] == b"unhealthy" and t >= start:
                                        target.unhealthy_runs += 1
                                    until = None
                                    if kind == HELD and (at := line.find(_UNTIL_KEY)) > 0:
                                        at += _UNTIL_AT
                                        if line[at : at + 32] != until_text:  # parsed once
                                            until_text = line[at : at + 32]
                                            u = until_at(line, at)
                                            hold_end = until_clock.fast(*u.groups()) if u else None
                                        until = hold_end
                                    target.seen(t, kind, None, until)  # ok, held, ...
                                    continue
                        if not line or line == b"\r":
                            continue
                        raw = _record(line, decode)
                        if raw is None:
                            bad += 1
                            file_bad += 1
                            continue
                        t = clock.parse(raw["ts"])
                        if t is None:
                            bad += 1
                            file_bad += 1
                            continue
                        if t > future:
                            in_future += 1
                            continue
                        if t < NOT_BEFORE:
                            too_old += 1
                            continue
                        name = raw["target"]
                        target = targets.get(name)
                        if target is None:
                            if name in foreign:
                                foreign[name] += 1
                            elif len(foreign) < MAX_FOREIGN_NAMES:
                                foreign[name] = 1
                            else:
                                foreign_other += 1
                            continue
                        action = raw["action"]
                        state = kinds.get(action)
                        if state is None:
                            target.aside(t, raw)
                        else:
                            target.seen(t, state, raw)
            except (OSError, EOFError, zlib.error) as e:  # a torn .gz: what was read counts
                unreadable_files.append(f"{path}: {getattr(e, 'strerror', None) or e}")
    finally:
        opened.close()
    for target in targets.values():
        target.finish()
    return Report(start, end, list(targets.values()), read, skipped, unreadable_files, bad,
                  in_future, foreign, foreign_other, too_old,
                  str(log) if opened.missing else None)  # fmt: skip


def _record(line: bytes, decode: Callable[[str], Any]) -> dict[str, Any] | None:
    """A decoded line if it is a record guardian could have written; None if not."""
    if len(line) > MAX_LINE:
        return None
    try:
        value = decode(line.decode())
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("ts"), str)
        and isinstance(value.get("target"), str)
        and value.get("action") in _KNOWN_ACTIONS
        and isinstance(value.get("reason"), str)
        and isinstance(value.get("dry_run", False), bool)
    ):
        return value
    return None


# --- for a person ---

_PLAIN = {"up": "=", "restarted": "^", "down": "X", "held": "H", "unknown": "."}
_COLOUR = {"up": "\x1b[32m", "restarted": "\x1b[33m", "down": "\x1b[31;1m",
           "held": "\x1b[34m", "unknown": "\x1b[2m"}  # fmt: skip
_RESET = "\x1b[0m"


def draw(states: list[str], colour: bool) -> str:
    if not colour:
        return "".join(_PLAIN[s] for s in states)
    out: list[str] = []
    for s in states:
        ch = "█" if s == "up" else _PLAIN[s]
        out.append(f"{_COLOUR[s]}{ch}")
    return "".join(out) + _RESET


def legend(colour: bool) -> str:
    parts = [f"{draw([s], colour)} {s}" for s in ("up", "restarted", "down", "held", "unknown")]
    return "   ".join(parts)


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = round(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    shown = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return " ".join(shown[:2])


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def lines(report: Report, *, colour: bool) -> list[str]:
    out = [f"guardian report: {_stamp(report.start)} to {_stamp(report.end)} UTC "
           f"({duration(report.end - report.start)})"]  # fmt: skip
    for t in report.targets:
        out += ["", *_target_lines(t, report, colour)]
    out.append("")
    notes = []
    if report.unreadable_lines:
        notes.append(f"{report.unreadable_lines} line(s) not a record (torn, foreign or too "
                     "long): skipped")  # fmt: skip
    if report.no_log is not None:
        notes.append(f"no audit log at {report.no_log} (is audit_log right?): nothing to report")
    if report.future_records:
        notes.append(f"{report.future_records} record(s) dated in the future: not believed")
    if report.old_records:
        notes.append(f"{report.old_records} record(s) dated before 2020 (a clock not yet set?): "
                     "not believed")  # fmt: skip
    if report.foreign or report.foreign_other:
        named = ", ".join(f"{n} ({c})" for n, c in sorted(report.foreign.items()))
        more = f" and {report.foreign_other} more" if report.foreign_other else ""
        notes.append(f"records of targets not in this config: {named}{more}")
    for problem in report.unreadable_files:
        notes.append(f"could not read {problem}: the report is partial")
    files = len(report.files)
    notes.append(f"read {files} file(s)" + (f"; {len(report.skipped_files)} rotated file(s) "
                 "older than the period skipped" if report.skipped_files else ""))  # fmt: skip
    out += notes
    return out


def _target_lines(t: TargetReport, report: Report, colour: bool) -> list[str]:
    d = t.to_dict()
    up, down, held = t.seconds
    avail = d["availability"]
    head = f"{t.name}: " + (
        f"{float(avail) * 100:.3f}% available" if isinstance(avail, float) else "no observations"
    )
    period = report.end - report.start
    observed = up + down + held
    head += f" (up {duration(up)}, down {duration(down)}"
    if held:
        head += f", held {duration(held)}"
    head += f"; observed {observed / period * 100:.0f}% of the period)" if period else ")"
    rows = [head]
    cells = t.timeline.states()
    left, right = _stamp(report.start), _stamp(report.end)
    rows.append(f"  {draw(cells, colour)}")
    gap = max(1, len(cells) - len(left) - len(right))
    rows.append(f"  {left}{' ' * gap}{right}")
    rows.append(f"  {legend(colour)}   (a cell is {duration(t.timeline.width)})")
    o = d["outages"]
    starts = t.starts
    rows.append(f"  outages: {o}; starts: {starts['died']} after a death, "
                f"{starts['unhealthy']} unhealthy, {starts['by_hand']} by hand, "
                f"{starts['other']} other; {t.failed_starts} failed; "
                f"gave up {t.gave_up} time(s)")  # fmt: skip
    rec = t.recovered
    if rec:
        how = (
            f"{t.precise} known within a second (a watcher, or runs close together)"
            if t.precise
            else ""
        )
        rest = rec - t.precise
        if rest:
            how += ("; " if how else "") + (f"{rest} to the interval (deaths known to "
                                            f"within {duration(t.worst_precision)})")  # fmt: skip
        rows.append(f"  time to recovery: mean {duration(t.rec_max_sum / rec)}, longest "
                    f"{duration(t.rec_max)} from last seen alive (from first seen dead: "
                    f"{duration(t.rec_min_sum / rec)}, {duration(t.rec_min)}); {how}")  # fmt: skip
    if t.outage is not None:
        rows.append(f"  DOWN since {_iso(t.outage.lo)} at the latest record")
    if t.dry_runs:
        rows.append(f"  {t.dry_runs} dry-run record(s): read as observations, never as starts")
    if t.out_of_order:
        rows.append(f"  {t.out_of_order} record(s) more than a minute older than the one "
                    "before (a clock set back?): taken at the time before")  # fmt: skip
    f = t.last_failure
    if f is not None:
        said = f"{f.error} ({f.reason})" if f.error else f.reason
        if len(said) > 300:
            said = said[:300] + "..."
        rows.append(f"  last failure: {_iso(f.at)}: {f.action}: {said}")
    return rows


def is_colour(fd: int = 1) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return os.isatty(fd) and stat.S_ISCHR(os.fstat(fd).st_mode)
    except OSError:
        return False

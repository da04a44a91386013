"""The audit log: one JSON line per target per run, appended whole, read from its end.

The log is opened afresh for every record (O_APPEND, never through a
symlink), so logrotate can move it without copytruncate, and each record is
one write(2): concurrent runs never interleave within a line.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple, get_args

from guardian import __version__
from guardian.errors import AuditError
from guardian.files import make_dirs, open_regular

# Every action a record can carry, listed once; README.md describes each.
Action = Literal[
    "ok",
    "adopted",
    "started",
    "would_start",
    "start_failed",
    "skipped",
    "timeout",
    "error",
    "warning",
    "unhealthy",
    "restarted_unhealthy",
    "backoff",
    "gave_up",
    "interrupted",
    "stopped",
    "restarted",
    "reset",
    "held",
    "watch_ended",
]
ACTIONS: tuple[Action, ...] = get_args(Action)

_MAX_TAIL_LINE = 500
# A reason or an error is evidence in words: kilobytes at most, whatever it quotes (a
# stranger's command line can be megabytes, and a record must stay one readable line).
MAX_TEXT = 4096


def shorten(text: str, most: int = MAX_TEXT) -> str:
    """``text``, cut to ``most`` characters, saying how much was cut."""
    if len(text) <= most:
        return text
    return f"{text[:most]}... ({len(text) - most} more characters)"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_HOST = os.uname().nodename


class AuditRecord:
    """One decision about one target: what was done, why, and the evidence.

    A plain class rather than a dataclass: a healthy ``guardian check`` runs
    every minute, and each dataclass costs about a millisecond to create at
    import. When, where and by whom are filled in when the record is made.
    """

    __slots__ = (
        "action",
        "down_since",
        "dry_run",
        "duration_ms",
        "error",
        "guardian_pid",
        "hold",
        "hooks",
        "host",
        "last_seen",
        "next_try",
        "old_pid",
        "orphans",
        "output_tail",
        "pid",
        "probes",
        "reason",
        "target",
        "ts",
        "version",
    )

    def __init__(
        self,
        target: str,
        action: Action,
        reason: str,
        *,
        pid: int | None = None,
        old_pid: int | None = None,
        duration_ms: int = 0,
        dry_run: bool = False,
        error: str | None = None,
        output_tail: tuple[str, ...] = (),
        orphans: tuple[int, ...] = (),  # what a dead target left in its session
        probes: tuple[str, ...] = (),  # the health probes that failed
        hooks: tuple[str, ...] = (),  # what each hook run did
        next_try: str | None = None,  # backoff and gave_up: when it will be started again
        hold: dict[str, object] | None = None,  # held: by whom, since, until, why
        down_since: str | None = None,  # a start after a death: when first seen dead
        last_seen: str | None = None,  # ... and when last seen alive (the death is between)
    ) -> None:
        self.ts = now_rfc3339()
        self.host = _HOST
        self.guardian_pid = os.getpid()
        self.version = __version__
        self.target = target
        self.action = action
        self.reason = reason
        self.pid = pid
        self.old_pid = old_pid
        self.duration_ms = duration_ms
        self.dry_run = dry_run
        self.error = error
        self.output_tail = output_tail
        self.orphans = orphans
        self.probes = probes
        self.hooks = hooks
        self.next_try = next_try
        self.hold = hold
        self.down_since = down_since
        self.last_seen = last_seen

    @classmethod
    def from_json(cls, line: str) -> AuditRecord:
        """A record another guardian process made (a worker's), as it made it."""
        data = json.loads(line)
        record = cls(
            data["target"],
            data["action"],
            data["reason"],
            pid=data.get("pid"),
            old_pid=data.get("old_pid"),
            duration_ms=data.get("duration_ms", 0),
            dry_run=data.get("dry_run", False),
            error=data.get("error"),
            output_tail=tuple(data.get("output_tail", ())),
            orphans=tuple(data.get("orphans", ())),
            probes=tuple(data.get("probes", ())),
            hooks=tuple(data.get("hooks", ())),
            next_try=data.get("next_try"),
            hold=data.get("hold"),
            down_since=data.get("down_since"),
            last_seen=data.get("last_seen"),
        )
        record.ts, record.guardian_pid = data["ts"], data["guardian_pid"]
        return record

    def to_json(self) -> str:
        # Field order as documented: when and where first, then what.
        data: dict[str, object] = {
            "ts": self.ts,
            "host": self.host,
            "guardian_pid": self.guardian_pid,
            "version": self.version,
            "target": self.target,
            "action": self.action,
            "reason": shorten(self.reason),
            "pid": self.pid,
            "old_pid": self.old_pid,
            "duration_ms": self.duration_ms,
            "dry_run": self.dry_run,
        }
        optional: dict[str, object] = {
            "error": shorten(self.error) if self.error else None,
            "output_tail": [line[:_MAX_TAIL_LINE] for line in self.output_tail],
            "orphans": list(self.orphans),
            "probes": list(self.probes),
            "hooks": list(self.hooks),
            "next_try": self.next_try,
            "hold": self.hold,
            "last_seen": self.last_seen,
            "down_since": self.down_since,
        }
        data.update((key, value) for key, value in optional.items() if value)
        return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


_APPEND = os.O_APPEND | os.O_CREAT


def append(path: Path, record: AuditRecord) -> None:
    """Append one record as one line, or raise AuditError.

    A record always starts a line of its own: after a short write (a full
    disk) the log ends in a torn line, and a record appended to it would make
    both one unreadable line.
    """
    # A path that is not UTF-8 (a surrogate escape) is written as its JSON escape,
    # "\\udcff": the line stays valid UTF-8 and valid JSON, never an encoding error.
    line = (record.to_json() + "\n").encode("utf-8", "backslashreplace")
    try:
        make_dirs(path.parent, 0o750)
        try:
            # Read access, to look at the last byte (pread on a write-only fd is EBADF).
            fd = open_regular(path, os.O_RDWR | _APPEND, 0o640)
            readable = True
        except PermissionError:
            # A log this user may append to but not read: write without the look.
            fd = open_regular(path, os.O_WRONLY | _APPEND, 0o640)
            readable = False
    except OSError as e:
        raise AuditError(f"cannot write audit log {path}: {e.strerror or e}") from None
    data = line
    done = 0
    try:
        # The look at the last byte and the append are one step among guardian runs
        # (a look while another run's write is half copied would see a torn line that
        # is not one). Waited for briefly only: a stuck holder must not hold this one.
        _lock_briefly(fd)
        size = os.fstat(fd).st_size
        if readable and size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + line
        view = memoryview(data)
        while done < len(data):
            # One write(2) unless the disk fills up part way: then the rest is
            # tried again, and ENOSPC (or whatever stops it) is raised below.
            written = os.write(fd, view[done:])
            if written == 0:
                raise AuditError(
                    f"cannot write audit log {path}: short write ({done} of {len(data)} bytes)"
                )
            done += written
    except OSError as e:
        short = f"short write ({done} of {len(data)} bytes): " if done else ""
        raise AuditError(f"cannot write audit log {path}: {short}{e.strerror or e}") from None
    finally:
        os.close(fd)


def _lock_briefly(fd: int, wait: float = 0.5) -> None:
    """flock ``fd`` if it comes within ``wait`` seconds; go on without it if not.

    (Dropped when the file is closed.)"""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)
        except OSError:
            return  # a file system without flock: the look is then best effort
        else:
            return


# --- the rotated logs ---

_ROTATED = re.compile(r"\.(\d{1,3})(\.gz)?|-\d{8,10}(\.gz)?")  # .1 .2.gz; dateext -20261207


def log_files(path: Path) -> list[Path]:
    """The audit log and its rotated files, newest first: ``path`` itself (if it exists),
    then ``path.1``, ``path.2.gz``, ... as guardian's own rotation and logrotate leave them
    (also logrotate's ``dateext`` names, ``path-20261207[.gz]``).

    Numbered files go by their number; dated ones by their date. Only regular files
    (never through a symlink) are listed; a folder that cannot be listed gives the
    log alone.
    """
    numbered: list[tuple[int, Path]] = []
    dated: list[tuple[str, Path]] = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        names = []
    base = path.name
    for name in names:
        if not name.startswith(base) or len(name) == len(base):
            continue
        m = _ROTATED.fullmatch(name, len(base))
        if m is None:
            continue
        candidate = path.parent / name
        try:
            if not stat.S_ISREG(os.lstat(candidate).st_mode):
                continue
        except OSError:
            continue
        if m[1] is not None:
            numbered.append((int(m[1]), candidate))
        else:
            dated.append((name, candidate))
    found = [path] if os.path.lexists(path) else []
    # Dated names sort as their dates (newest first); a plain .N before a .N.gz.
    found += [p for _, p in sorted(numbered, key=lambda x: (x[0], x[1].suffix == ".gz"))]
    found += [p for _, p in sorted(dated, reverse=True)]
    return found


def open_log(path: Path) -> BinaryIO:
    """One of ``log_files``, opened for reading (a ``.gz`` one decompressed on the fly);
    never through a symlink, never a FIFO or a device. Raises OSError."""
    f: BinaryIO = os.fdopen(open_regular(path), "rb", buffering=_CHUNK)
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    return f


# --- reading the log back, newest first ---

_CHUNK = 64 << 10
MAX_LINE = 1 << 20  # a longer line is unreadable, and is skipped without being held whole
_decode = json.JSONDecoder().decode  # json.loads less its per-call checks: a budget is many lines


class Tail(NamedTuple):
    """What ``read_backwards`` found at the end of the log."""

    records: list[dict[str, object]]  # parsed JSON objects, newest first
    unreadable: int  # lines that were not a record (torn, foreign, not UTF-8, too long)
    truncated: bool  # stopped at the byte budget before the start of the file


def _parse(line: bytes) -> dict[str, object] | None:
    if len(line) > MAX_LINE:
        return None
    try:
        value = _decode(line.decode())
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("ts"), str)
        and isinstance(value.get("target"), str)
        and isinstance(value.get("action"), str)
    ):
        return value
    return None


def read_backwards(
    path: Path,
    *,
    max_bytes: int = 32 << 20,
    stop: Callable[[dict[str, object]], bool] | None = None,
    keep: Callable[[dict[str, object]], bool] | None = None,
) -> Tail:
    """The log's records, newest first, reading at most ``max_bytes`` from its end.

    ``stop`` sees every record in turn and ends the reading by returning True
    (that record is the last one kept). ``keep`` (default: every record) says
    which records go into ``Tail.records``; a caller that folds records in
    ``stop`` keeps none, and then memory stays at a chunk and the longest line
    (at most ``MAX_LINE``) whatever the budget. A line that is not a JSON
    object with string fields "ts", "target" and "action" is counted as
    unreadable; an empty line is skipped. Raises OSError (FileNotFoundError
    when there is no log yet), also when the path is not a regular file.
    """
    fd = open_regular(path)
    try:
        return _scan(fd, os.fstat(fd).st_size, max_bytes, stop, keep)
    finally:
        os.close(fd)


def _scan(
    fd: int,
    size: int,
    budget: int,
    stop: Callable[[dict[str, object]], bool] | None,
    keep: Callable[[dict[str, object]], bool] | None,
) -> Tail:
    records: list[dict[str, object]] = []
    unreadable = 0

    def take(line: bytes) -> bool:
        nonlocal unreadable
        if not line:
            return False
        record = _parse(line)
        if record is None:
            unreadable += 1
            return False
        if keep is None or keep(record):
            records.append(record)
        return stop is not None and stop(record)

    pos = size  # what follows pos has been read; the log as it was when opened
    carry = b""  # the end of a line whose start lies before pos
    skipping = False  # inside a line longer than MAX_LINE: drop it until its start
    while pos > 0 and budget > 0:
        n = min(_CHUNK, pos, budget)
        chunk = os.pread(fd, n, pos - n)
        if len(chunk) != n:
            # The file shrank under us (copytruncate): what we would read next
            # is gone, and what is there now does not continue our lines.
            return Tail(records, unreadable, truncated=False)
        pos -= n
        budget -= n
        if skipping:
            cut = chunk.rfind(b"\n")
            if cut < 0:
                continue
            unreadable += 1  # the long line, which starts after this newline
            skipping = False
            buf = chunk[:cut]
        else:
            buf = chunk + carry
        lines = buf.split(b"\n")
        carry = lines[0]
        for line in reversed(lines[1:]):
            if take(line):
                return Tail(records, unreadable, truncated=False)
        if len(carry) > MAX_LINE:
            carry, skipping = b"", True
    if skipping:  # a long line runs back to the start of the file or of the budget
        return Tail(records, unreadable + 1, truncated=pos > 0)
    if pos > 0:  # the budget ran out: carry may be part of a line, so it is not judged
        return Tail(records, unreadable, truncated=True)
    take(carry)  # the file's first line
    return Tail(records, unreadable, truncated=False)

"""The audit log: one JSON line per target per run, appended whole, read from its end.

The log is opened afresh for every record (O_APPEND, never through a
symlink), so logrotate can move it without copytruncate, and each record is
one write(2): concurrent runs never interleave within a line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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
from guardian.files import SAFE, NotRegular, make_dirs, open_regular, remove_leftover

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
            # Last of all: report's fast path finds it in a line's last bytes.
            "down_since": self.down_since,
        }
        data.update((key, value) for key, value in optional.items() if value)
        return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


_APPEND = os.O_APPEND | os.O_CREAT
# Opened, then found moved away (rotated by another run) when locked, or gone once written
# to: opened again, this many times at most; then AuditError (the record goes to stderr).
# A record is never written into a file that is not at the log's path when it is looked at.
# A log this many times past audit_max_bytes whose lock a run could not have is stuck:
# said (a log that only just passed it waits for the run that holds the lock).
STUCK_FACTOR = 2
_REOPENS = 20
_REWRITES = 3  # copies of a record that joined a torn line or was split (written again)
# Compressing one rotated log may take this long (it is done while the log is locked,
# inside the run's time limit); past it, that log is kept plain, as .2 instead of .2.gz.
# Never longer than what the run has left (less _TIME_AFTER, for the rest of its records).
COMPRESS_BUDGET = 5.0
_TIME_AFTER = 1.0
_GZ_LEVEL = 6  # gzip's default: 10 MiB of records in a few tens of milliseconds
# The log's lock is waited for at most _LOCK_WAIT a record, and _WAIT_PER_WINDOW in all every
# _WAIT_WINDOW seconds by one process (see _wait_allowed); past that, tried once, not waited.
_LOCK_WAIT = 0.5
_WAIT_PER_WINDOW = 1.0
_WAIT_WINDOW = 60.0
# Processes that have found their log cannot be rotated (said once; not tried again).
_unrotatable: set[Path] = set()


class RotationError(AuditError):
    """The record was written, but the log could not be rotated (it keeps growing)."""


def append(path: Path, record: AuditRecord, *, max_bytes: int = 0, keep: int = 5) -> None:
    """Append one record as one line, or raise AuditError.

    A record is always whole on a line of its own. After a short write (a full
    disk) the log ends in a torn line, and a record appended to it joins it in
    one unreadable line: the record is then written once more (``_write``).

    ``max_bytes`` (0: never): a log that this record would take past it is
    rotated first (``rotate``), under its lock, and the record starts the new
    log. A log that cannot be rotated still gets the record; RotationError
    then says why (once a process).
    """
    # A path that is not UTF-8 (a surrogate escape) is written as its JSON escape,
    # "\\udcff": the line stays valid UTF-8 and valid JSON, never an encoding error.
    line = (record.to_json() + "\n").encode("utf-8", "backslashreplace")
    problem: str | None = None
    rotated = False
    # The lock is waited for at most _LOCK_WAIT for this record, all re-opens together.
    wait_until = time.monotonic() + _wait_allowed()
    for _ in range(_REOPENS):
        fd, readable = _open(path)
        try:
            # Rotation needs the lock (only its holder renames the log); a record is written
            # with it or without (_write looks after the write, which needs none). Waited
            # for briefly only: a stuck holder must not hold this one.
            locked = _lock_briefly(fd, wait_until)
            st = os.fstat(fd)
            if not _still_at(path, st):
                # Rotated (or moved by logrotate) since it was opened, however long ago (a
                # run stopped or swapped out meanwhile): the file at the path now. What was
                # opened may be gone already, or be compressed and removed after this write.
                continue
            if (
                locked
                and 0 < max_bytes < st.st_size + len(line)
                and not rotated
                and path not in _unrotatable
            ):
                rotated = True
                try:
                    rotate(path, st, keep, budget=_compress_budget())
                except OSError as e:
                    _unrotatable.add(path)
                    problem = f"cannot rotate audit log {path}: {_why(e, path)}"
                else:
                    continue  # the record starts the new log
            elif (
                not locked
                and 0 < max_bytes * STUCK_FACTOR < st.st_size
                and path not in _unrotatable
            ):
                # Past its size many times over, and its lock never free: someone holds it
                # (read access is enough), and only a run holding it rotates. Said once a
                # process, or the log would grow without bound unseen.
                _unrotatable.add(path)
                problem = (f"cannot rotate audit log {path}: it has grown to {st.st_size} "
                           f"bytes, {STUCK_FACTOR} times audit_max_bytes, and another "
                           "process holds its lock")  # fmt: skip
            _write(fd, path, line, readable)
            # Written without the lock (another run held it longer than we wait), a run
            # may have rotated it meanwhile, and, had this one been stopped between its
            # look and its write for two rotations, removed it: then it is written again.
            if os.fstat(fd).st_nlink == 0:
                continue  # (its record perhaps twice, in the compressed copy: never lost)
        finally:
            os.close(fd)
        break
    else:
        raise AuditError(
            f"cannot write audit log {path}: it was moved away {_REOPENS} times while "
            "being opened (something keeps renaming it)"
        )
    if problem is not None:
        raise RotationError(f"{problem}; the record was written to it, which keeps growing")


def _why(e: OSError, path: Path) -> str:
    """What is wrong, naming the file it is wrong with when that is not ``path``."""
    why = e.strerror or str(e)
    if e.filename and str(e.filename) != str(path) and str(e.filename) not in why:
        return f"{e.filename} {why}" if isinstance(e, NotRegular) else f"{e.filename}: {why}"
    return why


def _compress_budget() -> float:
    """How long compressing a rotated log may take: COMPRESS_BUDGET, within the time the
    run has left (a rotation is inside a record's critical step, where the run's own
    time-out waits for it: it must never be what makes the run overrun)."""
    from guardian import deadline

    left = deadline.run_remaining()
    if left is None:
        return COMPRESS_BUDGET
    return max(0.0, min(COMPRESS_BUDGET, left - _TIME_AFTER))


def _open(path: Path) -> tuple[int, bool]:
    """The log, opened to append (made if missing); and whether it could be read too."""
    try:
        make_dirs(path.parent, 0o750)
        try:
            # Read access, to look at the last byte (pread on a write-only fd is EBADF).
            return open_regular(path, os.O_RDWR | _APPEND, 0o640), True
        except PermissionError:
            # A log this user may append to but not read: write without the look.
            return open_regular(path, os.O_WRONLY | _APPEND, 0o640), False
    except OSError as e:
        raise AuditError(f"cannot write audit log {path}: {e.strerror or e}") from None


def _write(fd: int, path: Path, line: bytes, readable: bool) -> None:
    """Append ``line``; and if it did not land whole on a line of its own, once more.

    The look is made after the write, at the byte just before where this record went: all
    that precedes it was written by write(2)s that had ended, so only a short write can
    have left it torn. A look before the write could not tell a torn line from another
    writer's record being copied in (one that took no lock, or whose lock this one did not
    wait for): a newline put before this record on that guess made a blank line.
    A record that took more than one write(2) (the disk filled part way) may have had
    another's put between its parts: then too it is written again.
    (A log this user cannot read is written without the look.)"""
    for _ in range(_REWRITES):
        start, whole = _write_once(fd, path, line)
        if not whole:
            continue  # split by another writer's record: neither part is readable
        if not readable or start == 0:
            return
        try:
            before = os.pread(fd, 1, start - 1)
        except OSError as e:
            raise AuditError(f"cannot read back audit log {path}: {e.strerror or e}") from None
        if before == b"\n":
            return
        # Joined to a torn line: that line (now with this record's copy) stays unreadable,
        # counted as such by its readers; the next copy starts a line (the byte before it
        # is the end of this copy, unless another short write tore the log meanwhile).
    raise AuditError(
        f"cannot write audit log {path}: each of {_REWRITES} copies of the record joined a "
        "line torn by a short write or was split by another's (is the disk full?)"
    )


def _write_once(fd: int, path: Path, data: bytes) -> tuple[int, bool]:
    """Append ``data``: the offset where it went (where its first part went, after a short
    write), and whether it is in one piece."""
    done = 0
    start = end = 0
    whole = True
    try:
        view = memoryview(data)
        while done < len(data):
            # One write(2) unless the disk fills up part way: then the rest is
            # tried again, and ENOSPC (or whatever stops it) is raised below.
            written = os.write(fd, view[done:])
            if written == 0:
                raise AuditError(
                    f"cannot write audit log {path}: short write ({done} of {len(data)} bytes)"
                )
            at = os.lseek(fd, 0, os.SEEK_CUR)
            if done == 0:
                start = at - written
            elif at - written != end:
                whole = False  # another writer's bytes went in between
            end = at
            done += written
    except OSError as e:
        short = f"short write ({done} of {len(data)} bytes): " if done else ""
        raise AuditError(f"cannot write audit log {path}: {short}{e.strerror or e}") from None
    return start, whole


def _still_at(path: Path, st: os.stat_result) -> bool:
    """Whether the file open as ``st`` is still the one at ``path``."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


class _Waits:
    """How long this process has waited for the log's lock in the current window."""

    since = -_WAIT_WINDOW  # when the window began (monotonic)
    spent = 0.0


_waits = _Waits()


def _wait_allowed() -> float:
    """How long the next record may wait for the log's lock: _LOCK_WAIT, less what this
    process has already waited within the window (_WAIT_PER_WINDOW every _WAIT_WINDOW
    seconds), and never into the run's last _TIME_AFTER (the run's time-out waits for a
    record: a lock held by someone else must never make it overrun).

    Anyone who can read the log can flock it (a read-only descriptor is enough), and hold
    it for ever: then one record waits, finds it held all along, and the others written
    in the window go without waiting (``_lock_briefly`` spends the window)."""
    from guardian import deadline

    now = time.monotonic()
    if now - _waits.since >= _WAIT_WINDOW:
        _waits.since, _waits.spent = now, 0.0
    allowed = min(_LOCK_WAIT, _WAIT_PER_WINDOW - _waits.spent)
    left = deadline.run_remaining()
    if left is not None:
        allowed = min(allowed, left - _TIME_AFTER)
    return max(0.0, allowed)


def _lock_briefly(fd: int, until: float) -> bool:
    """flock ``fd`` if it comes before ``until`` (monotonic) (True); go on without it if not.
    Tried once at least, whatever ``until``. What is waited is counted (``_wait_allowed``);
    a wait that ends without the lock spends the window: the next records do not wait.

    (Dropped when the file is closed.)"""
    began = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= until:
                    if until > began:  # held for all the time this record could wait
                        _waits.spent = _WAIT_PER_WINDOW
                    return False
                time.sleep(0.002)
            except OSError:
                return False  # a file system without flock: the look is then best effort
            else:
                return True
    finally:
        _waits.spent += time.monotonic() - began


# --- rotating it ---

# Canonical numbers only: .01 is not .1 (an operator's file, never moved or removed).
_NUMBERED = re.compile(r"\.([1-9]\d{0,2})(\.gz)?")


def rotate(path: Path, st: os.stat_result, keep: int, *, budget: float = COMPRESS_BUDGET) -> None:
    """Rotate the log at ``path``, whose caller holds its flock and has fstat'ed it as
    ``st``: ``path.<keep>[.gz]`` and older are removed, ``path.<k>.gz`` becomes
    ``path.<k+1>.gz``, ``path.1`` is compressed into ``path.2.gz`` (plain ``path.2`` if that
    takes longer than ``budget`` seconds), and ``path`` becomes ``path.1`` (as logrotate's
    ``delaycompress``: a run still writing to the log it opened before the rename writes
    to ``path.1``, never to a file being compressed). A fresh log is made with the old
    one's group and mode. Raises OSError, having changed nothing, when anything but a
    regular file of this user's is at one of those names, or the log has other names
    (a hard link: the file it also is must not become a rotated log).

    Only ``path.<keep>[.gz]`` is removed, what this rotation would push out, and only when
    it looks like guardian's (a gzip stream, or JSON lines): files numbered above it (left
    by a larger ``audit_keep`` once, or an operator's ``.99``) are never touched.

    Only a holder of the log's lock rotates it, and every writer checks, once it holds
    the lock, that what it opened is still at ``path``: so two runs never rotate at
    once, and no record goes into a file after it was rotated (see ``append``).
    """
    found = _may_rotate(path, st, keep)
    source = found.get((1, False)) if keep > 1 else None
    if source is not None:
        _check_own(source)
        if (1, True) in found:  # two files for .2.gz (logrotate's and ours): change nothing
            raise FileExistsError(errno.EEXIST, f"both {source} and {found[1, True]}")
    # Compressed first: a failure then (a disk without room for it) has changed nothing.
    packed = _pack(source, _at(path, 2, True), budget) if source is not None else None
    try:
        for gz in (True, False):
            if (keep, gz) in found:
                os.unlink(found[keep, gz])
        for n in range(keep - 1, 0, -1):
            for gz in (True, False):
                if (n, gz) in found and (n > 1 or gz):
                    _move(found[n, gz], _at(path, n + 1, gz))
        if source is not None and packed is not None:
            _move(packed, _at(path, 2, True))
            packed = None
            os.unlink(source)  # (a kill just before this: its records twice, never lost)
        elif source is not None:
            _move(source, _at(path, 2, False))  # too slow, or no room, to compress: plain
    finally:
        if packed is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(packed)
    if not _still_at(path, st):
        return  # moved meanwhile (by logrotate): what is at path now is not ours to move
    _move(path, _at(path, 1, False))
    _create_like(path, st)


def _may_rotate(path: Path, st: os.stat_result, keep: int) -> dict[tuple[int, bool], Path]:
    """``_numbered``, once it is known that rotation may move and remove them: the log has
    one name, and what it would remove (``.keep``) is guardian's. Raises OSError if not."""
    if st.st_nlink > 1:
        raise PermissionError(
            errno.EPERM,
            f"{path} has {st.st_nlink} names (a hard link): not rotated, the file it also "
            "is would become a rotated log",
            str(path),
        )
    found = _numbered(path, keep)
    for gz in (True, False):
        if (keep, gz) in found:
            _check_ours(found[keep, gz], gz)
    return found


def _at(path: Path, n: int, gz: bool) -> Path:
    return path.parent / f"{path.name}.{n}{'.gz' if gz else ''}"


def _numbered(path: Path, keep: int) -> dict[tuple[int, bool], Path]:
    """The rotated files up to ``keep``, by number and whether gzipped; OSError if one is
    not a regular file (never moved, removed or read: someone else's doing). Those above
    ``keep`` are not rotation's business."""
    found: dict[tuple[int, bool], Path] = {}
    base = path.name
    packing = f".{_at(path, 2, True).name}."  # what _pack names its file, less PID.HEX.tmp
    for name in os.listdir(path.parent):
        if name.startswith(packing):
            # What a rotation killed outright (its hard time-out) left: removed as a state
            # file's leftover is (only a regular file of ours, whose writer is gone).
            remove_leftover(path.parent, name, packing)
            continue
        m = _NUMBERED.fullmatch(name, len(base)) if name.startswith(base) else None
        if m is None or int(m[1]) > keep:
            continue
        p = path.parent / name
        mode = os.lstat(p).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(p, mode)
        found[int(m[1]), m[2] is not None] = p
    return found


def _move(src: Path, dst: Path) -> None:
    """rename(2), never over something (the names above it were emptied first)."""
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, f"{dst} is in the way", str(dst))
    os.rename(src, dst)


def _check_ours(path: Path, gz: bool) -> None:
    """A file rotation would remove must look like one it made: a gzip stream (``.gz``),
    or empty or JSON lines; PermissionError if not (an operator's file, kept)."""
    _check_own(path)
    fd = open_regular(path)
    try:
        head = os.read(fd, 2)
    finally:
        os.close(fd)
    if head in (b"", b"\x1f\x8b" if gz else b'{"'):
        return
    raise PermissionError(errno.EPERM, f"{path} is not a rotated audit log", str(path))


def _check_own(path: Path) -> None:
    """The file to compress must be this user's own, and have no other name (a hard link
    planted in the folder must not make root copy another file into a log)."""
    st = os.lstat(path)
    if st.st_uid != os.geteuid() or st.st_nlink != 1:
        raise PermissionError(
            errno.EPERM,
            f"{path} is not guardian's own (owner uid {st.st_uid}, {st.st_nlink} links)",
            str(path),
        )


def _create_like(path: Path, st: os.stat_result) -> None:
    """A new, empty log with the old one's group and mode (never writable by others): a
    log shipper in its group reads on. (If it cannot be made, the next record makes it.)"""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | SAFE
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return  # someone else's new log, made first (a run's without the lock), is kept
    try:
        if st.st_uid == os.geteuid():
            with contextlib.suppress(OSError):
                os.fchown(fd, -1, st.st_gid)
        with contextlib.suppress(OSError):
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o644)
    finally:
        os.close(fd)


_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


def _pack(src: Path, dst: Path, budget: float = COMPRESS_BUDGET) -> Path | None:
    """``src`` gzipped into a temporary file beside ``dst``, synced (renamed by the
    caller); None (nothing left behind) if that takes longer than ``budget`` seconds, or
    the disk has no room for it. Raises OSError."""
    import zlib  # (only a rotation compresses)

    if budget <= 0:
        return None  # no time left for it at all: kept plain
    began = time.monotonic()
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd_in = open_regular(src)
    try:
        st = os.fstat(fd_in)
        fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | SAFE, 0o600)
        done = False
        try:
            with contextlib.suppress(OSError):
                os.fchown(fd_out, -1, st.st_gid)
            os.fchmod(fd_out, stat.S_IMODE(st.st_mode) & 0o644)
            packer = zlib.compressobj(_GZ_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip stream
            while chunk := os.read(fd_in, 1 << 20):
                _write_all(fd_out, packer.compress(chunk))
                if time.monotonic() - began > budget:
                    return None
            _write_all(fd_out, packer.flush())
            os.fsync(fd_out)
            done = True
        except OSError as e:
            if e.errno in _NO_ROOM:
                return None
            raise
        finally:
            os.close(fd_out)
            if not done:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    finally:
        os.close(fd_in)
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- the rotated logs ---

_ROTATED = re.compile(r"\.([1-9]\d{0,2})(\.gz)?|-\d{8,10}(\.gz)?")  # .1 .2.gz; dateext -20261207


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
        return _gzip_log(f)
    return f


# A rotation while they are being opened: opened again, this many times at most.
_OPEN_TRIES = 5


class OpenLogs(NamedTuple):
    """``log_files``, opened together: each file read once, none missed by a rotation."""

    files: list[tuple[Path, BinaryIO]]  # newest first, as log_files
    failed: list[tuple[Path, OSError]]  # could not be opened (never the log's absence)
    missing: bool  # no audit log at the path (and no rotated file either)
    names: list[Path]  # log_files as they were when opened, newest first

    def in_order(self) -> list[tuple[Path, BinaryIO | OSError]]:
        """Opened and failed together, newest first."""
        rank = {n: i for i, n in enumerate(self.names)}
        both: list[tuple[Path, BinaryIO | OSError]] = [*self.files, *self.failed]
        return sorted(both, key=lambda x: rank.get(x[0], len(rank)))

    def close(self) -> None:
        for _, f in self.files:
            with contextlib.suppress(OSError):
                f.close()


def open_logs(path: Path) -> OpenLogs:
    """Every one of ``log_files(path)``, opened before any is read, so a rotation while
    they are read changes nothing: it renames files, and what is open stays open.

    A rotation while they are being opened would make one name open a file another name
    had (read twice) or skip one (renamed past the name before it was opened): so once
    all are open the folder is listed again, and if any name now holds another file than
    the one opened as it, all are opened again (``_OPEN_TRIES`` times at most; then the
    last set, each file at most once). The caller closes them (``OpenLogs.close``)."""
    last: OpenLogs | None = None
    for _ in range(_OPEN_TRIES):
        if last is not None:
            last.close()
        names = log_files(path)
        files: list[tuple[Path, BinaryIO]] = []
        failed: list[tuple[Path, OSError]] = []
        seen: dict[tuple[int, int], Path] = {}
        moved = False
        for name in names:
            try:
                f = open_log(name)
            except FileNotFoundError:
                moved = True  # rotated on meanwhile
                continue
            except OSError as e:
                failed.append((name, e))
                continue
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) in seen:  # one file under two names: moved on meanwhile
                f.close()
                moved = True
                continue
            seen[st.st_dev, st.st_ino] = name
            files.append((name, f))
        last = OpenLogs(files, failed, missing=not names, names=names)
        if (
            not moved
            and log_files(path) == names
            and all(_still_at(n, os.fstat(f.fileno())) for n, f in files)
        ):
            return last
    assert last is not None  # noqa: S101  # (_OPEN_TRIES > 0)
    return last


def _gzip_log(raw: BinaryIO) -> BinaryIO:
    """``raw`` decompressed, as a file that closes ``raw`` when closed (one given as
    ``fileobj`` is left open by GzipFile: a descriptor leaked per rotated log read).
    gzip is imported here, not with the module: a healthy check never reads a .gz."""
    import gzip

    class GzipLog(gzip.GzipFile):
        def close(self) -> None:
            try:
                super().close()
            finally:
                raw.close()

    return GzipLog(fileobj=raw, mode="rb")  # type: ignore[return-value]


# --- reading the log back, newest first ---

_CHUNK = 64 << 10
MAX_LINE = 1 << 20  # a longer line is unreadable, and is skipped without being held whole
_decode = json.JSONDecoder().decode  # json.loads less its per-call checks: a budget is many lines


class Tail(NamedTuple):
    """What ``read_backwards`` found at the end of the log."""

    records: list[dict[str, object]]  # parsed JSON objects, newest first
    unreadable: int  # lines that were not a record (torn, foreign, not UTF-8, too long)
    truncated: bool  # stopped at the byte budget before the start of the file


class History(NamedTuple):
    """What ``read_history`` found: as Tail, and what ended it early."""

    records: list[dict[str, object]]
    unreadable: int
    truncated: bool
    problem: str | None = None  # "file: why" a rotated file could not be read (read so far)


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
        return _scan(_reader(fd), os.fstat(fd).st_size, max_bytes, stop, keep)[0]
    finally:
        os.close(fd)


# A rotated .gz is read forwards to reach its end: at most this many times the budget
# decompressed (a gzip bomb must not make status slow); past it, it counts as the budget.
_GZ_WORK = 4


def read_history(
    path: Path,
    *,
    max_bytes: int = 32 << 20,
    stop: Callable[[dict[str, object]], bool] | None = None,
    keep: Callable[[dict[str, object]], bool] | None = None,
) -> History:
    """``read_backwards``, going on into the rotated files (``log_files``: ``path.1``,
    ``path.2.gz``, ...) while ``stop`` has not ended it, within ``max_bytes`` in all (of
    decompressed records). Just after a rotation the log holds minutes, and the day's
    history is in ``path.1``. The files are all opened first (``open_logs``): a rotation
    meanwhile neither hides one nor shows one twice.

    Raises OSError as read_backwards when the log itself cannot be read
    (FileNotFoundError when there is no log at all). A rotated file that cannot be read
    ends the reading there: ``Tail.problem`` says which and why, and what was read
    before it is kept."""
    import zlib  # (status reads .gz files; a check never does)

    opened = open_logs(path)
    try:
        if opened.missing:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        failed = dict(opened.failed)
        if path in failed:
            raise failed[path]
        records: list[dict[str, object]] = []
        unreadable, budget = 0, max_bytes
        for name, f in opened.in_order():
            if isinstance(f, OSError):
                return History(records, unreadable, False, f"{name}: {_why(f, name)}")
            try:
                if name.name.endswith(".gz"):
                    tail, stopped, used = _scan_gz(f, budget, stop, keep)
                else:
                    fd = f.fileno()
                    tail, stopped, used = _scan(_reader(fd), os.fstat(fd).st_size, budget,
                                                stop, keep)  # fmt: skip
            except (OSError, EOFError, zlib.error) as e:
                if name == path:
                    raise
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                return History(records, unreadable, False, f"{name}: {why or 'damaged'}")
            records += tail.records
            unreadable += tail.unreadable
            budget -= used
            if stopped or tail.truncated:
                return History(records, unreadable, tail.truncated)
        return History(records, unreadable, truncated=False)
    finally:
        opened.close()


def _scan_gz(
    f: BinaryIO,
    budget: int,
    stop: Callable[[dict[str, object]], bool] | None,
    keep: Callable[[dict[str, object]], bool] | None,
) -> tuple[Tail, bool, int]:
    """_scan of a gzipped log: decompressed forwards, its last ``budget`` bytes kept."""
    buf = bytearray()
    total = 0
    while chunk := f.read(_CHUNK):
        total += len(chunk)
        if total > _GZ_WORK * max(budget, _CHUNK):
            return Tail([], 0, truncated=True), False, budget
        buf += chunk
        if len(buf) > budget + 4 * _CHUNK:
            # Its start dropped: what is kept is longer than the budget, so _scan
            # stops before it and never takes a cut line for the file's first.
            del buf[: len(buf) - budget - _CHUNK]
    view = memoryview(buf)
    return _scan(lambda at, n: bytes(view[at : at + n]), len(buf), budget, stop, keep)


def _reader(fd: int) -> Callable[[int, int], bytes]:
    return lambda at, n: os.pread(fd, n, at)


def _scan(
    read: Callable[[int, int], bytes],
    size: int,
    budget: int,
    stop: Callable[[dict[str, object]], bool] | None,
    keep: Callable[[dict[str, object]], bool] | None,
) -> tuple[Tail, bool, int]:
    """The records of what ``read(offset, n)`` reads, of ``size`` bytes, from its end;
    whether ``stop`` (or a file cut short under it) ended the reading; bytes read."""
    allowed = budget
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
        chunk = read(pos - n, n)
        if len(chunk) != n:
            # The file shrank under us (copytruncate): what we would read next
            # is gone, and what is there now does not continue our lines.
            return Tail(records, unreadable, truncated=False), True, allowed - budget
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
                return Tail(records, unreadable, truncated=False), True, allowed - budget
        if len(carry) > MAX_LINE:
            carry, skipping = b"", True
    if skipping:  # a long line runs back to the start of the file or of the budget
        return Tail(records, unreadable + 1, truncated=pos > 0), False, allowed - budget
    if pos > 0:  # the budget ran out: carry may be part of a line, so it is not judged
        return Tail(records, unreadable, truncated=True), False, allowed - budget
    stopped = take(carry)  # the file's first line
    return Tail(records, unreadable, truncated=False), stopped, allowed - budget

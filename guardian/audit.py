"""The audit log: one JSON line per target per run, appended whole.

The log is opened afresh for every record (O_APPEND, never through a
symlink), so logrotate can move it without copytruncate, and each record is
one write(2): concurrent runs never interleave within a line.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from guardian import __version__
from guardian.errors import AuditError

ACTIONS = (
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
)

_MAX_TAIL_LINE = 500


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
        "dry_run",
        "duration_ms",
        "error",
        "guardian_pid",
        "hooks",
        "host",
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
        action: str,
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

    def to_json(self) -> str:
        # Field order as documented: when and where first, then what.
        data: dict[str, object] = {
            "ts": self.ts,
            "host": self.host,
            "guardian_pid": self.guardian_pid,
            "version": self.version,
            "target": self.target,
            "action": self.action,
            "reason": self.reason,
            "pid": self.pid,
            "old_pid": self.old_pid,
            "duration_ms": self.duration_ms,
            "dry_run": self.dry_run,
        }
        optional: dict[str, object] = {
            "error": self.error,
            "output_tail": [line[:_MAX_TAIL_LINE] for line in self.output_tail],
            "orphans": list(self.orphans),
            "probes": list(self.probes),
            "hooks": list(self.hooks),
            "next_try": self.next_try,
        }
        data.update((key, value) for key, value in optional.items() if value)
        return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


def append(path: Path, record: AuditRecord) -> None:
    """Append one record as one line, or raise AuditError."""
    line = (record.to_json() + "\n").encode()
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
        )
        try:
            written = os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as e:
        raise AuditError(f"cannot write audit log {path}: {e.strerror or e}") from None
    if written != len(line):
        raise AuditError(f"cannot write audit log {path}: short write ({written} of {len(line)})")

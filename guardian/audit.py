"""The audit log: one JSON line per target per run, appended whole.

The log is opened afresh for every record (O_APPEND, never through a
symlink), so logrotate can move it without copytruncate, and each record is
one write(2): concurrent runs never interleave within a line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
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
# Fields left out of a line when they are empty, so that most lines stay short.
_OPTIONAL = ("error", "output_tail", "orphans", "probes", "hooks", "next_try")
_MAX_TAIL_LINE = 500


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    target: str
    action: str
    reason: str
    pid: int | None = None
    old_pid: int | None = None
    duration_ms: int = 0
    dry_run: bool = False
    error: str | None = None
    output_tail: tuple[str, ...] = ()
    orphans: tuple[int, ...] = ()  # what a dead target left in its session
    probes: tuple[str, ...] = ()  # the health probes that failed
    hooks: tuple[str, ...] = ()  # what each hook run did
    next_try: str | None = None  # backoff and gave_up: when guardian will start it again
    ts: str = field(default_factory=now_rfc3339)
    host: str = field(default_factory=lambda: os.uname().nodename)
    guardian_pid: int = field(default_factory=os.getpid)
    version: str = __version__

    def to_json(self) -> str:
        data = asdict(self)
        for key in _OPTIONAL:
            if data[key] is None or data[key] == ():
                del data[key]
        if "output_tail" in data:
            data["output_tail"] = [line[:_MAX_TAIL_LINE] for line in self.output_tail]
        # Field order as documented: when and where first, then what.
        order = ("ts", "host", "guardian_pid", "version", "target", "action", "reason")
        ordered = {key: data.pop(key) for key in order}
        ordered.update(data)
        return json.dumps(ordered, ensure_ascii=False, separators=(", ", ": "))


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

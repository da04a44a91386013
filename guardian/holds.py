"""Holds: a target kept down on purpose (a maintenance window), until released or expired.

``guardian stop NAME [--for D] [--reason T]`` writes one small JSON file,
``<state_dir>/holds/<name>.json``; while it is there and not expired, no
check and no watcher starts the target. ``guardian start NAME`` removes it.

Apart from the state file on purpose: the state file is forgotten at every
reboot (its times count from boot), and a hold must survive reboots and
upgrades. So its times are wall-clock (RFC 3339, UTC), and its format is
versioned. It is input, not trusted, as the state file is: one that anyone
but guardian's own user could have written, or that does not parse, is not
believed (``HoldError``); the caller then keeps the target running, and
says why: keeping it alive is guardian's job, and a forged hold must not
keep it down.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from guardian.files import atomic_write, make_dirs, open_regular

VERSION = 1
_MAX_BYTES = 1 << 16
MAX_REASON = 1000  # characters: a reason is a sentence, not a document


class HoldError(Exception):
    """A hold file that is there but cannot be believed (the message says why)."""


def _wall(ts: float, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _parse_wall(text: object) -> float:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not a UTC time: {text!r}")
    return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


class Hold(NamedTuple):
    target: str
    by: str  # who set it, in words: "root (uid 0)", with sudo's user if there was one
    at: float  # when it was set (wall clock, seconds since the epoch)
    until: float | None  # when it ends by itself; None: at `guardian start` only
    reason: str

    def expired(self, now: float | None = None) -> bool:
        return self.until is not None and (time.time() if now is None else now) >= self.until

    def describe(self) -> str:
        """One line: who held it, since when, until when, and why."""
        until = (
            f"until {_wall(self.until)}"
            if self.until is not None
            else f"until `guardian start {self.target}`"
        )
        why = f": {self.reason}" if self.reason else " (no reason given)"
        return f"held by {self.by} since {_wall(self.at)} {until}{why}"

    def to_dict(self) -> dict[str, object]:
        """As records, status --json and the file carry it: to the millisecond (a hold of 3s
        lasts 3s, and a report counts it held to the moment it ends). ``describe``, for
        people, says it to the second."""
        return {
            "by": self.by,
            "at": _wall(self.at, "milliseconds"),
            "until": _wall(self.until, "milliseconds") if self.until is not None else None,
            "reason": self.reason,
        }

    def to_json(self) -> bytes:
        return json.dumps({"version": VERSION, "target": self.target, **self.to_dict()},
                          indent=1).encode()  # fmt: skip


def who() -> str:
    """Who is setting a hold: this user, and the one sudo ran it for, if any."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "?"
    sudo = os.environ.get("SUDO_USER")
    via = f", via sudo by {sudo}" if sudo and sudo != name else ""
    return f"{name} (uid {uid}{via})"


def path_for(state_dir: Path, name: str) -> Path:
    return state_dir / "holds" / f"{name}.json"


def _one_line(text: str, most: int) -> str:
    """``text`` as one line of printable characters: a reason is shown in status, one
    line per fact, and a newline in it must not pass for another line."""
    return "".join(c if c.isprintable() else " " for c in text)[:most]


def make(target: str, *, seconds: float | None, reason: str) -> Hold:
    at = time.time()
    return Hold(target, who(), at, at + seconds if seconds is not None else None,
                _one_line(reason, MAX_REASON))  # fmt: skip


def read(state_dir: Path, name: str, *, owner: int | None = None) -> Hold | None:
    """The target's hold (expired or not), None if there is none; HoldError if there is
    one that cannot be believed. ``owner``: who alone may have written it (default: us)."""
    path = path_for(state_dir, name)
    me = os.geteuid() if owner is None else owner
    try:
        folder = os.lstat(path.parent)
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HoldError(f"hold file {path} cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != me or st.st_mode & 0o022:
            mode = stat.S_IMODE(st.st_mode)
            raise HoldError(f"hold file {path} is owned by uid {st.st_uid} with mode {mode:o}, "
                            "so others could have written it")  # fmt: skip
        if not stat.S_ISDIR(folder.st_mode):
            raise HoldError(f"hold file {path} is not in a folder (a symlink?)")
        if folder.st_uid != me or folder.st_mode & 0o022:
            mode = stat.S_IMODE(folder.st_mode)
            raise HoldError(f"hold file {path} is in a folder others could write to (owned "
                            f"by uid {folder.st_uid}, mode {mode:o})")  # fmt: skip
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as e:
        raise HoldError(f"hold file {path} cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise HoldError(f"hold file {path} is larger than {_MAX_BYTES} bytes, so not guardian's")
    return _parse(path, name, data)


def _parse(path: Path, name: str, data: bytes) -> Hold:
    try:
        raw = json.loads(data)
        version = raw.get("version") if isinstance(raw, dict) else None
        if type(version) is not int or version != VERSION:  # (True == 1 in Python)
            return _not_ours(path, f"version {version!r}")
        if raw.get("target") != name:
            return _not_ours(path, f"it names target {raw.get('target')!r}")
        by, reason, until = raw["by"], raw["reason"], raw["until"]
        if not isinstance(by, str) or not isinstance(reason, str):
            return _not_ours(path, "by and reason must be strings")
        hold = Hold(
            name,
            _one_line(by, 200),
            _parse_wall(raw["at"]),
            None if until is None else _parse_wall(until),
            _one_line(reason, MAX_REASON),
        )
        hold.to_dict()  # its times as every record shows them: not past year 9999 once rounded
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as e:
        raise HoldError(f"hold file {path} is not one guardian wrote ({e})") from None
    return hold


def _not_ours(path: Path, why: str) -> Hold:
    raise HoldError(f"hold file {path} is not one guardian wrote ({why})")


def write(state_dir: Path, hold: Hold) -> None:
    """Set the hold (atomically, mode 0600); OSError if it cannot be written, or if it
    would not be believed where it would be written (``read``'s rules for the folder):
    a stop must not say "held" of a target the next check would start."""
    folder = state_dir / "holds"
    make_dirs(folder, 0o700)
    st = os.lstat(folder)
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != me or st.st_mode & 0o022:
        raise PermissionError(
            errno.EACCES, f"{folder} is not a folder of guardian's own that only it can write "
            f"to (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}), so a hold there would "
            "not be believed"
        )  # fmt: skip
    atomic_write(path_for(state_dir, hold.target), hold.to_json(), mode=0o600)


def release(state_dir: Path, name: str) -> bool:
    """Remove the target's hold; whether there was one. OSError if it cannot be removed."""
    try:
        os.unlink(path_for(state_dir, name))
    except FileNotFoundError:
        return False
    return True

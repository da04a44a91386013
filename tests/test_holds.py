"""Holds: real files in tmp_path, as `guardian stop` writes them and every check reads them;
and every way one can be there without being believable (never a hang, never believed)."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from guardian import files, holds
from guardian.holds import Hold, HoldError

from conftest import effective_uid


def hold_file(state_dir: Path, name: str = "agent") -> Path:
    return holds.path_for(state_dir, name)


def test_a_hold_written_is_read_back_and_released(tmp_path: Path) -> None:
    hold = holds.make("agent", seconds=7200, reason="kernel upgrade")
    holds.write(tmp_path, hold)
    path = hold_file(tmp_path)
    assert path == tmp_path / "holds" / "agent.json"
    back = holds.read(tmp_path, "agent")
    assert back is not None
    # To the millisecond: the file keeps wall-clock times (a hold of 3s lasts 3s).
    assert back == hold._replace(at=back.at, until=back.until)
    assert abs(back.at - hold.at) < 0.001
    assert back.until is not None
    assert abs(back.until - back.at - 7200) < 0.002
    assert back.by == holds.who()
    assert not back.expired()
    assert back.describe().startswith(f"held by {holds.who()} since ")
    assert back.describe().endswith(": kernel upgrade")
    data = json.loads(path.read_text())
    assert data == {"version": 1, "target": "agent", **back.to_dict()}
    assert data["at"].endswith("Z")
    assert len(data["at"]) == len("2026-11-30T01:00:00.000Z")
    assert holds.read(tmp_path, "worker") is None  # another target's: none
    assert holds.release(tmp_path, "agent") is True
    assert holds.read(tmp_path, "agent") is None
    assert holds.release(tmp_path, "agent") is False  # nothing left to release


def test_no_hold_folder_is_no_hold(tmp_path: Path) -> None:
    assert holds.read(tmp_path / "never made", "agent") is None
    assert holds.release(tmp_path, "agent") is False


def test_a_hold_until_released_never_expires(tmp_path: Path) -> None:
    holds.write(tmp_path, holds.make("agent", seconds=None, reason=""))
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert (hold.until, hold.reason) == (None, "")
    assert not hold.expired(now=time.time() + 20 * 365 * 86400)
    assert hold.describe().endswith("until `guardian start agent` (no reason given)")
    assert hold.to_dict()["until"] is None


def test_a_hold_expires_at_its_until(tmp_path: Path) -> None:
    at = 1_700_000_000.0
    holds.write(tmp_path, Hold("agent", "root (uid 0)", at, at + 3600, "window"))
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert not hold.expired(now=at + 3599)
    assert hold.expired(now=at + 3600)
    assert hold.describe() == (
        "held by root (uid 0) since 2023-11-14T22:13:20Z until 2023-11-14T23:13:20Z: window"
    )


def test_a_hold_set_for_a_while_expires_by_the_clock(tmp_path: Path) -> None:
    holds.write(tmp_path, holds.make("agent", seconds=-1, reason="over already"))
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert hold.expired()


def test_a_long_reason_is_cut(tmp_path: Path) -> None:
    holds.write(tmp_path, holds.make("agent", seconds=60, reason="x" * 5000))
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert len(hold.reason) == holds.MAX_REASON


def test_who_names_the_sudo_user_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    assert holds.who().endswith(f"(uid {os.getuid()}, via sudo by alice)")
    monkeypatch.delenv("SUDO_USER")
    assert holds.who().endswith(f"(uid {os.getuid()})")


def test_umask_000_still_gives_a_private_file_and_folder(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        holds.write(tmp_path / "state", holds.make("agent", seconds=60, reason="r"))
    finally:
        os.umask(old)
    path = hold_file(tmp_path / "state")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert holds.read(tmp_path / "state", "agent") is not None


def test_a_hold_replaces_the_one_before_whole(tmp_path: Path) -> None:
    holds.write(tmp_path, holds.make("agent", seconds=60, reason="first"))
    holds.write(tmp_path, holds.make("agent", seconds=None, reason="second"))
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert (hold.reason, hold.until) == ("second", None)
    assert sorted(p.name for p in (tmp_path / "holds").iterdir()) == ["agent.json"]


def test_writing_through_a_symlink_replaces_it(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    (tmp_path / "holds").mkdir(mode=0o700)
    hold_file(tmp_path).symlink_to(precious)
    holds.write(tmp_path, holds.make("agent", seconds=60, reason="r"))
    assert precious.read_text() == "keep me"
    assert not hold_file(tmp_path).is_symlink()


# --- a hold file that cannot be believed ---


def valid(tmp_path: Path) -> Path:
    """A good hold of the test's own, to spoil."""
    holds.write(tmp_path, holds.make("agent", seconds=3600, reason="kernel upgrade"))
    return hold_file(tmp_path)


def not_believed(tmp_path: Path, why: str) -> None:
    with pytest.raises(HoldError) as raised:
        holds.read(tmp_path, "agent")
    assert str(raised.value).startswith(f"hold file {hold_file(tmp_path)} ")
    assert why in str(raised.value)


def test_a_symlink_to_a_good_hold_is_not_believed(tmp_path: Path) -> None:
    good = valid(tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    good.rename(elsewhere)
    good.symlink_to(elsewhere)
    not_believed(tmp_path, "is a symlink, not a regular file")


def test_a_symlink_to_nowhere_is_not_believed_nor_no_hold(tmp_path: Path) -> None:
    (tmp_path / "holds").mkdir(mode=0o700)
    hold_file(tmp_path).symlink_to(tmp_path / "missing")
    not_believed(tmp_path, "is a symlink, not a regular file")


def test_a_folder_is_not_believed(tmp_path: Path) -> None:
    hold_file(tmp_path).mkdir(parents=True)
    (tmp_path / "holds").chmod(0o700)
    not_believed(tmp_path, "is a folder, not a regular file")


def read_in_a_thread(tmp_path: Path) -> Callable[[], object]:
    """holds.read in a thread; what it returned or raised, or the test fails if it hangs."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(holds.read(tmp_path, "agent"))
        except HoldError as e:
            result.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def outcome() -> object:
        thread.join(15)
        if thread.is_alive():
            # Let it go (a writer opening the FIFO ends the blocked open), then fail.
            os.close(os.open(hold_file(tmp_path), os.O_WRONLY | os.O_NONBLOCK))
            thread.join(15)
            pytest.fail("reading a FIFO as a hold file blocked")
        return result[0]

    return outcome


def test_a_fifo_is_not_believed_and_never_blocks(tmp_path: Path) -> None:
    (tmp_path / "holds").mkdir(mode=0o700)
    os.mkfifo(hold_file(tmp_path), 0o600)
    found = read_in_a_thread(tmp_path)()
    assert isinstance(found, HoldError)
    assert "is a FIFO, not a regular file" in str(found)


def test_a_fifo_swapped_in_after_the_look_still_never_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between open_regular's lstat and its open, a FIFO takes the file's place: the open
    itself must not block (O_NONBLOCK), and fstat then refuses it."""
    assert files.SAFE & os.O_NONBLOCK
    (tmp_path / "holds").mkdir(mode=0o700)
    fifo = hold_file(tmp_path)
    os.mkfifo(fifo, 0o600)
    regular = tmp_path / "regular"
    regular.write_text("{}")
    real_lstat = os.lstat

    def lstat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if Path(str(path)) == fifo:
            return real_lstat(regular)  # as it was at the look
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "lstat", lstat)
    found = read_in_a_thread(tmp_path)()
    monkeypatch.undo()
    assert isinstance(found, HoldError)
    assert "is a FIFO, not a regular file" in str(found)


def test_a_hold_owned_by_another_user_is_not_believed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file away needs root")
    os.chown(valid(tmp_path), 65534, 65534)
    not_believed(tmp_path, "is owned by uid 65534 with mode 600, so others could have written it")


def test_a_hold_is_believed_only_as_its_owners(tmp_path: Path) -> None:
    """Read for another user's guardian (status as root on a user's config): only that
    user's hold is believed."""
    valid(tmp_path)
    not_believed_as = pytest.raises(HoldError, match="owned by uid")
    with not_believed_as:
        holds.read(tmp_path, "agent", owner=os.geteuid() + 1)
    assert holds.read(tmp_path, "agent", owner=os.geteuid()) is not None


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_hold_others_could_write_is_not_believed(tmp_path: Path, mode: int) -> None:
    valid(tmp_path).chmod(mode)
    not_believed(tmp_path, f"with mode {mode:o}, so others could have written it")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_hold_in_a_folder_others_can_write_to_is_not_believed(tmp_path: Path, mode: int) -> None:
    valid(tmp_path).parent.chmod(mode)
    not_believed(tmp_path, "is in a folder others could write to")


def test_a_hold_folder_that_is_a_symlink_is_not_believed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    valid(real).parent.rename(tmp_path / "elsewhere")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "holds").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HoldError):
        holds.read(tmp_path / "state", "agent")


def test_a_huge_hold_file_is_not_read_whole(tmp_path: Path) -> None:
    path = valid(tmp_path)
    data = json.loads(path.read_text())
    data["reason"] = "x" * (1 << 20)  # well-formed, but no hold guardian writes
    path.write_text(json.dumps(data))
    not_believed(tmp_path, "is larger than 65536 bytes")


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="torn"),
        pytest.param(lambda text: "", id="empty"),
        pytest.param(lambda text: "\xff\xfe", id="not UTF-8"),
        pytest.param(lambda text: "[" * 60_000, id="nested too deep"),  # under 64 KiB
        pytest.param(lambda text: "[]", id="a list"),
        pytest.param(lambda text: text.replace('"version": 1', '"version": 2'), id="version 2"),
        pytest.param(lambda text: text.replace('"version": 1,', ""), id="no version"),
        pytest.param(lambda text: text.replace('"until"', '"till"'), id="no until"),
        pytest.param(lambda text: text.replace('"reason"', '"why"'), id="no reason"),
        pytest.param(lambda text: re.sub(r'"at": "[^"]*"', '"at": 5', text), id="at a number"),
        pytest.param(
            lambda text: re.sub(r'"at": "[^"]*"', '"at": "2026-11-30T01:00:00"', text),
            id="at with no zone",
        ),
        pytest.param(
            lambda text: re.sub(r'"until": "[^"]*"', '"until": "soon"', text), id="until a word"
        ),
        pytest.param(lambda text: text.replace('"version": 1', '"version": true'), id="true"),
        pytest.param(lambda text: text.replace('"version": 1', '"version": 1.0'), id="1.0"),
        pytest.param(lambda text: text.replace('"agent"', '"other"'), id="another target"),
        pytest.param(lambda text: re.sub(r'"by": "[^"]*"', '"by": 0', text), id="by a number"),
        pytest.param(lambda text: text.replace('"kernel upgrade"', "[1]"), id="reason a list"),
    ],
)
def test_a_hold_file_guardian_did_not_write_is_not_believed(
    tmp_path: Path, spoil: Callable[[str], str]
) -> None:
    path = valid(tmp_path)
    spoilt = spoil(path.read_text())
    path.write_bytes(b"\xff\xfe" if spoilt == "\xff\xfe" else spoilt.encode())
    not_believed(tmp_path, "is not one guardian wrote")


def test_a_file_where_the_hold_folder_should_be_is_not_believed(tmp_path: Path) -> None:
    (tmp_path / "holds").write_text("a file where the folder should be")
    not_believed(tmp_path, "cannot be read (Not a directory)")


def test_a_hold_this_user_may_not_read_is_an_error_not_no_hold(tmp_path: Path) -> None:
    """Root's hold folder, read by a user who is not root: HoldError (the caller says it
    cannot tell), never taken for no hold."""
    valid(tmp_path)
    with effective_uid(65534), pytest.raises(HoldError) as raised:
        holds.read(tmp_path, "agent", owner=0)
    assert str(raised.value) == (
        f"hold file {hold_file(tmp_path)} cannot be read (Permission denied)"
    )


def test_a_reason_stays_one_line_of_printable_text(tmp_path: Path) -> None:
    """A reason is shown in status, one line per fact: a newline in it must not pass for
    another line (a target's verdict, say), there or in the audit log's readers."""
    holds.write(
        tmp_path, holds.make("agent", seconds=None, reason="upgrade\nother: running\x1b[2J")
    )
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert hold.reason == "upgrade other: running [2J"
    assert "\n" not in hold.describe()


def test_a_hold_set_in_the_future_is_believed(tmp_path: Path) -> None:
    """A clock stepped back (NTP, a VM resumed) leaves holds set "in the future": they
    must still hold (only ``until`` decides when a hold ends)."""
    holds.write(tmp_path, holds.Hold("agent", "root (uid 0)", 253_402_300_000.0, None, ""))
    hold = holds.read(tmp_path, "agent")
    assert hold is not None
    assert not hold.expired()


@pytest.mark.parametrize("spoil", ["mode 777", "symlink"])
def test_a_hold_is_never_written_where_it_would_not_be_believed(tmp_path: Path, spoil: str) -> None:
    """`guardian stop` must not say "held" of a target the next check would start."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if spoil == "symlink":
        (tmp_path / "holds").symlink_to(elsewhere)
    else:
        (tmp_path / "holds").mkdir()
        (tmp_path / "holds").chmod(0o777)
    with pytest.raises(PermissionError, match="so a hold there would not be believed"):
        holds.write(tmp_path, holds.make("agent", seconds=None, reason=""))
    assert list(elsewhere.iterdir()) == []


def test_a_records_hold_says_its_end_to_the_millisecond(tmp_path: Path) -> None:
    """What a record (and status --json) carries is when the hold really ends: cut to the
    second, a check in the fraction after it still found the target held, and a report
    counted that fraction down."""
    hold = holds.make("agent", seconds=90.25, reason="")
    assert hold.until is not None
    shown = hold.to_dict()
    assert isinstance(shown["until"], str)
    assert isinstance(shown["at"], str)
    assert abs(holds._parse_wall(shown["until"]) - hold.until) < 0.001
    assert abs(holds._parse_wall(shown["at"]) - hold.at) < 0.001
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", shown["until"])


@pytest.mark.parametrize("field", ["until", "at"])
def test_a_time_that_cannot_be_shown_is_not_believed(tmp_path: Path, field: str) -> None:
    """A hand-edited hold of 9999-12-31T23:59:59.999999Z rounds to year 10000 when a record
    shows it: every check then wrote an internal error, and status exited 3 with a traceback
    (the hostile review). Not a hold guardian wrote: not believed, said once."""
    holds.write(tmp_path, holds.make("agent", seconds=60, reason="x"))
    path = hold_file(tmp_path)
    data = json.loads(path.read_text())
    data[field] = "9999-12-31T23:59:59.999999Z"
    path.write_text(json.dumps(data))
    with pytest.raises(HoldError, match="year 10000 is out of range"):
        holds.read(tmp_path, "agent")

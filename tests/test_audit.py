"""The audit log on a real (and really full) disk, and read back from its end."""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardian import audit
from guardian.audit import MAX_LINE, AuditRecord, read_backwards
from guardian.errors import AuditError

from conftest import Guardian, flocked, tmpfs, wait_for, write_config


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of the test's own."""
    with tmpfs(tmp_path, "64k") as mount:
        yield mount


def record_line(target: str = "agent", action: str = "ok", **fields: object) -> bytes:
    data = {"ts": "2026-11-27T04:14:57.824Z", "target": target, "action": action, **fields}
    return json.dumps(data).encode() + b"\n"


def test_a_record_after_a_short_write_starts_a_line_of_its_own(tiny_disk: Path) -> None:
    log = tiny_disk / "state" / "audit.jsonl"
    audit.append(log, AuditRecord("agent", "started", "first"))
    # tmpfs hands out whole 4 KiB pages: leave 50 bytes free in the log's last
    # page and no free page at all, so the next record fits only in part.
    fixed = len(AuditRecord("agent", "ok", "").to_json()) + 1
    padding = 4096 - 50 - log.stat().st_size - fixed
    audit.append(log, AuditRecord("agent", "ok", "x" * padding))
    assert log.stat().st_size == 4096 - 50
    filler = tiny_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True,
                   check=False)  # fmt: skip
    assert os.statvfs(tiny_disk).f_bavail == 0

    torn = AuditRecord("agent", "started", "torn")
    with pytest.raises(AuditError) as failed:
        audit.append(log, torn)
    length = len(torn.to_json()) + 1
    why = f"short write (50 of {length} bytes): No space left on device"
    assert str(failed.value) == f"cannot write audit log {log}: {why}"
    assert log.stat().st_size == 4096  # the torn line: the first 50 bytes of the record
    assert log.read_bytes().endswith(torn.to_json().encode()[:50])

    filler.unlink()
    audit.append(log, AuditRecord("agent", "ok", "after"))
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b""  # the log ends in a newline
    assert json.loads(lines[-2])["reason"] == "after"  # whole, on a line of its own
    # The first copy joined the torn line (one unreadable line); the second is whole.
    assert lines[-3] == torn.to_json().encode()[:50] + lines[-2]
    assert len(lines) == 5  # first, the padding, the torn line, after, and the end

    tail = read_backwards(log)
    assert [r["reason"] for r in tail.records] == ["after", "x" * padding, "first"]
    assert (tail.unreadable, tail.truncated) == (1, False)


def test_a_record_after_a_foreign_unterminated_line_starts_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(record_line() + b"something else, no newline")
    audit.append(log, AuditRecord("agent", "started", "next"))
    foreign, whole, end = log.read_bytes().split(b"\n")[1:]
    assert foreign == b"something else, no newline" + whole  # joined by its first copy
    assert (json.loads(whole)["reason"], end) == ("next", b"")
    tail = read_backwards(log)
    assert [r["reason"] for r in tail.records if "reason" in r] == ["next"]
    assert (len(tail.records), tail.unreadable) == (2, 1)


def test_append_is_one_line_per_record_and_mode_0640(tmp_path: Path) -> None:
    log = tmp_path / "new" / "audit.jsonl"
    for n in range(3):
        audit.append(log, AuditRecord("agent", "ok", f"run {n}"))
    lines = log.read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["run 0", "run 1", "run 2"]
    assert log.stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket", "symlink"])
def test_append_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "audit.jsonl"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    listener = socket.socket(socket.AF_UNIX)
    if kind == "fifo":
        os.mkfifo(log)
    elif kind == "folder":
        log.mkdir()
    elif kind == "socket":
        listener.bind(str(log))
    else:
        log.symlink_to(elsewhere)
    # In a process of its own: opening a FIFO without O_NONBLOCK would wait for
    # a reader for ever, and the test must fail rather than hang.
    script = (
        "import sys; from pathlib import Path; from guardian import audit; "
        "from guardian.errors import AuditError\n"
        "try: audit.append(Path(sys.argv[1]), audit.AuditRecord('agent', 'ok', 'r'))\n"
        "except AuditError as e: print(e)\n"
    )
    with listener:
        done = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    described = {"fifo": "a FIFO", "folder": "a folder", "socket": "a socket",
                 "symlink": "a symlink"}[kind]  # fmt: skip
    assert done.stdout == f"cannot write audit log {log}: is {described}, not a regular file\n"
    assert elsewhere.read_text() == ""  # never written through a symlink


# --- reading it back ---


def test_read_backwards_is_newest_first_and_counts_what_it_cannot_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(
        b"foreign text at the start\n"
        + record_line(action="started", n=1)
        + b'{"ts": "2026-11-27T04:14:57.824Z", "target": "agent", "act'  # torn
        + b"\n\n"  # an empty line is no line at all
        + record_line(action="ok", n=2)
        + b"\xff\xfe not UTF-8\n"
        + b"[1, 2, 3]\n"  # JSON, but not an object
        + b'{"ts": "now", "target": "agent"}\n'  # no action
        + b'{"ts": 1, "target": "agent", "action": "ok"}\n'  # a ts that is no string
        + b"[" * 100_000  # deeper than the parser recurses
        + b"\n"
        + record_line(action="stopped", n=3)
    )
    tail = read_backwards(log)
    assert [r["n"] for r in tail.records] == [3, 2, 1]
    assert (tail.unreadable, tail.truncated) == (7, False)


def test_read_backwards_of_an_empty_log_and_a_last_line_without_newline(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    assert read_backwards(log) == ([], 0, False)
    log.write_bytes(b"\n\n\n")
    assert read_backwards(log) == ([], 0, False)
    log.write_bytes(record_line(n=1) + record_line(n=2).rstrip(b"\n"))
    assert [r["n"] for r in read_backwards(log).records] == [2, 1]
    log.write_bytes(record_line(n=1) + record_line(n=2)[:30])  # torn at the very end
    assert read_backwards(log)[1:] == (1, False)


def test_read_backwards_across_chunk_boundaries(tmp_path: Path) -> None:
    """Lines of every length, around and across the 64 KiB chunks, against a forward read."""
    rng = random.Random(7)  # noqa: S311 - repeatable lengths, not cryptography
    log = tmp_path / "audit.jsonl"
    lines = []
    for n in range(4000):
        if rng.random() < 0.1:
            lines.append(b"x" * rng.randrange(0, 300))  # foreign (or, at 0, an empty line)
        else:
            lines.append(record_line(n=n, reason="r" * rng.randrange(0, 2000)).rstrip(b"\n"))
    log.write_bytes(b"\n".join(lines) + b"\n")
    expected = [json.loads(line)["n"] for line in reversed(lines) if line.startswith(b"{")]
    foreign = sum(1 for line in lines if line and not line.startswith(b"{"))
    tail = read_backwards(log)
    assert [r["n"] for r in tail.records] == expected
    assert (tail.unreadable, tail.truncated) == (foreign, False)

    # stop: the record it accepts is the last one read
    n_stop = expected[len(expected) // 2]
    tail = read_backwards(log, stop=lambda r: r["n"] == n_stop)
    assert [r["n"] for r in tail.records] == expected[: len(expected) // 2 + 1]
    assert not tail.truncated

    # keep: what goes into the list, while stop still sees every record
    seen: list[object] = []
    tail = read_backwards(log, keep=lambda r: False, stop=lambda r: seen.append(r["n"]) is not None)
    assert (tail.records, seen) == ([], expected)


def test_read_backwards_stops_at_its_budget(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = [record_line(n=n) for n in range(10)]  # all of one length
    log.write_bytes(b"".join(lines))
    size, length = log.stat().st_size, len(lines[0])
    assert read_backwards(log, max_bytes=size) == (read_backwards(log).records, 0, False)
    assert len(read_backwards(log).records) == 10
    # One byte short of the file: the first line is not seen whole, so not judged.
    tail = read_backwards(log, max_bytes=size - 1)
    assert ([r["n"] for r in tail.records], tail.unreadable, tail.truncated) == (
        list(range(9, 0, -1)), 0, True,
    )  # fmt: skip
    # Exactly three lines: their start is not seen either (no newline before it).
    tail = read_backwards(log, max_bytes=3 * length)
    assert ([r["n"] for r in tail.records], tail.truncated) == ([9, 8], True)
    assert read_backwards(log, max_bytes=0) == ([], 0, True)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_line_longer_than_1_mib_is_one_unreadable_line(tmp_path: Path, where: str) -> None:
    log = tmp_path / "audit.jsonl"
    long = b'{"ts": "2026-11-27T04:14:57.824Z", "target": "agent", "action": "ok", "r": "'
    long += b"y" * (MAX_LINE + 200_000) + b'"}\n'  # a record, but far too long to be one
    parts = {"start": [long, record_line(n=1), record_line(n=2)],
             "middle": [record_line(n=1), long, record_line(n=2)],
             "end": [record_line(n=1), record_line(n=2), long]}[where]  # fmt: skip
    log.write_bytes(b"".join(parts))
    tail = read_backwards(log)
    assert ([r["n"] for r in tail.records], tail.unreadable, tail.truncated) == ([2, 1], 1, False)
    # Running out of budget inside it: still one unreadable line, and said to be truncated.
    tail = read_backwards(log, max_bytes=log.stat().st_size - 10)
    assert (tail.unreadable, tail.truncated) == (1, True)


def test_a_huge_line_is_never_held_whole(tmp_path: Path) -> None:
    """Memory stays at a chunk and MAX_LINE, not the budget, even for a 30 MiB line."""
    log = tmp_path / "audit.jsonl"
    with log.open("wb") as f:
        f.write(record_line(n=1))
        f.write(b"z" * (30 << 20) + b"\n")
        f.write(record_line(n=2))
    # A process of its own: ru_maxrss is the high-water mark of this whole test session.
    script = (
        "import resource, sys; from pathlib import Path\n"
        "from guardian.audit import read_backwards\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "tail = read_backwards(Path(sys.argv[1]))\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print([r['n'] for r in tail.records], tail.unreadable, tail.truncated, grown)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records, unreadable, truncated, grown_kib = done.stdout.rsplit(" ", 3)
    assert (records, unreadable, truncated) == ("[2, 1]", "1", "False")
    assert int(grown_kib) < 8 << 10  # KiB: a few MiB at most, not 30


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_read_backwards_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "audit.jsonl"
    if kind == "fifo":
        os.mkfifo(log)
    else:
        log.mkdir()
    with pytest.raises(OSError, match="not a regular file"):
        read_backwards(log)
    with pytest.raises(FileNotFoundError):
        read_backwards(tmp_path / "missing.jsonl")


# --- what the third hostile review found ---

MANY_RECORDS = """
import sys, time
from pathlib import Path
from guardian import audit
began = time.monotonic()
for i in range(20):
    audit.append(Path(sys.argv[1]), audit.AuditRecord(f"t{i}", "ok", "healthy"))
print(time.monotonic() - began)
"""


def test_a_strangers_lock_on_the_log_costs_one_wait_not_one_per_record(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    stranger = os.open(log, os.O_RDONLY)  # read access is all it takes to flock the log
    fcntl.flock(stranger, fcntl.LOCK_EX)
    try:
        done = subprocess.run([sys.executable, "-c", MANY_RECORDS, str(log)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    finally:
        os.close(stranger)
    assert done.returncode == 0, done.stderr
    # One wait (0.5 s), then none: not 20 of them (10 s). Wide, for a loaded machine.
    assert float(done.stdout) < 5
    assert [json.loads(line)["target"] for line in log.read_text().splitlines()] == [
        f"t{i}" for i in range(20)
    ]


def test_a_strangers_lock_on_the_log_never_makes_a_run_overrun(g: Guardian) -> None:
    """Twelve healthy targets, the log locked by a stranger all along: every record is
    written, and the run stays well within its 3 s (each record waiting half a second
    made it 6 s, cut at 3 s with half the targets unrecorded, and exit 124)."""
    targets = {
        f"t{i}": {"command": ["/bin/sleep", str(300000 + i)], "pidfile": str(g.tmp / f"t{i}.pid"),
                  "start_grace": "0.1s"}
        for i in range(12)
    }  # fmt: skip
    write_config(g.config_path, {"state_dir": str(g.state), "timeout": "3s"}, targets)
    first = g.check()
    for i in range(12):
        g.reaper.track(int((g.tmp / f"t{i}.pid").read_text()))
    assert first.rc == 0, first.stderr
    with flocked(g.state / "audit.jsonl"):
        done = g.check()
    assert (done.rc, done.stderr) == (0, "")  # within its 3 s: an overrun is exit 124
    healthy = [r for r in g.audit()[12:] if r["action"] == "ok"]
    assert sorted(r["target"] for r in healthy) == sorted(targets)


# --- a record written without the lock, while another is being copied in ---

RACING_WRITER = """
import sys
from pathlib import Path
from guardian import audit
n = int(sys.argv[2])
for i in range(300):
    audit.append(Path(sys.argv[1]), audit.AuditRecord(f"w{n}", "ok", "x" * (n * 211 + i % 7)))
"""


def test_records_racing_without_the_lock_never_make_a_blank_line(tmp_path: Path) -> None:
    """Eight writers, the log's lock held by a stranger all along so none of them has it
    (each waits once, half a second, then goes without), records of sizes that cross page
    boundaries: a look at the log's last byte before the write saw another's record half
    copied in, took it for a torn line, and put a newline before its own (CI's audit log
    had a blank line; 4 to 10 in 4,000 records here)."""
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    with flocked(log):
        writers = [subprocess.Popen([sys.executable, "-c", RACING_WRITER, str(log), str(n)])
                   for n in range(8)]  # fmt: skip
        for writer in writers:
            assert writer.wait(timeout=120) == 0
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert b"" not in lines[:-1], f"{lines[:-1].count(b'')} blank lines"
    records = [json.loads(line) for line in lines[:-1]]
    assert sorted(r["target"] for r in records) == [f"w{n}" for n in range(8) for _ in range(300)]


WRITER = """
import sys
from pathlib import Path
from guardian import audit
audit.append(Path(sys.argv[1]), audit.AuditRecord(sys.argv[2], "ok", sys.argv[3]))
"""


def test_a_record_split_by_anothers_is_written_again_whole(tiny_disk: Path) -> None:
    """B's first write(2) is short (the disk full), and held there (strace delays its return)
    while space comes back and C appends: B's rest lands after C's record. B's record was in
    two pieces, neither readable, and B said nothing: now it is written again, whole."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    log = tiny_disk / "audit.jsonl"
    audit.append(log, AuditRecord("agent", "started", "first"))
    fixed = len(AuditRecord("agent", "ok", "").to_json()) + 1
    audit.append(log, AuditRecord("agent", "ok", "x" * (4096 - 50 - log.stat().st_size - fixed)))
    filler = tiny_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True,
                   check=False)  # fmt: skip
    assert os.statvfs(tiny_disk).f_bavail == 0
    with subprocess.Popen(
        [strace, "-qq", "-o", "/dev/null", "-P", str(log), "-e", "trace=write",
         "-e", "inject=write:delay_exit=2000000:when=1", sys.executable, "-c", WRITER, str(log),
         "B", "b" * 300],
        stderr=subprocess.PIPE, text=True,
    ) as b:  # fmt: skip
        # B's first write to the log: 50 bytes, then held for 2 s.
        wait_for(lambda: log.stat().st_size == 4096 or b.poll() is not None,
                 what="B's short write")  # fmt: skip
        if b.poll() is not None:
            pytest.skip(f"strace cannot trace here: {b.communicate()[1]}")
        filler.unlink()  # space comes back (a clean-up job, logrotate)
        c = subprocess.run([sys.executable, "-c", WRITER, str(log), "C", "c" * 20],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert c.returncode == 0, c.stderr
        _, err = b.communicate(timeout=60)
        assert b.returncode == 0, err
    tail = read_backwards(log)
    assert sorted(r["target"] for r in tail.records) == ["B", "C", "agent", "agent"]
    # The joined line (B's first 50 bytes and C's first copy) and B's rest: unreadable.
    assert tail.unreadable == 2

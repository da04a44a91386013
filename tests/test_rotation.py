"""Built-in rotation of the audit log: real processes rotating it at once, real guardian
runs, and whatever may be planted at the rotated names."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from guardian import audit
from guardian.audit import AuditRecord, log_files, open_log, read_history
from guardian.errors import AuditError

from conftest import Guardian, effective_uid, flocked

SMALL = 16 << 10  # rotates every fifty records or so

# One process appending ``count`` records through audit.append, each naming its writer.
WRITER = """
import sys
from pathlib import Path
from guardian import audit
path, who = Path(sys.argv[1]), sys.argv[2]
count, most, keep = (int(a) for a in sys.argv[3:6])
for n in range(count):
    audit.append(path, audit.AuditRecord("agent", "ok", f"{who} {n}"), max_bytes=most, keep=keep)
"""


def read_all(log: Path) -> list[str]:
    """Every line of the log and its rotated files, oldest file first."""
    lines: list[str] = []
    for f in reversed(log_files(log)):
        with open_log(f) as stream:
            lines += stream.read().decode().splitlines()
    return lines


def read_all_of(files: list[Path]) -> list[str]:
    lines: list[str] = []
    for f in files:
        with open_log(f) as stream:
            lines += stream.read().decode(errors="replace").splitlines()
    return lines


def reasons(log: Path) -> Counter[str]:
    return Counter(json.loads(line)["reason"] for line in read_all(log))


def fill(log: Path, records: int, *, most: int = SMALL, keep: int = 5, tag: str = "r") -> None:
    for n in range(records):
        audit.append(log, AuditRecord("agent", "ok", f"{tag} {n}"), max_bytes=most, keep=keep)


def test_eight_processes_rotating_at_once_lose_and_double_no_record(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    writers, each = 8, 250
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log), f"w{i}", str(each), str(SMALL), "100"]
        )
        for i in range(writers)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    files = log_files(log)
    assert len(files) > 20  # it did rotate, many times, while the others wrote
    assert all(f.name.endswith(".gz") for f in files[2:])
    assert files[1].name == "audit.jsonl.1"
    got = reasons(log)
    assert got == Counter(f"w{i} {n}" for i in range(writers) for n in range(each))
    # No torn line, and no file much past its limit (a record started a new one).
    assert all(json.loads(line) for line in read_all(log))
    assert all(len(gzip.decompress(f.read_bytes())) <= SMALL for f in files[2:])


def test_keep_bounds_the_rotated_files_and_the_oldest_go(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fill(log, 600, keep=3)
    names = [f.name for f in log_files(log)]
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2.gz", "audit.jsonl.3.gz"]
    got = reasons(log)
    assert "r 599" in got
    assert "r 0" not in got
    newest = [json.loads(line)["reason"] for line in read_all(log)]
    assert newest == sorted(newest, key=lambda r: int(r.split()[1]))  # in order, no gap
    assert int(newest[-1].split()[1]) - int(newest[0].split()[1]) == len(newest) - 1


def test_keep_1_keeps_one_plain_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fill(log, 300, keep=1)
    assert [f.name for f in log_files(log)] == ["audit.jsonl", "audit.jsonl.1"]
    assert not list(tmp_path.glob("*.gz"))


def test_a_lower_keep_leaves_the_files_above_it_to_the_operator(tmp_path: Path) -> None:
    """Rotation removes only what it pushes out (.keep): never a file numbered above it,
    which it cannot tell from an operator's (it was not this rotation's to make)."""
    log = tmp_path / "audit.jsonl"
    fill(log, 500, keep=6)
    assert len(log_files(log)) == 7
    above = {p.name: p.read_bytes() for p in log_files(log)[3:]}  # .3.gz to .6.gz
    fill(log, 60, keep=2, tag="later")
    assert [f.name for f in log_files(log)][:3] == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2.gz"]  # fmt: skip
    assert {p.name: p.read_bytes() for p in log_files(log)[3:]} == above


def test_every_file_is_0640_whatever_the_umask(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    old = os.umask(0)
    try:
        fill(log, 200)
    finally:
        os.umask(old)
    files = log_files(log)
    assert len(files) >= 3
    assert {f.stat().st_mode & 0o777 for f in files} == {0o640}


def test_a_torn_last_line_ends_its_file_and_the_next_record_is_whole(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"ts": "2026-12-07T00:00:00.000Z", "targ' + b"x" * (SMALL - 100))
    audit.append(log, AuditRecord("agent", "ok", "after"), max_bytes=SMALL)
    assert [json.loads(line)["reason"] for line in log.read_text().splitlines()] == ["after"]
    assert (tmp_path / "audit.jsonl.1").read_bytes().endswith(b"x")  # kept as it was
    tail = read_history(log)
    assert [r["reason"] for r in tail.records] == ["after"]
    assert tail.unreadable == 1


@pytest.mark.parametrize("name", ["audit.jsonl.1", "audit.jsonl.2.gz", "audit.jsonl.3.gz"])
@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
def test_something_planted_at_a_rotated_name_stops_rotation_never_the_record(
    tmp_path: Path, name: str, kind: str
) -> None:
    log = tmp_path / "audit.jsonl"
    fill(log, 70)  # just below the limit: not rotated yet
    before = log.read_bytes()
    planted, victim = tmp_path / name, tmp_path / "victim"
    victim.write_text("precious\n")
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "symlink":
        planted.symlink_to(victim)
    else:
        planted.mkdir()
    script = (
        "import sys; from pathlib import Path; from guardian import audit\n"
        "rec = lambda n: audit.AuditRecord('agent', 'ok', f'late {n}')\n"
        "for n in range(30):\n"
        "    try: audit.append(Path(sys.argv[1]), rec(n), max_bytes=int(sys.argv[2]))\n"
        "    except audit.RotationError as e: print(e)\n"
    )
    # In a process of its own: a FIFO opened by mistake would hang it, and fail the test.
    done = subprocess.run([sys.executable, "-c", script, str(log), str(SMALL)],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    described = {"fifo": "a FIFO", "symlink": "a symlink", "folder": "a folder"}[kind]
    # The message names the file that is the problem, not the log.
    said = f"cannot rotate audit log {log}: {planted} is {described}, not a regular file"
    assert done.stdout == f"{said}; the record was written to it, which keeps growing\n"
    # Said once a process; every record written, in the live log, none elsewhere.
    lines = log.read_bytes()
    assert lines.startswith(before)
    late = [json.loads(line)["reason"] for line in lines[len(before) :].splitlines()]
    assert late == [f"late {n}" for n in range(30)]
    assert victim.read_text() == "precious\n"
    assert os.path.lexists(planted)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["audit.jsonl", name, "victim"])


def test_a_hard_link_at_1_is_not_copied_into_a_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    secret = tmp_path / "secret"
    secret.write_text("not a log\n")
    os.link(secret, tmp_path / "audit.jsonl.1")
    fill(log, 40)
    with pytest.raises(audit.RotationError, match="not guardian's own"):
        fill(log, 40, tag="more")
    assert not list(tmp_path.glob("*.gz"))
    assert secret.read_text() == "not a log\n"


def test_a_folder_it_may_not_change_keeps_the_log_and_says_so(
    shared_dir: Path, system_user: str
) -> None:
    import pwd

    uid = pwd.getpwnam(system_user).pw_uid
    log = shared_dir / "audit.jsonl"
    log.write_bytes(b"")
    os.chown(log, uid, -1)  # the user may append to it, not rename it (the folder is root's)
    errors = []
    with effective_uid(uid):
        for n in range(100):
            try:
                audit.append(log, AuditRecord("agent", "ok", f"r {n}"), max_bytes=SMALL)
            except audit.RotationError as e:
                errors.append((n, str(e)))
    # Said once (when the log first passed its limit), and every record written.
    said = f"cannot rotate audit log {log}: Permission denied; the record was written to it"
    assert [e for _, e in errors] == [f"{said}, which keeps growing"]
    assert 60 < errors[0][0] < 90
    assert reasons(log) == Counter(f"r {n}" for n in range(100))
    assert log_files(log) == [log]


def test_a_read_only_log_is_still_an_audit_error(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.mkdir()
    with pytest.raises(AuditError, match="not a regular file"):
        audit.append(log, AuditRecord("agent", "ok", "x"), max_bytes=SMALL)


def test_real_guardian_runs_rotate_at_once_and_keep_every_record(g: Guardian) -> None:
    g.configure(guardian={"audit_max_bytes": "64K", "audit_keep": 50})
    assert g.check().rc == 0
    log = g.state / "audit.jsonl"
    # Fill it to just below its limit, so that the runs below rotate it among themselves.
    while log.stat().st_size < (64 << 10) - 300:
        fill(log, 1, most=64 << 10, tag=f"fill{log.stat().st_size}")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "guardian", "check", "--config", str(g.config_path)],
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
    files = log_files(log)
    assert [f.name for f in files][:2] == ["audit.jsonl", "audit.jsonl.1"]
    records = [json.loads(line) for line in read_all(log)]
    pids = Counter(r["guardian_pid"] for r in records if r["action"] == "ok")
    assert all(pids[run.pid] == 1 for run in runs)  # each run's record once, none lost
    assert records[0]["action"] == "started"


def test_a_failed_rotation_makes_a_real_run_say_so_and_exit_3(g: Guardian) -> None:
    g.configure(guardian={"audit_max_bytes": "64K"})
    assert g.check().rc == 0
    log = g.state / "audit.jsonl"
    fill(log, 330, most=0)
    (g.state / "audit.jsonl.1").mkdir()
    done = g.check()
    assert done.rc == 3
    said = f"cannot rotate audit log {log}: {log}.1 is a folder, not a regular file"
    assert done.stderr == f"guardian: {said}; the record was written to it, which keeps growing\n"
    assert g.actions()[-1] == "ok"


def test_read_history_goes_on_into_the_rotated_files_within_its_budget(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fill(log, 400)
    files = log_files(log)
    assert len(files) == 6
    kept = [int(json.loads(line)["reason"].split()[1]) for line in read_all(log)]
    tail = read_history(log)
    assert [int(str(r["reason"]).split()[1]) for r in tail.records] == kept[::-1]
    assert not tail.truncated
    # A budget that ends inside a .gz: its newest records, then truncated.
    sizes = []
    for f in files:
        with open_log(f) as stream:
            sizes.append(len(stream.read()))
    budget = sum(sizes[:3]) + sizes[3] // 2
    tail = read_history(log, max_bytes=budget)
    assert tail.truncated
    assert 0 < len(tail.records) < len(kept)
    assert [int(str(r["reason"]).split()[1]) for r in tail.records] == kept[::-1][
        : len(tail.records)
    ]
    # stop ends it in any file.
    tail = read_history(log, stop=lambda r: r["reason"] == f"r {kept[5]}")
    assert len(tail.records) == len(kept) - 5
    assert not tail.truncated


def test_read_history_of_a_damaged_gz_keeps_what_was_read_and_names_it(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fill(log, 200)
    whole = read_history(log)
    damaged = tmp_path / "audit.jsonl.2.gz"
    damaged.write_bytes(damaged.read_bytes()[:-40])
    tail = read_history(log)
    assert tail.problem is not None
    assert tail.problem.startswith(f"{damaged}: ")
    # What the log and .1 hold is kept: their records, newest first.
    newer = len(read_all_of(log_files(log)[:2]))
    assert tail.records == whole.records[:newer]
    assert newer > 0
    with pytest.raises(FileNotFoundError):
        read_history(tmp_path / "none.jsonl")


def test_read_history_of_a_gzip_bomb_stops_at_its_work_limit(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fill(log, 3, most=0)
    (tmp_path / "audit.jsonl.1.gz").write_bytes(gzip.compress(b"\n" * (64 << 20), 9))
    tail = read_history(log, max_bytes=1 << 20)
    assert tail.truncated
    assert len(tail.records) == 3


# --- what a hostile review found ---

SLOW_WRITER = """
import os, sys, time
from pathlib import Path
from guardian import audit
log = Path(sys.argv[1])
for j in range(150):  # a log close to its limit
    audit.append(log, audit.AuditRecord("other", "ok", f"pre {j} " + "x" * 300),
                 max_bytes=65536, keep=100)
pid = os.fork()
if pid == 0:  # stopped 3 s between opening the log and locking it (SIGSTOP, swapped out)
    real, first = audit._lock_briefly, [True]
    def slow(fd, until):
        if first[0]:
            first[0] = False
            time.sleep(3)
        return real(fd, until)
    audit._lock_briefly = slow
    # (Not rotating itself, as a run whose log logrotate rotates: a rotation of its own
    # would move on to the live log by chance.)
    audit.append(log, audit.AuditRecord("victim", "started", "THE VICTIM RECORD"))
    os._exit(0)
time.sleep(0.3)
for j in range(600):  # two rotations' worth meanwhile: its .1 compressed and removed
    audit.append(log, audit.AuditRecord("other", "ok", f"during {j} " + "x" * 300),
                 max_bytes=65536, keep=100)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_writer_stopped_across_two_rotations_still_writes_its_record(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    done = subprocess.run([sys.executable, "-c", SLOW_WRITER, str(log)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(log_files(log)) >= 4  # it did rotate twice meanwhile
    assert reasons(log)["THE VICTIM RECORD"] == 1


def test_only_canonical_numbers_are_rotated_and_files_above_keep_are_never_deleted(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    leading, backup = tmp_path / "audit.jsonl.01", tmp_path / "audit.jsonl.99"
    leading.write_text("an operator's\n")
    backup.write_text('{"ts": "an operator\'s backup"}\n')
    fill(log, 600, keep=3)
    assert (leading.read_text(), backup.read_text()) == (
        "an operator's\n", '{"ts": "an operator\'s backup"}\n')  # fmt: skip
    names = ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2.gz", "audit.jsonl.3.gz"]
    assert [f.name for f in log_files(log)] == [*names, "audit.jsonl.99"]


def test_an_operators_file_at_keep_is_not_deleted_it_stops_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    mine = tmp_path / "audit.jsonl.3"
    mine.write_text("notes, not a log\n")
    with pytest.raises(audit.RotationError, match=f"{mine} is not a rotated audit log"):
        fill(log, 600, keep=3)
    assert mine.read_text() == "notes, not a log\n"


def test_a_hard_linked_live_log_is_not_rotated(tmp_path: Path) -> None:
    log, precious = tmp_path / "audit.jsonl", tmp_path / "precious.txt"
    precious.write_text('{"precious": 1}\n' * 5000)  # past the limit
    os.link(precious, log)
    with pytest.raises(audit.RotationError, match="has 2 names \\(a hard link\\)"):
        fill(log, 3)
    assert not (tmp_path / "audit.jsonl.1").exists()
    assert os.stat(log).st_ino == os.stat(precious).st_ino
    assert precious.read_text().endswith('"reason": "r 0", "pid": null, "old_pid": null, '
                                         '"duration_ms": 0, "dry_run": false}\n')  # fmt: skip


def test_a_rotation_never_makes_a_run_overrun_its_timeout(g: Guardian) -> None:
    """Compressing a big .1 is cut to what the run has left: kept plain, in time."""
    g.configure(guardian={"audit_max_bytes": "64K", "timeout": "1s"})
    log = g.state / "audit.jsonl"
    assert g.check().rc == 0
    with open(f"{log}.1", "wb") as f:
        for _ in range(12):
            f.write(os.urandom(8 << 20))  # incompressible: about 1.5 s to gzip
    fill(log, 330, most=0)
    done = g.check()
    assert (done.rc, done.stderr) == (0, "")  # within its 1 s: an overrun is exit 124
    assert (g.state / "audit.jsonl.2").stat().st_size == 96 << 20  # kept plain


# --- what the third hostile review found ---


def test_rotation_sweeps_only_its_own_dead_writers_leftovers(tmp_path: Path) -> None:
    """What a compression killed outright left (``.audit.jsonl.2.gz.PID.HEX.tmp``) is
    removed as a state file's leftover is: never another user's file, nor a live
    writer's, nor a folder, nor one changed moments ago."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a file of another user)")
    log = tmp_path / "audit.jsonl"
    gone = subprocess.Popen(["true"])  # a pid that has exited, and been reaped
    gone.wait()
    name = ".audit.jsonl.2.gz.{}.{}.tmp"
    dead, theirs, live, fresh, folder = (
        tmp_path / name.format(pid, tag)
        for pid, tag in ((gone.pid, "0badc0d1"), (gone.pid, "0badc0d2"), (os.getpid(), "0badc0d3"),
                         (gone.pid, "0badc0d4"), (gone.pid, "0badc0d5"))
    )  # fmt: skip
    for leftover in (dead, theirs, live, fresh):
        leftover.write_bytes(b"\x1f\x8b half")
    folder.mkdir()
    os.chown(theirs, 65534, 65534)
    then = time.time() - 120
    for old in (dead, theirs, live, folder):
        os.utime(old, (then, then))
    fill(log, 250)  # rotated (twice or so)
    assert len(log_files(log)) >= 3
    assert not dead.exists()
    assert theirs.exists()
    assert live.exists()
    assert fresh.exists()
    assert folder.is_dir()


def test_a_log_stuck_past_its_size_by_a_strangers_lock_is_said_once(g: Guardian) -> None:
    """Read access is enough to flock the log, and only a run holding it rotates: a log
    held so, growing past twice its size, is said (exit 3), never left to grow unseen."""
    g.configure(guardian={"audit_max_bytes": "64K"})
    log = g.state / "audit.jsonl"
    assert g.check().rc == 0
    fill(log, 700, most=0)  # about 140K: past twice the size, never rotated
    before = log.stat().st_size
    assert before > 2 * (64 << 10)
    with flocked(log):
        done = g.check()
    assert done.rc == 3, done
    assert "another process holds its lock" in done.stderr
    assert not (g.state / "audit.jsonl.1").exists()
    assert log.read_text().splitlines()[-1].count('"action": "ok"') == 1  # its record
    after = g.check()  # the lock free again: rotated, quietly
    assert (after.rc, after.stderr) == (0, "")
    assert (g.state / "audit.jsonl.1").stat().st_size >= before

"""One run's frame: each target in turn, within its share of the time, whatever one does."""

from __future__ import annotations

from pathlib import Path

from guardian.audit import AuditRecord
from guardian.config import Target, load
from guardian.run import Run

from conftest import write_config


def config_of_three(tmp_path: Path) -> tuple[Target, ...]:
    targets = {name: {"command": ["/bin/sleep", "300"]} for name in ("a", "b", "c")}
    path = write_config(tmp_path / "g.toml", {"state_dir": str(tmp_path / "state")}, targets)
    return load(path).targets


def test_an_unexpected_error_in_one_target_is_its_record_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    targets = config_of_three(tmp_path)
    said: list[str] = []
    emitted: list[AuditRecord] = []
    run = Run(dry_run=False, emit=emitted.append, say=said.append)

    def job(target: Target) -> AuditRecord:
        if target.name == "b":
            run.step("looking at b")
            return {}["nope"]  # type: ignore[no-any-return]  # a bug, for real
        return AuditRecord(target.name, "ok", "fine")

    with run.armed(10.0):
        result = run.execute(targets, job)
    assert [(r.target, r.action) for r in result.records] == [
        ("a", "ok"),
        ("b", "error"),
        ("c", "ok"),
    ]
    assert result.records == tuple(emitted)
    error = result.records[1].reason
    assert error.startswith("internal error while looking at b: KeyError: 'nope' (at test_run.py")
    assert result.trouble  # exit 3: a bug to report
    assert len(said) == 2  # the line, and the traceback to report
    assert "please report it" in said[0]
    assert said[1].startswith("Traceback")


def test_a_target_that_runs_out_of_its_share_does_not_take_the_next_ones(
    tmp_path: Path,
) -> None:
    import time

    targets = config_of_three(tmp_path)
    run = Run(dry_run=False, emit=lambda record: None, say=lambda line: None)

    def job(target: Target) -> AuditRecord:
        if target.name == "a":
            time.sleep(60)  # stuck: its share ends it
        return AuditRecord(target.name, "ok", "fine")

    began = time.monotonic()
    with run.armed(4.0):
        result = run.execute(targets, job)
    seconds = time.monotonic() - began
    assert [(r.target, r.action) for r in result.records] == [
        ("a", "timeout"),
        ("b", "ok"),
        ("c", "ok"),
    ]
    assert result.timed_out
    assert result.records[0].reason == "its share of the run's time ran out while starting"
    assert seconds < 4.0


def test_a_share_that_ends_while_its_record_is_written_does_not_end_the_run(
    tmp_path: Path,
) -> None:
    import time

    targets = config_of_three(tmp_path)
    run = Run(dry_run=False, emit=lambda record: None, say=lambda line: None)

    def slow_log(record: AuditRecord) -> None:  # a slow disk, or a stuck stderr
        if record.target == "a":
            time.sleep(1.5)

    run = Run(dry_run=False, emit=slow_log, say=lambda line: None)

    def job(target: Target) -> AuditRecord:
        if target.name == "a":
            time.sleep(2.0)  # nearly all of its share (4 s less 2 x 0.67 s kept for b, c)
        return AuditRecord(target.name, "ok", "fine")

    with run.armed(4.0):
        result = run.execute(targets, job)
    assert [(r.target, r.action) for r in result.records] == [
        ("a", "ok"),
        ("b", "ok"),
        ("c", "ok"),
    ]

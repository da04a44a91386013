"""The metrics file: real guardian runs, each file read back with prometheus_client's parser."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_watch import Watch

from guardian import holds, metrics, state
from guardian.discovery import Matcher, scan

from conftest import Guardian, wait_for, write_config

RULES = Path(__file__).parent.parent / "etc" / "prometheus" / "guardian-rules.yml"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample, by name and labels; the parser refuses anything malformed."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name  # every series has its HELP
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def metrics_of(g: Guardian) -> Samples:
    return parse((g.tmp / "prom" / "guardian.prom").read_text())


def configure(g: Guardian, **target: object) -> Path:
    prom = g.tmp / "prom"
    prom.mkdir(exist_ok=True)
    path = prom / "guardian.prom"
    g.configure(guardian={"metrics_file": str(path)}, **target)
    return path


def warnings(g: Guardian) -> list[str]:
    return [r["reason"] for r in g.audit() if r["action"] == "warning"]


def test_a_start_then_a_healthy_run_then_a_kill_count_starts_that_persist(g: Guardian) -> None:
    path = configure(g)
    assert g.check().rc == 0
    m = metrics_of(g)
    agent = {"target": "agent"}
    assert value(m, "guardian_target_up", **agent) == 1
    assert value(m, "guardian_target_healthy", **agent) == 1
    assert value(m, "guardian_target_held", **agent) == 0
    assert value(m, "guardian_target_gave_up", **agent) == 0
    assert value(m, "guardian_target_starts_total", target="agent", cause="died") == 1
    assert value(m, "guardian_target_starts_total", target="agent", cause="unhealthy") == 0
    assert value(m, "guardian_target_starts_total", target="agent", cause="by_hand") == 0
    assert value(m, "guardian_target_start_failures_total", **agent) == 0
    assert value(m, "guardian_last_run_exit_code") == 0
    assert value(m, "guardian_watch_active") == 0
    first_start = value(m, "guardian_target_last_start_timestamp_seconds", **agent)
    ran = value(m, "guardian_last_run_timestamp_seconds")
    assert first_start <= ran
    assert 0 < value(m, "guardian_run_duration_seconds") < 30

    assert g.check().rc == 0  # healthy: the counter stays, the run's time moves on
    m = metrics_of(g)
    assert value(m, "guardian_target_starts_total", target="agent", cause="died") == 1
    assert value(m, "guardian_last_run_timestamp_seconds") > ran

    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    assert g.check().rc == 0
    assert g.check().rc == 0
    m = metrics_of(g)
    assert value(m, "guardian_target_starts_total", target="agent", cause="died") == 2
    assert value(m, "guardian_target_last_start_timestamp_seconds", **agent) > first_start
    assert value(m, "guardian_target_up", **agent) == 1
    assert not [p for p in path.parent.iterdir() if p.name != "guardian.prom"]  # no temp left


def test_after_a_reboot_the_first_run_keeps_the_counters_and_warns_of_nothing(
    g: Guardian,
) -> None:
    configure(g)
    assert g.check().rc == 0
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    assert g.check().rc == 0
    path = state.path_for(g.state, "agent")
    before = json.loads(path.read_text())
    assert before["starts_died"] == 2
    # What the file looks like after a real reboot: another boot's id, and times of that
    # boot (it ran for days) that are far later than this boot's uptime.
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    rebooted = {**before, "boot_id": "an-earlier-boot", "starts": [500000.0]}
    rebooted["current"] = {**before["current"], "last_seen": 500100.0, "start_ticks": 50000000}
    path.write_text(json.dumps(rebooted))
    result = g.check()
    assert result.rc == 0, result.stderr
    assert warnings(g) == []
    assert value(metrics_of(g), "guardian_target_starts_total", target="agent", cause="died") == 3
    after = json.loads(path.read_text())
    assert after["boot_id"] == state.boot_id()
    assert len(after["starts"]) == 1  # its history dropped: this start alone
    assert after["starts"][0] < 500000

    # A file of another boot that is corrupt all the same is still said, and rebuilt.
    path.write_text(json.dumps({**rebooted, "starts_died": "many"}))
    os.kill(g.pid(), signal.SIGKILL)
    wait_for(lambda: not g.matches(), what="the target to die")
    result = g.check()
    assert result.rc == 3, result.stderr
    assert warnings(g) == [f"state file {path} was corrupt (impossible starts_died); rebuilt"]
    assert value(metrics_of(g), "guardian_target_starts_total", target="agent", cause="died") == 1


def test_stop_start_and_restart_by_hand_are_held_then_counted_by_hand(g: Guardian) -> None:
    configure(g)
    assert g.check().rc == 0
    held_for = ("guardian_target_held_seconds", frozenset({("target", "agent")}))
    assert held_for not in metrics_of(g)  # only while held
    assert g.run("stop", "agent", "--reason", "maintenance").rc == 0
    m = metrics_of(g)
    assert value(m, "guardian_target_held", target="agent") == 1
    assert value(m, "guardian_target_up", target="agent") == 0
    hold = holds.read(g.state, "agent")
    assert hold is not None
    assert 0 <= m[held_for] < 5  # just set
    time.sleep(1.1)
    assert g.check().rc == 0  # a held target is not a failure
    m = metrics_of(g)
    assert value(m, "guardian_target_held", target="agent") == 1
    # Counted from the hold's own time, not from the check's.
    assert abs(m[held_for] - (os.stat(g.tmp / "prom" / "guardian.prom").st_mtime - hold.at)) < 1
    assert m[held_for] >= 1
    assert g.run("start", "agent").rc == 0
    assert g.run("restart", "agent").rc == 0
    m = metrics_of(g)
    assert value(m, "guardian_target_held", target="agent") == 0
    assert held_for not in m
    assert value(m, "guardian_target_up", target="agent") == 1
    assert value(m, "guardian_target_starts_total", target="agent", cause="by_hand") == 2
    assert value(m, "guardian_target_starts_total", target="agent", cause="died") == 1


def test_a_crash_loop_counts_failures_and_says_it_gave_up(g: Guardian) -> None:
    configure(g, command=g.agent("--exit", "3"), restart={"burst": 2, "backoff": "0s"})
    for _ in range(3):
        assert g.check().rc == 1
    assert "gave_up" in g.actions()
    m = metrics_of(g)
    assert value(m, "guardian_target_gave_up", target="agent") == 1
    assert value(m, "guardian_target_up", target="agent") == 0
    assert value(m, "guardian_target_start_failures_total", target="agent") == 2
    assert value(m, "guardian_last_run_exit_code") == 1
    assert ("guardian_target_last_start_timestamp_seconds", frozenset({("target", "agent")})) \
        not in m  # never started: no time at all, not 1970  # fmt: skip


def test_a_probe_failing_below_its_threshold_is_up_but_not_healthy(g: Guardian) -> None:
    flag = g.tmp / "healthy"
    configure(g, health={"command": ["/usr/bin/test", "-e", str(flag)], "failures": 3})
    flag.touch()
    assert g.check().rc == 0
    flag.unlink()
    g.check()
    assert "unhealthy" in g.actions()
    m = metrics_of(g)
    assert value(m, "guardian_target_up", target="agent") == 1
    assert value(m, "guardian_target_healthy", target="agent") == 0


def test_a_check_of_one_target_writes_every_targets_truth(g: Guardian) -> None:
    path = configure(g)
    other = [*g.agent()[:-1], f"{g.tmp}-other"]  # its own tag: never taken for the agent
    fields = {"pidfile": str(g.pidfile), "start_grace": "0.3s", "start_timeout": "10s"}
    settings = {"state_dir": str(g.state), "timeout": "30s", "metrics_file": str(path)}
    others = {**fields, "command": other, "pidfile": str(g.tmp / "other.pid")}
    write_config(g.config_path, settings, {"agent": {"command": g.command, **fields},
                                           "other": others})  # fmt: skip
    assert g.check("--target", "agent").rc == 0
    m = metrics_of(g)
    assert value(m, "guardian_target_up", target="agent") == 1
    assert value(m, "guardian_target_up", target="other") == 0  # not checked: not started
    assert g.check().rc == 0
    for found in scan(Matcher(tuple(other))):
        g.reaper.track(found.pid)
    assert g.check("--target", "agent").rc == 0
    m = metrics_of(g)
    assert value(m, "guardian_target_up", target="other") == 1  # from its files, not this run
    assert value(m, "guardian_target_starts_total", target="other", cause="died") == 1


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_the_file_is_mode_0644_whatever_the_umask(g: Guardian, umask: int) -> None:
    path = configure(g)
    assert g.check(umask=umask).rc == 0
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kind", ["symlink", "folder", "fifo"])
def test_something_not_a_file_at_the_path_is_left_as_it_is_and_said(g: Guardian, kind: str) -> None:
    path = configure(g)
    elsewhere = g.tmp / "elsewhere"
    elsewhere.write_text("not guardian's\n")
    if kind == "symlink":
        path.symlink_to(elsewhere)
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    result = g.check(timeout=20)
    assert result.rc == 0, result.stderr  # the target's state decides the exit code
    (said,) = warnings(g)
    assert said.startswith(f"cannot write metrics file {path}: is a ")
    assert "(guardian): warning: cannot write metrics file" in result.stderr
    assert elsewhere.read_text() == "not guardian's\n"
    assert path.is_symlink() if kind == "symlink" else True
    assert path.is_dir() if kind == "folder" else True
    assert sorted(p.name for p in path.parent.iterdir()) == ["guardian.prom"]


def test_a_folder_named_like_a_leftover_temporary_file_is_left_and_not_a_failure(
    g: Guardian,
) -> None:
    path = configure(g)
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = path.parent / f".guardian.prom.{gone.pid}.0badc0de.tmp"
    folder.mkdir()
    result = g.check()
    assert result.rc == 0, result.stderr
    assert warnings(g) == []
    assert "metrics" not in result.stderr
    assert folder.is_dir()
    assert value(metrics_of(g), "guardian_target_up", target="agent") == 1


def test_a_missing_folder_is_not_made_and_is_said(g: Guardian) -> None:
    path = g.tmp / "no-such" / "guardian.prom"
    g.configure(guardian={"metrics_file": str(path)})
    result = g.check()
    assert result.rc == 0
    assert warnings(g) == [f"cannot write metrics file {path}: is in {path.parent}, which does "
                           "not exist"]  # fmt: skip
    assert not path.parent.exists()


def test_a_watcher_rewrites_it_after_each_action_and_says_it_watches(g: Guardian) -> None:
    configure(g, start_grace="0.1s", restart={"min_uptime": "0.2s"})
    watch = Watch(g, "20s")
    wait_for(watch.watching, what="the watcher to watch")
    first = g.pid()
    os.kill(first, signal.SIGKILL)

    def restarted() -> bool:
        try:
            m = metrics_of(g)
        except (OSError, ValueError):
            return False
        return value(m, "guardian_target_starts_total", target="agent", cause="died") == 2

    wait_for(restarted, what="the metrics of the watcher's restart")
    m = metrics_of(g)
    assert value(m, "guardian_target_up", target="agent") == 1
    assert value(m, "guardian_target_watched", target="agent") == 1
    assert value(m, "guardian_watch_active") == 1
    assert value(m, "guardian_last_run_exit_code") == 0  # the check's, while it watches
    watch.proc.send_signal(signal.SIGTERM)
    rc, err = watch.end()
    assert rc == 128 + signal.SIGTERM, err
    m = metrics_of(g)
    assert value(m, "guardian_watch_active") == 0  # rewritten at its end, the lock let go
    assert value(m, "guardian_last_run_exit_code") == 128 + signal.SIGTERM


def test_after_a_hand_over_the_file_says_the_target_is_watched(g: Guardian) -> None:
    configure(g)
    first = Watch(g, "3s")
    wait_for(first.watching, what="the first watcher to watch")
    second = Watch(g, "20s")  # as cron starts the next while the first still watches
    rc, err = first.end()
    assert rc == 0, err
    wait_for(second.watching, what="the second watcher to take over")
    time.sleep(1)  # no action meanwhile: the target runs on
    m = metrics_of(g)
    assert value(m, "guardian_target_watched", target="agent") == 1
    assert value(m, "guardian_watch_active") == 1
    assert value(m, "guardian_target_starts_total", target="agent", cause="died") == 1
    second.proc.send_signal(signal.SIGTERM)
    second.end()
    assert value(metrics_of(g), "guardian_watch_active") == 0


def test_label_values_are_escaped_as_the_exposition_format_says() -> None:
    nasty = 'a\\b"c\nd'
    (family,) = text_string_to_metric_families(
        f'# TYPE x gauge\nx{{target="{metrics._escape(nasty)}"}} 1\n'
    )
    assert family.samples[0].labels == {"target": nasty}


def test_counters_survive_a_reboot_and_older_state_files_load(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.json"
    path.parent.mkdir(mode=0o700)
    old = {"boot_id": "another-boot", "starts": [], "current": None, "stable": False,
           "young": 0, "dead_since": None, "probe_failures": 0, "gave_up_at": None,
           "stopped_by_hand": False}  # fmt: skip
    path.write_text(json.dumps(old))  # as written before the counters existed
    path.chmod(0o600)
    loaded = state.Store(path).load()
    assert (loaded.starts_died, loaded.last_start_wall) == (0, None)
    before = {**old, "starts_died": 7, "starts_unhealthy": 2, "starts_by_hand": 1,
              "start_failures": 4, "last_start_wall": 1796600000.5}  # fmt: skip
    path.write_text(json.dumps(before))
    after = state.Store(path).load()
    assert after.boot_id == state.boot_id()  # a reboot: the history is gone ...
    assert (after.starts_died, after.starts_unhealthy, after.starts_by_hand,
            after.start_failures, after.last_start_wall) == (7, 2, 1, 4, 1796600000.5)  # fmt: skip
    assert state.reset(after).starts_died == 7  # ... and a reset by hand keeps them too
    path.write_text(json.dumps({**before, "starts_died": -1}))
    store = state.Store(path)
    assert store.load().starts_died == 0  # impossible: rebuilt, counters reset
    assert store.warnings


def rules() -> list[dict[str, object]]:
    data = yaml.safe_load(RULES.read_text())
    assert set(data) == {"groups"}
    found = []
    for group in data["groups"]:
        assert set(group) <= {"name", "rules", "interval", "limit"}
        assert isinstance(group["name"], str)
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                                 "keep_firing_for"}, rule  # fmt: skip
            assert isinstance(rule["alert"], str)
            assert isinstance(rule["expr"], str)
            assert set(rule["annotations"]) >= {"summary", "description"}
            assert rule["labels"]["severity"] in ("warning", "critical", "page")
            found.append(rule)
    return found


def test_the_rules_file_is_a_prometheus_rule_file_on_metrics_guardian_writes(
    g: Guardian,
) -> None:
    configure(g)
    assert g.check().rc == 0
    # Every family the file declares (one with samples only at times: held since, say).
    text = (g.tmp / "prom" / "guardian.prom").read_text()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M)) | {"node_textfile_mtime_seconds"}
    assert {name for name, _ in metrics_of(g)} <= names
    alerts = rules()
    assert {r["alert"] for r in alerts} >= {"GuardianTargetDown", "GuardianTargetFlapping",
                                            "GuardianGaveUp", "GuardianTargetHeldLong",
                                            "GuardianNotRunning"}  # fmt: skip
    for rule in alerts:
        used = set(re.findall(r"\b(guardian_[a-z_]+|node_[a-z_]+)\b", str(rule["expr"])))
        assert used, rule
        assert used <= names, (rule["alert"], used - names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_checks_the_rules() -> None:  # pragma: no cover - promtool is rarely here
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cost_benchmark_runs_and_measures_each_case() -> None:
    bench = Path(__file__).resolve().parent.parent / "bench" / "metrics_cost.py"
    out = subprocess.run([sys.executable, str(bench), "--smoke"], capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    for case in ("check ", "check+metrics ", "check+metrics+ping ", "import prometheus_client",
                 "write (ours)", "write (prometheus_client)"):  # fmt: skip
        assert re.search(rf"^{re.escape(case)}.*\s\d+\.\d\s+\d+\.\d$", out, re.M), (case, out)


def test_a_dry_run_writes_none_and_refuses_a_folder_that_is_not_there(g: Guardian) -> None:
    path = configure(g)
    assert g.check("--dry-run").rc == 1  # would start it
    assert not path.exists()  # a dry run changes nothing, the metrics file included
    g.configure(guardian={"metrics_file": str(g.tmp / "no-such" / "guardian.prom")})
    result = g.check("--dry-run")
    assert result.rc == 2
    assert "guardian.metrics_file: " in result.stderr
    assert "is not a folder" in result.stderr

"""Bad input gets one clear line (file, key, problem) and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian.config import DEFAULT_PATH, load, parse_duration
from guardian.errors import ConfigError

from conftest import write_config

GOOD_TARGET = '[targets.a]\ncommand = ["/bin/sleep", "100"]\n'


def guardian_check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardian", "check", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[guardian\n",
            "not valid TOML: Expected ']' at the end of a table declaration (at line 1",
        ),
        ("", "targets: no target defined"),
        ("colour = 1\n" + GOOD_TARGET, "colour: unknown key"),
        ("[guardian]\nstate = '/x'\n" + GOOD_TARGET, "guardian.state: unknown key"),
        (
            "[guardian]\ntimeout = '5 parsecs'\n" + GOOD_TARGET,
            "guardian.timeout: '5 parsecs' is not",
        ),
        ("[guardian]\ntimeout = 0\n" + GOOD_TARGET, "guardian.timeout: must be more than 0"),
        ("[guardian]\ntimeout = -3\n" + GOOD_TARGET, "guardian.timeout: -3 is out of range"),
        ("[guardian]\nstate_dir = 5\n" + GOOD_TARGET, "guardian.state_dir: expected a string"),
        ("[targets.a]\n", "targets.a.command: is required"),
        ("[targets.a]\ncommand = []\n", "targets.a.command: must not be empty"),
        ("[targets.a]\ncommand = '/bin/sleep 5'\n", "targets.a.command: expected a list"),
        ("[targets.a]\ncommand = ['/bin/sleep', 5]\n", "targets.a.command: expected a list of str"),
        ("[targets.a]\ncommand = ['']\n", "targets.a.command: the program (first item) must"),
        ("[targets.a]\ncommand = ['no-such-program-x']\n", "program 'no-such-program-x' not found"),
        (GOOD_TARGET + "start_timeout = 'soon'\n", "targets.a.start_timeout: 'soon' is not a"),
        (GOOD_TARGET + "daemonizes = 'yes'\n", "targets.a.daemonizes: expected true or false"),
        (GOOD_TARGET + "daemonizes = true\n", "targets.a.pidfile: is required when daemonizes"),
        (GOOD_TARGET + "user = 'no-such-user-x'\n", "targets.a.user: no such user"),
        (GOOD_TARGET + "env = { A = 1 }\n", "targets.a.env.A: expected a string"),
        (GOOD_TARGET + "autostart = true\n", "targets.a.autostart: unknown key"),
        (GOOD_TARGET + "restart = 'always'\n", "targets.a.restart: expected a table"),
        (
            GOOD_TARGET + "[targets.a.restart]\nburst = 0\n",
            "targets.a.restart.burst: must be at least 1",
        ),
        (
            GOOD_TARGET + "[targets.a.health]\ntcp = 'localhost'\n",
            "targets.a.health.tcp: 'localhost' is not HOST:PORT",
        ),
        (GOOD_TARGET + "[targets.a.health]\nprobe = 1\n", "targets.a.health.probe: unknown key"),
        (
            GOOD_TARGET + "stop_signal = 'SIGNOPE'\n",
            "targets.a.stop_signal: 'SIGNOPE' is not a signal",
        ),
        (GOOD_TARGET + "orphans = 'maybe'\n", "targets.a.orphans: 'maybe': use"),
        ('[targets."a b"]\ncommand = ["/bin/true"]\n', "targets.a b: a target name is"),
        ("[targets]\na = 1\n", "targets.a: expected a table"),
        # tomllib recurses once per level: RecursionError, which must not escape
        ("a = " + "[" * 100000 + "]" * 100000 + "\n", "not valid TOML: nested too deeply"),
        ("a = " + "{b = " * 5000 + "1" + "}" * 5000 + "\n", "not valid TOML: nested too deeply"),
        # A NUL byte cannot reach exec, open or getpwnam: refused at load
        (
            '[targets.a]\ncommand = ["/bin/sleep", "1\\u0000"]\n',
            "targets.a.command: '1\\x00' contains a NUL",
        ),
        (
            '[targets.a]\ncommand = ["/bin/sl\\u0000eep"]\n',
            "targets.a.command: '/bin/sl\\x00eep' contains a NUL",
        ),
        (
            GOOD_TARGET + 'match = ["/bin/sleep", "\\u0000"]\n',
            "targets.a.match: '\\x00' contains a NUL",
        ),
        (
            GOOD_TARGET + 'env = { "A\\u0000" = "b" }\n',
            "targets.a.env: the name 'A\\x00' contains a NUL byte",
        ),
        (GOOD_TARGET + 'env = { A = "b\\u0000" }\n', "targets.a.env.A: 'b\\x00' contains a NUL"),
        (
            GOOD_TARGET + 'on_start = ["/bin/echo", "\\u0000"]\n',
            "targets.a.on_start: '\\x00' contains a NUL",
        ),
        (
            GOOD_TARGET + 'on_give_up = ["/bin/echo\\u0000"]\n',
            "targets.a.on_give_up: '/bin/echo\\x00' contains",
        ),
        (
            GOOD_TARGET + 'pidfile = "/tmp/a\\u0000.pid"\n',
            "targets.a.pidfile: '/tmp/a\\x00.pid' contains a NUL",
        ),
        (GOOD_TARGET + 'cwd = "/\\u0000"\n', "targets.a.cwd: '/\\x00' contains a NUL"),
        (GOOD_TARGET + 'output = "o\\u0000"\n', "targets.a.output: 'o\\x00' contains a NUL"),
        (GOOD_TARGET + 'user = "root\\u0000"\n', "targets.a.user: 'root\\x00' contains a NUL"),
        (GOOD_TARGET + 'group = "root\\u0000"\n', "targets.a.group: 'root\\x00' contains a NUL"),
        (
            '[guardian]\nstate_dir = "/s\\u0000"\n' + GOOD_TARGET,
            "guardian.state_dir: '/s\\x00' contains",
        ),
        (
            '[guardian]\naudit_log = "a\\u0000"\n' + GOOD_TARGET,
            "guardian.audit_log: 'a\\x00' contains",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\ncommand = ["/bin/true", "\\u0000"]\n',
            "targets.a.health.command: '\\x00' contains a NUL",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nheartbeat_file = "b\\u0000"\n',
            "targets.a.health.heartbeat_file: 'b\\x00' contains a NUL",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nunix = "s\\u0000"\n',
            "targets.a.health.unix: 's\\x00' contains",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\ntcp = "h\\u0000:80"\n',
            "targets.a.health.tcp: 'h\\x00:80' contains",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://h\\u0000/"\n',
            "targets.a.health.http: 'http://h\\x00/' contains",
        ),
        # exec takes NAME=VALUE strings: a name that is empty or holds "=" cannot be one
        (
            GOOD_TARGET + 'env = { "" = "x" }\n',
            "targets.a.env.: '' is not a valid environment variable name",
        ),
        (
            GOOD_TARGET + 'env = { "A=B" = "x" }\n',
            "targets.a.env.A=B: 'A=B' is not a valid environment",
        ),
        # health.http: what the probe cannot use is refused at load
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://127.0.0.1:99999/"\n',
            "targets.a.health.http: 'http://127.0.0.1:99999/' has a bad port (Port out of range",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://127.0.0.1:abc/"\n',
            "targets.a.health.http: 'http://127.0.0.1:abc/' has a bad port",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://127.0.0.1:0/"\n',
            "targets.a.health.http: 'http://127.0.0.1:0/' has a bad port",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "ftp://x/"\n',
            "targets.a.health.http: 'ftp://x/' is not an http:// or https:// URL",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http:///nohost"\n',
            "targets.a.health.http: 'http:///nohost' has no host",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://[::1/"\n',
            "targets.a.health.http: 'http://[::1/' is not a URL (Invalid IPv6 URL)",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://h/a b"\n',
            "targets.a.health.http: 'http://h/a b' contains whitespace",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://h/\\r\\nX-Evil: 1"\n',
            "targets.a.health.http: 'http://h/\\r\\nX-Evil: 1' contains whitespace",
        ),
        (
            GOOD_TARGET + '[targets.a.health]\nhttp = "http://u:p@h/"\n',
            "targets.a.health.http: 'http://u:p@h/': the probe sends no credentials",
        ),
        (
            '[guardian]\nping_url = "ftp://h/x"\n' + GOOD_TARGET,
            "guardian.ping_url: 'ftp://h/x' is not an http:// or https:// URL",
        ),
        (
            '[guardian]\nping_url = "https://u:p@h/x"\n' + GOOD_TARGET,
            "guardian.ping_url: 'https://u:p@h/x': the ping sends no credentials",
        ),
        (
            '[guardian]\nping_url = "https://h/\\nX-Evil: 1"\n' + GOOD_TARGET,
            "guardian.ping_url: 'https://h/\\nX-Evil: 1' contains whitespace",
        ),
        (
            "[guardian]\nping_timeout = '30s'\n" + GOOD_TARGET,
            "guardian.ping_timeout: must be at most 10s",
        ),
        (
            "[guardian]\nping_timeout = 0\n" + GOOD_TARGET,
            "guardian.ping_timeout: must be more than 0",
        ),
        (
            "[guardian]\nping_start = 'yes'\n" + GOOD_TARGET,
            "guardian.ping_start: expected true or false, got string 'yes'",
        ),
        (
            "[guardian]\naudit_max_bytes = '10 parsecs'\n" + GOOD_TARGET,
            "guardian.audit_max_bytes: '10 parsecs' is not a size",
        ),
        (
            "[guardian]\naudit_max_bytes = 1000\n" + GOOD_TARGET,
            "guardian.audit_max_bytes: must be 0 (no rotation) or at least 64K",
        ),
        (
            "[guardian]\naudit_max_bytes = -1\n" + GOOD_TARGET,
            "guardian.audit_max_bytes: -1 is out of range",
        ),
        (
            "[guardian]\naudit_max_bytes = true\n" + GOOD_TARGET,
            "guardian.audit_max_bytes: True is not a size",
        ),
        ("[guardian]\naudit_keep = 0\n" + GOOD_TARGET, "guardian.audit_keep: must be at least 1"),
        (
            "[guardian]\naudit_keep = 101\n" + GOOD_TARGET,
            "guardian.audit_keep: must be at most 100",
        ),
        (
            "[guardian]\nmetrics_file = ''\n" + GOOD_TARGET,
            "guardian.metrics_file: must not be empty",
        ),
    ],
)
def test_bad_config_is_one_clear_line_and_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "g.toml"
    config.write_text(text)
    result = guardian_check(config)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert result.stderr.startswith(f"guardian: {config}: ")
    assert expected in result.stderr


def test_the_keys_for_metrics_the_ping_and_rotation_are_read_as_written(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text(
        "[guardian]\n"
        'metrics_file = "prom/guardian.prom"\n'
        'ping_url = "https://hc-ping.com/0f6a3c2e-uuid"\n'
        'ping_timeout = "2s"\n'
        "ping_start = true\n"
        'audit_max_bytes = "10M"\n'
        "audit_keep = 3\n" + GOOD_TARGET
    )
    s = load(config).settings
    assert s.metrics_file == tmp_path / "prom" / "guardian.prom"
    assert s.ping_url == "https://hc-ping.com/0f6a3c2e-uuid"
    assert (s.ping_timeout, s.ping_start) == (2.0, True)
    assert (s.audit_max_bytes, s.audit_keep) == (10 << 20, 3)
    config.write_text(GOOD_TARGET)  # none of them: no metrics, no ping, no rotation
    s = load(config).settings
    assert (s.metrics_file, s.ping_url, s.ping_start, s.audit_max_bytes) == (None, None, False, 0)
    assert (s.ping_timeout, s.audit_keep) == (3.0, 5)


@pytest.mark.parametrize(
    "metrics",
    [
        "state/audit.jsonl",  # the audit log
        "state/audit.jsonl.1",  # a rotated one
        "state/state/a.json",  # a state file
        "state/locks/x.prom",  # the locks' folder
        "state/holds/a.prom",
        "a.pid",  # a target's pidfile
        "state/a.out",  # its output
        "g.toml",  # the config itself
        "link/audit.jsonl",  # the log, through a symlinked folder
        "alias.prom",  # the config, through a symlink to it
        "/etc/cron.d/guardian",  # what guardian's installer writes: no .prom
    ],
)
def test_a_metrics_file_that_is_one_of_guardians_own_is_refused(
    tmp_path: Path, metrics: str
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "state")
    (tmp_path / "alias.prom").symlink_to(tmp_path / "g.toml")
    config = tmp_path / "g.toml"
    config.write_text(
        f'[guardian]\nstate_dir = "state"\nmetrics_file = "{metrics}"\n'
        '[targets.a]\ncommand = ["/bin/sleep", "100"]\npidfile = "a.pid"\n'
    )
    result = guardian_check(config)
    assert result.returncode == 2, result
    assert "guardian.metrics_file: " in result.stderr
    assert "one of guardian's own files" in result.stderr or "NAME.prom" in result.stderr
    before = (tmp_path / "state" / "audit.jsonl").exists()
    assert not before  # refused before anything was written
    config.write_text(
        config.read_text().replace(f'metrics_file = "{metrics}"', 'metrics_file = "state/g.prom"')
    )
    assert load(config).settings.metrics_file == tmp_path / "state" / "g.prom"


def test_missing_config_and_bad_options_exit_2(tmp_path: Path) -> None:
    missing = guardian_check(tmp_path / "nope.toml")
    assert missing.returncode == 2
    assert "nope.toml: cannot read config: No such file or directory" in missing.stderr
    config = tmp_path / "g.toml"
    config.write_text(GOOD_TARGET)
    bad_timeout = guardian_check(config, "--timeout", "forever")
    assert bad_timeout.returncode == 2
    assert "Invalid value for '--timeout'" in bad_timeout.stderr
    assert "Traceback" not in bad_timeout.stderr


def test_config_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text("[targets.a]\ncommand = ['/bin/sleep']\ncolour = 1\n")
    env = {**os.environ, "GUARDIAN_CONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, "-m", "guardian", "check"], capture_output=True, text=True, env=env,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert str(config) in result.stderr


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "agent").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "agent").chmod(0o755)
    config = tmp_path / "etc" / "g.toml"
    config.write_text(
        "[guardian]\nstate_dir = '../state'\n"
        "[targets.a]\ncommand = ['../bin/agent', '--x', 'rel/arg']\ncwd = '..'\n"
        "[targets.b]\ncommand = ['sleep', '1']\npidfile = 'b.pid'\n"
    )
    loaded = load(config)
    a, b = loaded.targets
    assert loaded.settings.state_dir == tmp_path / "state"
    assert loaded.settings.audit_log == tmp_path / "state" / "audit.jsonl"
    assert a.command == (str(tmp_path / "bin" / "agent"), "--x", "rel/arg")  # args untouched
    assert a.match == a.command
    assert a.cwd == tmp_path
    assert a.pidfile == tmp_path / "state" / "pids" / "a.pid"
    assert a.output == tmp_path / "state" / "a.out"
    assert a.env == {"PATH": DEFAULT_PATH}
    assert os.path.basename(b.command[0]) == "sleep"
    assert os.path.isabs(b.command[0])  # a bare name is looked up once, on the target's PATH
    assert b.pidfile == tmp_path / "etc" / "b.pid"


def test_unknown_target_name(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text(GOOD_TARGET)
    with pytest.raises(ConfigError, match="no target named 'b' \\(targets: a\\)"):
        load(config).select(["b"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("2.5s", 2.5),
     (" 7 ", 7), (12, 12), (0.25, 0.25)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.one_of(st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers())))
def test_any_value_is_a_duration_or_a_value_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        assert "duration" in str(e) or "out of range" in str(e)
    else:
        assert 0 <= seconds < 10 * 365 * 86400


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d", ""]))
def test_number_and_unit_round_trip(number: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}[unit]
    if number * factor >= 10 * 365 * 86400:
        with pytest.raises(ValueError, match="out of range"):
            parse_duration(f"{number}{unit}")
    else:
        assert parse_duration(f"{number}{unit}") == pytest.approx(number * factor)


KEYS = ["command", "pidfile", "daemonizes", "match", "cwd", "env", "user", "group", "output",
        "start_timeout", "start_grace", "stop_signal", "stop_timeout", "orphans", "on_start",
        "hook_timeout", "restart", "health", "bogus"]  # fmt: skip
VALUES = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
    st.lists(st.text(max_size=6), max_size=3),
    st.just("/bin/sleep"),
    st.just("30s"),
    st.dictionaries(st.sampled_from(["burst", "window", "tcp", "http", "failures", "x"]),
                    st.one_of(st.integers(-3, 9), st.text(max_size=8)), max_size=3),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_config_values_load_or_give_a_config_error(fields: dict[str, object]) -> None:
    import tempfile

    from conftest import write_config

    with tempfile.TemporaryDirectory() as folder:
        path = write_config(Path(folder) / "g.toml", {}, {"t": fields})
        try:
            config = load(path)
        except ConfigError as e:
            assert str(e).startswith(f"{path}: ")
        else:
            (target,) = config.targets
            assert os.path.isabs(target.command[0])


def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening a FIFO for reading waits for a writer: unless O_NONBLOCK
    began = time.monotonic()
    result = guardian_check(fifo)
    assert time.monotonic() - began < 25  # guardian_check's own timeout is 30 s
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"guardian: {fifo}: not a regular file; a config must be one\n"
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"folder\.toml: not a regular file"):
        load(folder)


def test_a_config_larger_than_1_mib_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text(GOOD_TARGET + "#" * (1024 * 1024) + "\n")
    result = guardian_check(config)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"guardian: {config}: larger than 1 MiB (")
    config.write_text(GOOD_TARGET + "#" * (1024 * 1024 - len(GOOD_TARGET) - 1) + "\n")
    assert config.stat().st_size == 1024 * 1024
    assert load(config).targets[0].name == "a"  # exactly 1 MiB is still a config


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/health?deep=1", "https://example.com", "http://[::1]:8080/",
     "http://localhost/a?b=c&d=%20#fragment", "HTTP://Host.Example:443/"],
)  # fmt: skip
def test_a_good_http_url_is_kept_as_written(tmp_path: Path, url: str) -> None:
    config = tmp_path / "g.toml"
    config.write_text(GOOD_TARGET + f"[targets.a.health]\nhttp = {json.dumps(url)}\n")
    assert load(config).targets[0].health.http == url


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (every character not plainly printable escaped)."""
    plain = (c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in text)
    return '"' + "".join(plain) + '"'


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
def test_any_http_value_loads_or_gives_a_config_error(tail: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.toml"
        for url in (tail, f"http://{tail}", f"https://[{tail}", f"http://h:{tail}/"):
            path.write_text(f"{GOOD_TARGET}[targets.a.health]\nhttp = {toml_string(url)}\n")
            try:
                config = load(path)
            except ConfigError as e:
                assert str(e).startswith(f"{path}: targets.a.health.http: ")
            else:
                assert config.targets[0].health.http == url


USER_CHECK = """
import json, os, sys
from pathlib import Path
from guardian.config import load
from guardian.errors import ConfigError

uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)  # for good: this process is that user now
answers = {}
for arg in sys.argv[3:]:
    name, acting = arg.rsplit(":", 1)
    try:
        load(Path(name), acting=acting == "acting")
    except ConfigError as e:
        answers[arg] = str(e)
    else:
        answers[arg] = "ok"
print(json.dumps(answers))
"""


def test_another_user_or_group_needs_root_only_when_acting(
    system_user: str, shared_dir: Path
) -> None:
    import pwd

    # guardian is imported as root, then the process becomes the throwaway
    # user (python3 here may be a build under /root that others cannot run).
    pw = pwd.getpwnam(system_user)
    configs = {
        "root": {"user": "root"},
        "group": {"group": "root"},
        "self": {"user": system_user, "group": system_user},
    }
    paths = {}
    for name, fields in configs.items():
        paths[name] = write_config(
            shared_dir / f"{name}.toml", {}, {"a": {"command": ["/bin/sleep", "1"], **fields}}
        )
        paths[name].chmod(0o644)
    args = [f"{paths[name]}:{how}" for name in configs for how in ("acting", "reading")]
    done = subprocess.run(
        [sys.executable, "-c", USER_CHECK, str(pw.pw_uid), str(pw.pw_gid), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers[f"{paths['root']}:acting"] == (
        f"{paths['root']}: targets.a.user: 'root' is not guardian's own user ({system_user}): "
        "running the target as another user needs guardian to run as root"
    )
    assert answers[f"{paths['group']}:acting"].startswith(
        f"{paths['group']}: targets.a.group: 'root' is not guardian's own group (gid "
    )
    assert answers[f"{paths['group']}:acting"].endswith("needs guardian to run as root")
    # Reading only (status, uninstall): fine for an operator who is not root.
    assert answers[f"{paths['root']}:reading"] == "ok"
    assert answers[f"{paths['group']}:reading"] == "ok"
    # Its own user and group need no root, acting or not.
    assert answers[f"{paths['self']}:acting"] == "ok"
    assert answers[f"{paths['self']}:reading"] == "ok"


def test_root_may_run_a_target_as_another_user(tmp_path: Path, system_user: str) -> None:
    config = write_config(
        tmp_path / "g.toml",
        {},
        {"a": {"command": ["/bin/true"], "user": system_user, "group": "root"}},
    )
    (target,) = load(config).targets
    assert (target.user, target.group) == (system_user, "root")


@pytest.mark.parametrize(
    ("key", "fields"),
    [
        ("command", lambda p: {"command": [p, "--serve"]}),
        ("match", lambda p: {"match": [p]}),
        ("on_failure", lambda p: {"on_failure": [p]}),
        ("health.command", lambda p: {"health": {"command": [p]}}),
    ],
)
def test_a_program_missing_or_not_executable_is_a_config_error(
    tmp_path: Path, key: str, fields: Callable[[str], dict[str, object]]
) -> None:
    """Not a failed start every minute from cron: a dry run, install and a restart by hand
    refuse the config (exit 2, naming the key). (A real check goes on with the other
    targets: tests/test_check.py.)"""
    not_executable = tmp_path / "agent.py"
    not_executable.write_text("print('hi')\n")  # mode 0644: forgot chmod +x
    cases = {
        tmp_path / "not-installed-yet": "No such file or directory",
        not_executable: "is not executable (mode 644)",
        tmp_path: "is not a file",
    }
    for program, problem in cases.items():
        config = write_config(
            tmp_path / "g.toml",
            {"state_dir": str(tmp_path / "state")},
            {"a": {"command": ["/bin/sleep", "100"], **fields(str(program))}},
        )
        for args in (["check", "--dry-run"], ["install", "--dry-run"], ["restart", "a"]):
            done = subprocess.run(
                [sys.executable, "-m", "guardian", *args, "--config", str(config)],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert f"{config}: targets.a.{key}: program {program}" in done.stderr
            assert problem in done.stderr
        # Only reading it (status) still works: it is how an operator finds out.
        load(config, acting=False)
    assert not (tmp_path / "state" / "audit.jsonl").exists()  # nothing was run


def as_user(install: Any, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """guardian's command line run by ``user``, from an install every user can run."""
    return subprocess.run(
        ["runuser", "-u", user, "--", install.guardian, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_without_root_what_would_fail_every_run_is_a_config_error_naming_the_key(
    system_user: str, shared_install: Any, shared_dir: Path
) -> None:
    import pwd

    pw = pwd.getpwnam(system_user)
    mine = shared_dir / "mine"
    mine.mkdir()
    os.chown(mine, pw.pw_uid, pw.pw_gid)
    roots = shared_dir / "roots"  # root's, mode 0755: readable, not writable, by the user
    roots.mkdir()
    good = {"state_dir": str(mine / "state")}
    target = {"command": ["/bin/sleep", f"{os.getpid()}.{system_user}"]}
    cases = {
        # No state_dir: the default follows the user's passwd home (/nonexistent for this
        # system user), never /var/lib (which a user cannot write) nor $HOME.
        "default": ({}, target, "guardian.state_dir: / is not writable by "
                    f"{system_user} (to make /nonexistent/.local/state/guardian)"),
        "state_dir": ({"state_dir": str(roots / "state")}, target,
                      f"guardian.state_dir: {roots} is not writable by {system_user}"),
        "audit_log": ({**good, "audit_log": str(roots / "audit.jsonl")}, target,
                      f"guardian.audit_log: {roots} is not writable by {system_user}"),
        "pidfile": (good, {**target, "pidfile": str(roots / "a.pid")},
                    f"targets.a.pidfile: {roots} is not writable by {system_user}"),
        "output": (good, {**target, "output": str(roots / "a.out")},
                   f"targets.a.output: {roots} is not writable by {system_user}"),
        "user": (good, {**target, "user": "root"},
                 "targets.a.user: 'root' is not guardian's own user"),
    }  # fmt: skip
    for name, (top, fields, problem) in cases.items():
        config = write_config(shared_dir / f"{name}.toml", top, {"a": fields})
        config.chmod(0o644)
        for command in (["check", "--dry-run"], ["install", "--dry-run"]):
            done = as_user(shared_install, system_user, *command, "--config", str(config))
            assert done.returncode == 2, (name, command, done.stdout, done.stderr)
            assert done.stderr.startswith(f"guardian: {config}: {problem}"), (name, done.stderr)
    # And all of it where the user can write: fine (dry-run: it would start the target).
    config = write_config(shared_dir / "good.toml", good, {"a": target})
    config.chmod(0o644)
    done = as_user(shared_install, system_user, "check", "--dry-run", "--config", str(config))
    assert (done.returncode, done.stderr) == (1, ""), done.stderr
    assert done.stdout.startswith("a: would start: ")
    done = as_user(shared_install, system_user, "install", "--dry-run", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"check --config {config}" in done.stdout
    # Its own audit line, in the state folder it made, as the user, where it could.
    audit = (mine / "state" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["dry_run"] for line in audit] == [True]
    assert (mine / "state").stat().st_uid == pw.pw_uid
    assert not any(roots.iterdir())  # nothing was written where it could not be


def test_install_for_another_user_checks_the_config_as_that_user(
    system_user: str, shared_install: Any, shared_dir: Path
) -> None:
    """As root for --user U: what U could not write is found before the line goes in."""
    config = write_config(
        shared_dir / "g.toml",
        {"state_dir": str(shared_dir / "roots-state"), "timeout": "20s"},
        {"a": {"command": ["/bin/sleep", "100"]}},
    )
    config.chmod(0o644)
    done = subprocess.run(
        [shared_install.guardian, "install", "--user", system_user, "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"user {system_user} cannot use {config}" in done.stderr
    assert f"guardian.state_dir: {shared_dir} is not writable by {system_user}" in done.stderr
    listed = subprocess.run(["crontab", "-u", system_user, "-l"], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert listed.returncode != 0  # no crontab was made for the user


def test_dry_run_refuses_places_every_run_would_fail_to_write_as_root_too(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.touch()
    (tmp_path / "audit-link.jsonl").symlink_to(elsewhere)
    os.mkfifo(tmp_path / "out.fifo")
    (tmp_path / "a-file").touch()
    target = {"command": ["/bin/sleep", "100"], "pidfile": str(tmp_path / "a.pid")}
    cases = {
        "audit_log": ({"audit_log": str(tmp_path / "audit-link.jsonl")}, target,
                      "is a symlink, and guardian never writes through one"),
        "output": ({}, {**target, "output": str(tmp_path / "out.fifo")},
                   "is not a regular file"),
        "state_dir": ({"state_dir": str(tmp_path / "a-file")}, target,
                      f"{tmp_path / 'a-file'} is not a folder"),
        "pidfile": ({}, {**target, "pidfile": str(tmp_path / "a-file" / "a.pid")},
                    f"{tmp_path / 'a-file'} is not a folder"),
    }  # fmt: skip
    for key, (top, fields, problem) in cases.items():
        config = write_config(
            tmp_path / "g.toml", {"state_dir": str(tmp_path / "state"), **top}, {"a": fields}
        )
        done = guardian_check(config, "--dry-run")
        assert done.returncode == 2, (key, done.stdout, done.stderr)
        where = "guardian" if key in ("audit_log", "state_dir") else "targets.a"
        assert done.stderr.startswith(f"guardian: {config}: {where}.{key}: "), done.stderr
        assert problem in done.stderr
    assert elsewhere.read_text() == ""  # nothing written through the symlink


def test_a_tilde_is_the_home_of_the_password_database_never_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cron, a login shell and `sudo -E` must agree on every path, or two runs would keep
    two lock folders (and could start two copies)."""
    import pwd

    config = write_config(
        tmp_path / "g.toml",
        {"state_dir": "~/guardian-state", "audit_log": "~root/audit.jsonl"},
        {"a": {"command": ["/bin/sleep", "100"], "output": "~nosuchuser9/a.out"}},
    )
    home = pwd.getpwuid(os.geteuid()).pw_dir
    for fake in ("/elsewhere", str(tmp_path), ""):
        monkeypatch.setenv("HOME", fake)
        loaded = load(config)
        assert loaded.settings.state_dir == Path(home) / "guardian-state"
        assert loaded.settings.audit_log == Path(pwd.getpwnam("root").pw_dir) / "audit.jsonl"
        # No such user: a folder named so, relative to the config, as a shell would leave it.
        assert loaded.targets[0].output == tmp_path / "~nosuchuser9" / "a.out"


def test_dry_run_refuses_lock_and_state_folders_a_check_would_not_trust(tmp_path: Path) -> None:
    """Left by another user's runs (or made writable by others): every check would refuse
    them, so a dry run must not say "would start"."""
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "g.toml", {"state_dir": str(state)},
        {"a": {"command": ["/bin/sleep", "100"], "pidfile": str(tmp_path / "a.pid")}},
    )  # fmt: skip
    for sub in ("locks", "state"):
        folder = state / sub
        folder.mkdir(parents=True)
        os.chown(folder, 65534, 65534)  # nobody's
        done = guardian_check(config, "--dry-run")
        assert done.returncode == 2, done.stdout
        assert f"guardian.state_dir: {folder} is owned by " in done.stderr
        os.chown(folder, 0, 0)
        folder.chmod(0o777)
        done = guardian_check(config, "--dry-run")
        assert done.returncode == 2, done.stdout
        assert f"guardian.state_dir: {folder} is writable by others (mode 777)" in done.stderr
        folder.chmod(0o700)
    assert guardian_check(config, "--dry-run").returncode == 1  # would start: all is usable


def test_a_bare_program_is_never_found_relative_to_the_callers_folder(tmp_path: Path) -> None:
    program = tmp_path / "myprog9"
    program.write_text("#!/bin/sh\nsleep 100\n")
    program.chmod(0o755)
    config = write_config(
        tmp_path / "g.toml", {"state_dir": str(tmp_path / "state")},
        {"a": {"command": ["myprog9"], "env": {"PATH": "/nonexistent::."}}},
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "guardian", "check", "--dry-run", "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "targets.a.command: program 'myprog9' not found on PATH /nonexistent::." in done.stderr


def test_install_for_another_user_is_checked_as_that_user_only(
    system_user: str, shared_install: Any, shared_dir: Path
) -> None:
    """Once that user's cron has run, its lock folder is the user's: root's own rules
    (its state folders must be root's) must not refuse a reinstall."""
    import pwd

    pw = pwd.getpwnam(system_user)
    state = shared_dir / "state"
    state.mkdir()
    os.chown(state, pw.pw_uid, pw.pw_gid)
    config = write_config(shared_dir / "g.toml", {"state_dir": str(state), "timeout": "20s"},
                          {"a": {"command": ["/bin/sleep", "3002"]}})  # fmt: skip
    config.chmod(0o644)
    ran = as_user(shared_install, system_user, "check", "--config", str(config))
    assert ran.returncode == 0, ran.stderr
    pid = int((state / "pids" / "a.pid").read_text())
    try:
        assert (state / "locks").stat().st_uid == pw.pw_uid
        done = subprocess.run(
            [shared_install.guardian, "install", "--dry-run", "--user", system_user,
             "--config", str(config)], capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"would install in {system_user}'s crontab:")
    finally:
        os.kill(pid, signal.SIGKILL)  # the user's guardian started it for this test


def test_asking_as_another_user_is_bounded_and_ends_what_it_started(
    system_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's side that hangs (a home on a dead NFS server) ends in a clear answer,
    and what was started for the question is ended with it."""
    from guardian import cron

    token = f"guardian-hang-{os.getpid()}"
    monkeypatch.setattr(cron, "guardian_argv", lambda: ["/bin/sh", "-c", f"sleep 100; : {token}"])
    monkeypatch.setattr(cron, "AS_USER_TIMEOUT", 1.0)
    began = time.monotonic()
    problem = cron.cannot_run_as(system_user, Path("/etc/hostname"))
    assert time.monotonic() - began < 10
    assert problem == (f"user {system_user} cannot run /bin/sh (no answer within 1s), so cron "
                       "could not run guardian either")  # fmt: skip
    time.sleep(0.2)

    def cmdline(pid: str) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            return b""

    assert [p for p in os.listdir("/proc") if p.isdigit() and token.encode() in cmdline(p)] == []

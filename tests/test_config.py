"""Bad input gets one clear line (file, key, problem) and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian.config import DEFAULT_PATH, load, parse_duration
from guardian.errors import ConfigError

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

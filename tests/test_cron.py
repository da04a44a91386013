"""install, uninstall and status against the real crontab program, on a throwaway user."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.cron import next_run, parse_interval

from conftest import Guardian, SharedInstall, write_config

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/crontab").exists(),
    reason="needs Debian's cron package (.ci/run installs it)",
)

# Everything an operator's crontab may hold, which must all survive guardian.
CRONTAB = """\
# m h dom mon dow command
MAILTO=""
PATH=/usr/local/bin:/usr/bin:/bin

@reboot /usr/local/bin/warmup.sh
# nightly backup
30 2 * * * /usr/local/bin/backup --all > /dev/null 2>&1
*/5 * * * * echo 'a % b' # keep me
SHELL=/bin/bash
0 * * * * run-parts /etc/hourly
"""


def crontab(user: str, *args: str, text: str | None = None) -> str:
    result = subprocess.run(
        ["crontab", "-u", user, *args], input=text, capture_output=True, text=True, check=False
    )
    return result.stdout


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def guardian(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "guardian", *args])


@pytest.mark.parametrize(
    ("text", "schedule", "seconds"),
    [("1m", "*/1 * * * *", 60), ("5m", "*/5 * * * *", 300), ("30m", "*/30 * * * *", 1800),
     ("1h", "0 */1 * * *", 3600), ("6h", "0 */6 * * *", 21600), ("12h", "0 */12 * * *", 43200),
     ("1d", "0 0 * * *", 86400)],
)  # fmt: skip
def test_intervals(text: str, schedule: str, seconds: int) -> None:
    interval = parse_interval(text)
    assert (interval.schedule, interval.seconds) == (schedule, seconds)


@pytest.mark.parametrize(
    "text", ["7m", "0m", "60m", "90s", "5h", "24h", "2d", "1w", "m", "", "1 m"]
)
def test_other_intervals_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="1m to 59m dividing 60"):
        parse_interval(text)


@pytest.fixture
def utc() -> Iterator[None]:
    """This process's local time is UTC for the test: next_run follows it, as cron does."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC0"  # a POSIX TZ string: no time zone database needed
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("utc")
def test_next_run() -> None:
    now = datetime(2026, 11, 27, 4, 21, 30, tzinfo=UTC)
    assert next_run("* * * * *", now) == datetime(2026, 11, 27, 4, 22, tzinfo=UTC)
    assert next_run("*/5 * * * *", now) == datetime(2026, 11, 27, 4, 25, tzinfo=UTC)
    assert next_run("*/30 * * * *", now) == datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
    assert next_run("0 */6 * * *", now) == datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    assert next_run("0 0 * * *", now) == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    assert next_run("15 3 * * 1", now) is None
    # What python-crontab writes for guardian's 1h and 1d intervals
    assert next_run("@hourly", now) == datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    assert next_run("@daily", now) == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    assert next_run("@reboot", now) is None


# UTC+5:30 as a POSIX TZ string (the sign is west-positive), so no zone database is needed.
INDIA = "XYZ-5:30"


def test_next_run_follows_the_local_clock() -> None:
    """cron fires at local wall-clock times: 10:00 local is 04:30 UTC at +05:30."""
    script = """if True:
        import json, sys
        from datetime import UTC, datetime
        from guardian.cron import next_run
        fixed = datetime(2026, 11, 27, 5, 21, 30, tzinfo=UTC)  # 10:51:30 local
        naive = datetime(2026, 11, 27, 10, 51, 30)  # the same moment, as local wall time
        schedules = ["* * * * *", "*/15 * * * *", "0 */1 * * *", "0 */2 * * *", "0 0 * * *",
                     "@hourly", "@daily"]
        out = {}
        for s in schedules:
            for name, now in [("fixed", fixed), ("naive", naive), ("now", None)]:
                when = next_run(s, now)
                out[f"{s} {name}"] = [when.isoformat(), when.astimezone(UTC).isoformat()]
        print(json.dumps(out))
    """
    env = {**os.environ, "TZ": INDIA}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = {key: (datetime.fromisoformat(local), datetime.fromisoformat(utc))
           for key, (local, utc) in json.loads(done.stdout).items()}  # fmt: skip
    expected = {
        "* * * * *": "2026-11-27T05:22:00+00:00",
        "*/15 * * * *": "2026-11-27T05:30:00+00:00",  # 11:00 local
        "0 */1 * * *": "2026-11-27T05:30:00+00:00",  # 11:00 local, not 06:00 UTC
        "0 */2 * * *": "2026-11-27T06:30:00+00:00",  # 12:00 local, not 06:00 UTC
        "0 0 * * *": "2026-11-27T18:30:00+00:00",  # local midnight, not 2026-11-28T00:00Z
        "@hourly": "2026-11-27T05:30:00+00:00",
        "@daily": "2026-11-27T18:30:00+00:00",
    }
    for schedule, utc in expected.items():
        for name in ("fixed", "naive"):
            local, in_utc = out[f"{schedule} {name}"]
            assert in_utc.isoformat() == utc, (schedule, name)
            assert local.utcoffset() == timedelta(hours=5, minutes=30)  # aware, in local time
    minutes = {schedule: out[f"{schedule} now"][1].minute for schedule in expected}
    assert {minutes[s] for s in expected if s != "* * * * *" and not s.startswith("*/")} == {30}
    assert minutes["*/15 * * * *"] in (0, 15, 30, 45)
    assert out["0 */2 * * * now"][0].hour % 2 == 0  # an even hour of the local clock


@pytest.mark.usefixtures("cron_daemon")  # status says when cron runs guardian next: one runs
def test_status_shows_the_next_run_of_the_local_clock(g: Guardian, cron_d: tuple[str, ...]) -> None:
    # In /etc/cron.d as guardian sees it (a mount namespace of the test's own: see cron_d).
    cron_file = Path("/etc/cron.d/guardian-hourly")
    installed = g.run("install", "--interval", "1h", "--cron-file", str(cron_file), wrap=cron_d)
    assert installed.rc == 0, installed.stderr
    env = {**os.environ, "TZ": INDIA}
    shown = g.run("status", "--cron-file", str(cron_file), env=env, wrap=cron_d)
    assert re.search(
        rf"^cron: installed in {re.escape(str(cron_file))}: (@hourly|0 \S+ \* \* \*); "
        r"next run \d{4}-\d\d-\d\dT\d\d:30:00Z$",
        shown.stdout,
        re.MULTILINE,
    ), shown.stdout
    report = json.loads(g.run("status", "--json", "--cron-file", str(cron_file), env=env,
                              wrap=cron_d).stdout)  # fmt: skip
    assert report["cron"][0]["next_run"].endswith(":30:00Z")


def user_config(shared_dir: Path, user: str) -> str:
    """A config ``user`` can use, as install checks: readable, its program one the user can
    run, its state folder the user's (pytest's tmp_path is root's alone)."""
    state = shared_dir / "state"
    state.mkdir()
    shutil.chown(state, user)
    config = write_config(shared_dir / "guardian.toml", {"state_dir": str(state), "timeout": "30s"},
                          # Short: should cron run the line while the test runs, the
                          # target it starts ends by itself before the user is removed.
                          {"agent": {"command": ["/bin/sleep", "20"]}})  # fmt: skip
    config.chmod(0o644)
    return str(config)


def test_install_update_uninstall_keep_the_rest_of_the_crontab(
    system_user: str, shared_install: SharedInstall, shared_dir: Path
) -> None:
    crontab(system_user, "-", text=CRONTAB)
    config = user_config(shared_dir, system_user)

    def install(*args: str) -> subprocess.CompletedProcess[str]:
        return run([shared_install.guardian, "install", "--user", system_user,
                    "--config", config, *args])  # fmt: skip

    assert install("--dry-run").returncode == 0
    assert crontab(system_user, "-l") == CRONTAB  # a dry run changes nothing

    first = install("--interval", "1m")
    assert first.returncode == 0, first.stderr
    after = crontab(system_user, "-l")
    assert after.startswith(CRONTAB)  # every other line exactly as it was
    (ours,) = [line for line in after.splitlines() if line.endswith(f"# guardian: {config}")]
    assert (
        ours == f"* * * * * {shared_install.guardian} check --config {config} # guardian: {config}"
    )
    assert after == CRONTAB + ours + "\n"

    assert install("--interval", "1m").stdout.startswith("already installed")
    assert install("--interval", "5m").returncode == 0  # updated in place, not added
    assert crontab(system_user, "-l") == CRONTAB + "*/5" + ours[1:] + "\n"

    removed = run([shared_install.guardian, "uninstall", "--user", system_user, "--config", config])
    assert removed.returncode == 0
    assert crontab(system_user, "-l") == CRONTAB
    nothing = guardian("uninstall", "--user", system_user, "--config", config)
    assert nothing.returncode == 0
    assert "nothing to remove" in nothing.stdout


def crontab_rc(user: str) -> tuple[int, str]:
    result = subprocess.run(["crontab", "-u", user, "-l"], capture_output=True, text=True,
                            check=False)  # fmt: skip
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    "had",
    [None, "# only a comment\n", 'MAILTO=""\n', "@reboot /usr/local/bin/warmup.sh\n"],
    ids=["no-crontab", "a-comment", "an-env-line", "a-job"],
)
def test_uninstall_leaves_the_crontab_as_it_was_before_install(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, had: str | None
) -> None:
    if had is not None:
        crontab(system_user, "-", text=had)
    assert crontab_rc(system_user)[0] == (1 if had is None else 0)
    config = user_config(shared_dir, system_user)
    args = ["--user", system_user, "--config", config]
    installed = run([shared_install.guardian, "install", *args])
    assert installed.returncode == 0, installed.stderr
    assert crontab(system_user, "-l").count("# guardian: ") == 1

    removed = run([shared_install.guardian, "uninstall", *args])
    assert removed.returncode == 0, removed.stderr
    rc, said = crontab_rc(system_user)
    if had is None:  # as before install: no crontab at all, and uninstall says what it did
        assert rc == 1
        assert f"no crontab for {system_user}" in said
        assert removed.stdout == (
            f"removed guardian's line for {config}, and {system_user}'s crontab, which held "
            "nothing else (crontab -r), as before install\n"
        )
    else:  # anything else in it (a comment, an env line, a job) keeps it, byte for byte
        assert (rc, said) == (0, had)
        assert (
            removed.stdout == f"removed guardian's line for {config} from {system_user}'s crontab\n"
        )
    again = run([shared_install.guardian, "uninstall", *args])
    assert (again.returncode, again.stdout.split(":")[0]) == (0, "nothing to remove")
    assert crontab_rc(system_user)[0] == (1 if had is None else 0)


def test_uninstall_deletes_a_cron_file_left_with_only_its_header(g: Guardian) -> None:
    cron_file = g.tmp / "guardian-two"
    other = g.tmp / "other.toml"
    shutil.copy(g.config_path, other)
    args = ["--cron-file", str(cron_file)]
    for config in (g.config_path, other):
        done = guardian("install", "--config", str(config), *args)
        assert done.returncode == 0, done.stderr
    lines = cron_file.read_text().splitlines()
    assert lines[0] == "# Written by `guardian install`; `guardian uninstall` removes its lines."
    assert [line.rsplit("# guardian: ", 1)[1] for line in lines[1:]] == [
        str(g.config_path), str(other)]  # fmt: skip

    first = guardian("uninstall", "--config", str(g.config_path), *args)
    assert first.stdout == f"removed guardian's line for {g.config_path} from {cron_file}\n"
    assert cron_file.read_text().splitlines() == [lines[0], lines[2]]  # the other config's stays
    last = guardian("uninstall", "--config", str(other), *args)
    assert last.returncode == 0, last.stderr
    assert last.stdout == (
        f"removed guardian's line for {other}, and {cron_file}, which held nothing else\n"
    )
    assert not cron_file.exists()
    assert guardian("uninstall", "--config", str(other), *args).stdout.startswith(
        "nothing to remove"
    )
    assert not cron_file.exists()

    # Something of someone else's in it (a comment added by hand) keeps it.
    assert guardian("install", "--config", str(other), *args).returncode == 0
    with cron_file.open("a") as f:
        f.write("\n# ops: keep this file\n")
    assert guardian("uninstall", "--config", str(other), *args).returncode == 0
    assert cron_file.read_text() == f"{lines[0]}\n\n# ops: keep this file\n"


def test_install_refuses_a_user_who_cannot_run_this_guardian(system_user: str, g: Guardian) -> None:
    g.config_path.chmod(0o644)
    probe = subprocess.run(["runuser", "-u", system_user, "--", sys.executable, "-c", "pass"],
                           capture_output=True, check=False)  # fmt: skip
    if probe.returncode == 0:
        pytest.skip(f"{sys.executable} is usable by every user here")
    result = guardian("install", "--user", system_user, "--config", str(g.config_path))
    assert result.returncode == 2
    assert f"user {system_user} cannot run" in result.stderr
    assert "PYTHON=/usr/bin/python3 ./install.sh" in result.stderr
    assert crontab(system_user, "-l") == ""


def test_concurrent_installs_leave_one_line(system_user: str, g: Guardian) -> None:
    crontab(system_user, "-", text=CRONTAB)
    code = (
        "import sys; from pathlib import Path; from guardian import cron\n"
        "c = Path(sys.argv[2]); line = cron.render_line('*/1 * * * *', 'true', c)\n"
        "cron.update(cron.Place(user=sys.argv[1]), c, line)\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, system_user, str(g.config_path)])
        for _ in range(10)
    ]
    assert [run.wait(timeout=120) for run in runs] == [0] * 10
    lines = crontab(system_user, "-l").splitlines()
    assert len([line for line in lines if "# guardian:" in line]) == 1
    assert "\n".join(lines[: CRONTAB.count("\n")]) + "\n" == CRONTAB


def test_timeout_not_shorter_than_the_interval_is_refused(g: Guardian) -> None:
    g.configure(guardian={"timeout": "60s"})
    result = guardian("install", "--interval", "1m", "--config", str(g.config_path), "--dry-run")
    assert result.returncode == 2
    assert "guardian.timeout: 60s is not shorter than the interval 1m" in result.stderr
    assert guardian("install", "--interval", "2m", "--config", str(g.config_path),
                    "--dry-run").returncode == 0  # fmt: skip


def test_bad_interval_lists_what_is_accepted(g: Guardian) -> None:
    result = guardian("install", "--interval", "7m", "--config", str(g.config_path))
    assert result.returncode == 2
    assert "1m to 59m dividing 60" in result.stderr


def test_system_cron_file(g: Guardian) -> None:
    cron_file = g.tmp / "guardian-test"
    cron_file.write_text("# hand-written\nMAILTO=ops@example.org\n0 5 * * * root /bin/true\n")
    args = ["--config", str(g.config_path), "--cron-file", str(cron_file)]
    assert (
        guardian("install", "--interval", "1m", "--log", str(g.tmp / "g.log"), *args).returncode
        == 0
    )
    text = cron_file.read_text()
    assert text.startswith("# hand-written\nMAILTO=ops@example.org\n0 5 * * * root /bin/true\n")
    line = text.splitlines()[-1]
    assert line.startswith("* * * * * root ")  # the user field of a system cron file
    assert f">> {g.tmp / 'g.log'} 2>&1" in line
    st = cron_file.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    assert guardian("uninstall", *args).returncode == 0
    assert (
        cron_file.read_text()
        == "# hand-written\nMAILTO=ops@example.org\n0 5 * * * root /bin/true\n"
    )
    bad = guardian("install", "--config", str(g.config_path), "--cron-file", str(g.tmp / "g.cron"))
    assert bad.returncode == 2
    assert "letters, digits, '-' and '_'" in bad.stderr


@pytest.mark.usefixtures("cron_daemon")
def test_status_reports_targets_audit_and_cron(g: Guardian, cron_d: tuple[str, ...]) -> None:
    cron_file = Path("/etc/cron.d/guardian-status")  # in the test's own (see cron_d)
    down = g.run("status", "--cron-file", str(cron_file), wrap=cron_d)
    assert down.rc == 1
    assert "agent: NOT RUNNING: no pidfile at" in down.stdout
    assert "cron: not installed" in down.stdout
    assert g.check().rc == 0
    assert g.run("install", "--cron-file", str(cron_file), wrap=cron_d).rc == 0
    up = g.run("status", "--cron-file", str(cron_file), wrap=cron_d)
    assert up.rc == 0
    assert f"agent: running, pid {g.pid()}, up " in up.stdout
    assert "last started at 20" in up.stdout
    assert "1 start in 24h" in up.stdout
    assert f"cron: installed in {cron_file}: * * * * *; next run 20" in up.stdout
    report = json.loads(g.run("status", "--json", "--cron-file", str(cron_file),
                              wrap=cron_d).stdout)  # fmt: skip
    assert report["all_running"] is True
    assert report["targets"][0]["pid"] == g.pid()
    assert report["targets"][0]["starts_24h"] == 1
    assert report["cron"][0]["next_run"].endswith(":00Z")


@pytest.mark.parametrize("command", ["status", "uninstall", "install"])
def test_a_cron_file_that_is_a_fifo_is_refused_not_waited_on(g: Guardian, command: str) -> None:
    fifo = g.tmp / "guardian-fifo"
    os.mkfifo(fifo)
    result = g.run(command, "--cron-file", str(fifo), timeout=30)
    assert result.rc == 1
    assert f"cannot read {fifo}: is a FIFO, not a regular file" in result.stderr
    assert result.seconds < 10


# --- odd characters in paths: " #", "%", "\", a newline ---


def as_cron_runs(command: str) -> tuple[str, str]:
    """(what the shell gets, what goes to its input) of a crontab line's command, as Debian
    cron reads it (do_command.c): ``\\%`` is ``%``; the first other ``%`` ends the command."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(command):
        if escaped:
            escaped = False
            if ch == "%":
                out[-1] = "%"
                continue
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            return "".join(out), command[i + 1 :]
        out.append(ch)
    return "".join(out), ""


def argv_cron_gives(line: str, program: str) -> list[str]:
    """The arguments the shell would pass to ``program`` for a /etc/cron.d line."""
    fields = 2 if line.startswith("@") else 6  # the schedule, then the user field
    command = line.split(None, fields)[fields]
    shell, stdin = as_cron_runs(command)
    assert stdin == "", f"cron would feed {stdin!r} to the command: {line}"
    assert shell.startswith(program + " "), shell
    shown = subprocess.run(["/bin/sh", "-c", "printf '[%s]\\n'" + shell[len(program) :]],
                           capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    return re.findall(r"\[(.*?)\]\n", shown.stdout, re.DOTALL)


ODD = ["t-ha #sh", "50%", "a\\%b", "#lead", "tab\t#and #%", "it's \\ %#"]


@pytest.mark.parametrize("folder", ODD)
def test_a_config_path_with_odd_characters_gets_one_line_found_again(
    g: Guardian, folder: str
) -> None:
    (g.tmp / folder).mkdir()
    config = g.tmp / folder / "g.toml"
    shutil.copy(g.config_path, config)
    cron_file = g.tmp / "guardian"
    args = ["--config", str(config), "--cron-file", str(cron_file)]
    first = guardian("install", *args)
    assert first.returncode == 0, first.stderr
    again = guardian("install", *args)
    assert again.stdout.startswith("already installed"), again.stdout
    assert guardian("install", "--interval", "1h", *args).returncode == 0  # in place
    (ours,) = cron_file.read_text().splitlines()[1:]
    assert ours.startswith("@hourly root ")

    # What cron runs: guardian, with exactly this path, and nothing fed to its input.
    program = str(Path(sys.executable).parent / "guardian")
    assert argv_cron_gives(ours, program) == ["check", "--config", str(config)]

    found = guardian("status", "--json", *args)
    assert [e["line"] for e in json.loads(found.stdout)["cron"]] == [ours]
    done = guardian("uninstall", *args)
    assert done.stdout.startswith(f"removed guardian's line for {config}, and "), done.stdout
    assert not cron_file.exists()


def test_a_line_of_guardian_0_1_0_is_updated_in_place(g: Guardian) -> None:
    """Written by python-crontab: the marker's path as it is, the command cut at ' #'."""
    cron_file = g.tmp / "guardian"
    odd = {"x #y": "'{}'", "50%": "{}"}
    lines = []
    for folder, quoted in odd.items():
        (g.tmp / folder).mkdir()
        config = g.tmp / folder / "g.toml"
        shutil.copy(g.config_path, config)
        command = quoted.format(config).replace("%", "\\%")
        lines.append(f"* * * * * root /old/guardian check --config {command} # guardian: {config}")
    cron_file.write_text("".join(line + "\n" for line in lines))
    for folder in odd:
        config = g.tmp / folder / "g.toml"
        done = guardian("install", "--config", str(config), "--cron-file", str(cron_file))
        assert done.returncode == 0, done.stderr
    after = cron_file.read_text().splitlines()
    assert len(after) == 2
    assert not any("/old/guardian" in line for line in after)


def test_a_path_with_a_newline_is_refused(g: Guardian) -> None:
    (g.tmp / "a\nb").mkdir()
    config = g.tmp / "a\nb" / "g.toml"
    shutil.copy(g.config_path, config)
    cron_file = g.tmp / "guardian"
    for command in ("install", "uninstall"):
        done = guardian(command, "--config", str(config), "--cron-file", str(cron_file))
        assert done.returncode == 2, done.stderr
        assert done.stderr.endswith(
            "a path with a newline, carriage return or backspace "
            "cannot go in a crontab line; rename it\n"
        )
        assert done.stderr.count("\n") == 1  # one line: the path shown as 'a\nb'
    log = guardian("install", "--config", str(g.config_path), "--cron-file", str(cron_file),
                   "--log", str(g.tmp / "a\nb" / "g.log"))  # fmt: skip
    assert log.returncode == 2
    assert (
        "a path with a newline, carriage return or backspace cannot go in a crontab line"
        in log.stderr
    )
    assert not cron_file.exists()


def test_odd_paths_in_a_user_crontab(
    system_user: str, shared_install: SharedInstall, shared_dir: Path
) -> None:
    crontab(system_user, "-", text=CRONTAB)
    folder = shared_dir / "t-ha #sh 5%"
    folder.mkdir()
    folder.chmod(0o755)
    config = user_config(folder, system_user)
    args = ["--user", system_user, "--config", config]
    for _ in range(2):
        done = run([shared_install.guardian, "install", *args])
        assert done.returncode == 0, done.stderr
    after = crontab(system_user, "-l")
    assert after.startswith(CRONTAB)
    assert after.count("# guardian: ") == 1
    removed = run([shared_install.guardian, "uninstall", *args])
    assert removed.stdout.startswith("removed guardian's line"), removed.stdout
    assert crontab(system_user, "-l") == CRONTAB


# --- status reads /etc/cron.d as cron does: one odd file spoils nothing ---


SEARCH = """
import json, sys
from pathlib import Path
from guardian import cron
found = cron.search(Path(sys.argv[1]), cron_d=Path(sys.argv[2]))
print(json.dumps({"entries": [[e.where, e.not_run] for e in found.entries],
                  "unreadable": [str(p) for p in found.unreadable]}))
"""


def test_search_skips_what_cron_skips_and_what_it_cannot_read(
    system_user: str, shared_install: SharedInstall, shared_dir: Path
) -> None:
    from guardian import cron

    config = Path(user_config(shared_dir, system_user))
    line = cron.render_line("* * * * *", "/bin/true", config, system_user="root")
    cron_d = shared_dir / "cron.d"
    cron_d.mkdir()
    cron_d.chmod(0o755)
    outside = shared_dir / "elsewhere"
    outside.write_text(line + "\n")
    for name, mode in [("guardian", 0o644), ("secret", 0o600), ("loose", 0o664),
                       ("guardian.dpkg-old", 0o644)]:  # fmt: skip
        (cron_d / name).write_text(line + "\n")
        (cron_d / name).chmod(mode)
    (cron_d / "linked").symlink_to(outside)  # root's symlink: cron follows it
    (cron_d / "theirs").symlink_to(outside)
    os.lchown(cron_d / "theirs", pwd_uid(system_user), -1)  # cron ignores it
    (cron_d / "dangling").symlink_to(shared_dir / "nothing")
    os.mkfifo(cron_d / "fifo")
    (cron_d / "folder").mkdir()

    def search(*as_user: str) -> dict[str, list[Any]]:
        python = str(shared_install.prefix / "bin" / "python")
        done = run([*as_user, python, "-c", SEARCH, str(config), str(cron_d)])  # a FIFO: no hang
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    ignored = "cron ignores it: not owned by root"
    loose = "cron ignores it: writable by group or others"
    as_root = search()
    assert as_root == {
        "entries": [[f"{cron_d}/guardian", None], [f"{cron_d}/linked", None],
                    [f"{cron_d}/loose", loose], [f"{cron_d}/secret", None],
                    [f"{cron_d}/theirs", ignored]],
        "unreadable": [],
    }  # fmt: skip
    as_operator = search("runuser", "-u", system_user, "--")
    assert as_operator == {
        "entries": [e for e in as_root["entries"] if not e[0].endswith("/secret")],
        "unreadable": [f"{cron_d}/secret"],
    }
    assert cron.search_everywhere(config, cron_d=cron_d)[0].where == f"{cron_d}/guardian"


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_a_cron_file_cron_does_not_read_is_said(g: Guardian) -> None:
    from guardian import cron

    cron_file = g.tmp / "guardian"
    done = guardian("install", "--config", str(g.config_path), "--cron-file", str(cron_file))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"guardian: warning: {cron_file}: cron reads only /etc/crontab and the files in "
        "/etc/cron.d: this file is not run\n"
    )
    (entry,) = cron.installed(cron.Place(user="root", cron_file=cron_file), g.config_path)
    assert entry.not_run == cron.NOT_READ
    assert cron.not_run_reason(cron_file, cron_d=g.tmp) is None  # a root file, 0644
    cron_file.chmod(0o646)
    assert cron.not_run_reason(cron_file, cron_d=g.tmp) == (
        "cron ignores it: writable by group or others"
    )
    assert cron.not_run_reason(Path("/etc/cron.d/guardian-test-not-there")) is None
    assert cron.not_run_reason(Path("/etc/cron.d/guardian.dpkg-new")) == (
        "cron ignores it: a name with anything but letters, digits, '-' and '_'"
    )
    assert cron.not_run_reason(Path("/etc/cron.daily/guardian")) == cron.NOT_READ


# --- the report of install and uninstall, when stdout cannot take it ---


@pytest.mark.parametrize("stdout", ["/dev/full", "a closed pipe"])
def test_a_report_that_cannot_be_printed_is_one_line_on_stderr(g: Guardian, stdout: str) -> None:
    cron_file = g.tmp / "guardian-out"
    args = ["--config", str(g.config_path), "--cron-file", str(cron_file)]

    def run_to(command: str) -> subprocess.CompletedProcess[str]:
        if stdout == "/dev/full":
            with open("/dev/full", "w") as out:
                return subprocess.run([sys.executable, "-m", "guardian", command, *args],
                                      stdout=out, stderr=subprocess.PIPE, text=True,
                                      timeout=60, check=False)  # fmt: skip
        read, write = os.pipe()
        os.close(read)
        try:
            return subprocess.run([sys.executable, "-m", "guardian", command, *args],
                                  stdout=write, stderr=subprocess.PIPE, text=True,
                                  timeout=60, check=False)  # fmt: skip
        finally:
            os.close(write)

    why = "No space left on device" if stdout == "/dev/full" else "Broken pipe"
    installed = run_to("install")
    assert installed.returncode == 3
    assert installed.stderr.splitlines()[-1] == (
        f"guardian: installed in {cron_file}; but stdout could not be written ({why})"
    )
    assert "Traceback" not in installed.stderr
    assert "internal error" not in installed.stderr
    assert f"# guardian: {g.config_path}" in cron_file.read_text()  # done all the same

    removed = run_to("uninstall")
    assert (removed.returncode, removed.stderr) == (3, (
        f"guardian: removed guardian's line for {g.config_path}, and {cron_file}, which held "
        f"nothing else; but stdout could not be written ({why})\n"
    ))  # fmt: skip
    assert not cron_file.exists()


# --- one lock per crontab, whoever edits it ---


HOLD = """
import sys
from guardian import cron
with cron.locked(cron.Place(user=sys.argv[1] or None)):
    print("held", flush=True)
    sys.stdin.read()
"""

TRY = """
import sys
from guardian import cron
try:
    with cron.locked(cron.Place(user=sys.argv[1] or None), wait=0):
        print("free")
except cron.CronError as e:
    print(e)
"""


class Holder:
    """A process that holds a crontab's lock until the test lets go."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"

    def release(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def try_lock(argv: list[str]) -> str:
    done = run(argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_root_locks_its_crontab_by_uid_whichever_way_it_is_named() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for held, tried in [("root", ""), ("", "root")]:  # `install` and `install --user root`
        holder = Holder([sys.executable, "-c", HOLD, held])
        try:
            said = try_lock([sys.executable, "-c", TRY, tried])
            assert said.startswith("root's crontab is being edited by another guardian"), said
        finally:
            holder.release()
        assert try_lock([sys.executable, "-c", TRY, tried]) == "free"


@pytest.fixture
def user_with_home(system_user: str, shared_dir: Path) -> str:
    """``system_user``, with a home folder of its own (where its crontab's lock lives)."""
    home = shared_dir / "home"
    home.mkdir()
    shutil.chown(home, system_user, system_user)
    subprocess.run(["usermod", "--home", str(home), system_user], check=True)
    return system_user


def test_root_and_the_user_lock_the_same_file(
    user_with_home: str, shared_install: SharedInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardian import cron

    user = user_with_home
    python = str(shared_install.prefix / "bin" / "python")
    as_user = ["runuser", "-u", user, "--", python, "-c"]
    busy = f"{user}'s crontab is being edited by another guardian"

    holder = Holder([python, "-c", HOLD, user])  # root: uninstall --user U
    try:
        assert try_lock([*as_user, TRY, ""]).startswith(busy)  # U: install
    finally:
        holder.release()
    assert try_lock([*as_user, TRY, ""]) == "free"

    holder = Holder([*as_user, HOLD, ""])  # U: install
    try:
        assert try_lock([python, "-c", TRY, user]).startswith(busy)  # root: install --user U
        with pytest.raises(cron.CronError, match=busy), cron.locked(cron.Place(user), wait=0):
            pass
        # The child that takes the user's lock, given up on (as on a home folder that hangs):
        # killed, and said so. (The margin made negative: it waits 5s, root 0.5s.)
        monkeypatch.setattr(cron, "_CHILD_MARGIN", -4.5)
        began = time.monotonic()
        with (
            pytest.raises(cron.CronError, match=r"did not answer \(within 0.5s\)"),
            cron.locked(cron.Place(user), wait=5),
        ):
            pass
        assert time.monotonic() - began < 4
        assert (os.geteuid(), os.getegid()) == (0, 0)  # root's own ids never change
    finally:
        holder.release()
    assert try_lock([python, "-c", TRY, user]) == "free"
    lock = Path(pwd_home(user)) / ".cache" / "guardian" / f"crontab-{pwd_uid(user)}.lock"
    assert lock.stat().st_uid == pwd_uid(user)  # made by root with the user's rights


def pwd_home(user: str) -> str:
    import pwd

    return pwd.getpwnam(user).pw_dir


def test_a_user_without_a_home_cannot_lock_its_crontab_and_is_told_why(
    system_user: str, shared_install: SharedInstall, shared_dir: Path
) -> None:
    config = user_config(shared_dir, system_user)
    done = run(["runuser", "-u", system_user, "--", shared_install.guardian, "install",
                "--config", config])  # fmt: skip
    assert done.returncode == 1
    assert f"cannot lock {system_user}'s crontab for editing: " in done.stderr
    assert f"guardian install --user {system_user}" in done.stderr
    assert crontab_rc(system_user)[0] == 1  # still none


def test_root_and_the_user_editing_at_once_lose_nothing(
    user_with_home: str, shared_install: SharedInstall, shared_dir: Path
) -> None:
    user = user_with_home
    g = shared_install.guardian
    configs = {}
    for name in ("root_adds", "root_removes", "user_adds", "user_removes"):
        folder = shared_dir / name
        folder.mkdir()
        folder.chmod(0o755)
        configs[name] = user_config(folder, user)
    as_user = ["runuser", "-u", user, "--", g]

    def line(config: str) -> str:
        return f"* * * * * {g} check --config {config} # guardian: {config}"

    start = CRONTAB + line(configs["root_removes"]) + "\n" + line(configs["user_removes"]) + "\n"
    for _ in range(4):
        crontab(user, "-", text=start)
        argvs = [
            [g, "install", "--user", user, "--config", configs["root_adds"]],
            [g, "uninstall", "--user", user, "--config", configs["root_removes"]],
            [*as_user, "install", "--config", configs["user_adds"]],
            [*as_user, "uninstall", "--config", configs["user_removes"]],
        ]
        runs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for argv in argvs]
        assert [r.wait(timeout=120) for r in runs] == [0, 0, 0, 0]
        after = crontab(user, "-l")
        assert after.startswith(CRONTAB)
        assert sorted(after[len(CRONTAB) :].splitlines()) == sorted(
            [line(configs["root_adds"]), line(configs["user_adds"])]
        )


def test_a_crontab_crontab_l_garbles_is_not_rewritten(
    system_user: str, shared_install: SharedInstall, shared_dir: Path
) -> None:
    """Debian's `crontab -l` shows a carriage return as the two characters \\r: writing
    that back would change the user's job (and lose guardian's own line)."""
    job = b'* * * * * /bin/echo "a\rb" >/dev/null\n'
    subprocess.run(["crontab", "-u", system_user, "-"], input=job, check=True)
    config = user_config(shared_dir, system_user)
    done = run([shared_install.guardian, "install", "--user", system_user, "--config", config])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "holds \\r or \\b, which `crontab -l` also shows for a carriage return" in done.stderr
    spool = subprocess.run(["crontab", "-u", system_user, "-l"], capture_output=True,
                           check=True).stdout  # fmt: skip
    assert b"guardian" not in spool  # untouched
    folder = shared_dir / "cr\rx"
    folder.mkdir()
    write_config(folder / "g.toml", {"state_dir": str(folder / "state"), "timeout": "30s"},
                 {"agent": {"command": ["/bin/sleep", "1000"]}})  # fmt: skip
    bad = run([shared_install.guardian, "install", "--dry-run", "--config",
               str(folder / "g.toml")])  # fmt: skip
    assert bad.returncode == 2
    assert "a path with a newline, carriage return or backspace cannot go in a crontab" in (
        bad.stderr)  # fmt: skip

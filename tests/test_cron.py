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
def test_status_shows_the_next_run_of_the_local_clock(g: Guardian) -> None:
    cron_file = g.tmp / "guardian-hourly"
    installed = guardian("install", "--interval", "1h", "--config", str(g.config_path),
                         "--cron-file", str(cron_file))  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "TZ": INDIA}
    shown = g.run("status", "--cron-file", str(cron_file), env=env)
    assert re.search(
        rf"^cron: installed in {re.escape(str(cron_file))}: (@hourly|0 \S+ \* \* \*); "
        r"next run \d{4}-\d\d-\d\dT\d\d:30:00Z$",
        shown.stdout,
        re.MULTILINE,
    ), shown.stdout
    report = json.loads(g.run("status", "--json", "--cron-file", str(cron_file), env=env).stdout)
    assert report["cron"][0]["next_run"].endswith(":30:00Z")


def user_config(shared_dir: Path, user: str) -> str:
    """A config ``user`` can use, as install checks: readable, its program one the user can
    run, its state folder the user's (pytest's tmp_path is root's alone)."""
    state = shared_dir / "state"
    state.mkdir()
    shutil.chown(state, user)
    config = write_config(shared_dir / "guardian.toml", {"state_dir": str(state), "timeout": "30s"},
                          {"agent": {"command": ["/bin/sleep", "1000"]}})  # fmt: skip
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
def test_status_reports_targets_audit_and_cron(g: Guardian) -> None:
    cron_file = g.tmp / "guardian-status"
    down = g.run("status", "--cron-file", str(cron_file))
    assert down.rc == 1
    assert "agent: NOT RUNNING: no pidfile at" in down.stdout
    assert "cron: not installed" in down.stdout
    assert g.check().rc == 0
    assert guardian("install", "--config", str(g.config_path), "--cron-file",
                    str(cron_file)).returncode == 0  # fmt: skip
    up = g.run("status", "--cron-file", str(cron_file))
    assert up.rc == 0
    assert f"agent: running, pid {g.pid()}, up " in up.stdout
    assert "last started at 20" in up.stdout
    assert "1 start in 24h" in up.stdout
    assert f"cron: installed in {cron_file}: * * * * *; next run 20" in up.stdout
    report = json.loads(g.run("status", "--json", "--cron-file", str(cron_file)).stdout)
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

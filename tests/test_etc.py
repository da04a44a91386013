"""The shipped configs load, and the demo works as the README says: none of them rots."""

from __future__ import annotations

import configparser
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guardian.config import DEFAULT_PATH, Hooks, Restart, load

from conftest import AGENT, Guardian, Reaper, SharedInstall, alive, wait_for

ETC = Path(__file__).parent.parent / "etc"


BIN = Path(sys.executable).parent  # this virtualenv: supervisord and supervisorctl from PyPI


def user_example(home: Path) -> str:
    """etc/guardian-user.toml as install.sh copies it for a user whose home is ``home``:
    each ~ before a / or a closing quote becomes the home folder."""
    text = (ETC / "guardian-user.toml").read_text()
    return re.sub(r'(?<![\w.~-])~(?=[/"])', lambda _: str(home), text)


def example_here(name: str, tmp_path: Path) -> Path:
    """etc/NAME with its programs moved to ones this host has (this virtualenv's)."""
    if name == "demo.toml":  # its paths are relative to etc/: the checkout's .venv
        return ETC / name
    if name == "guardian-user.toml":
        home = tmp_path / "home"
        (home / ".local").mkdir(parents=True)
        (home / ".local" / "supervisor").symlink_to(Path(sys.prefix))
        text = user_example(home)
    else:
        text = (ETC / name).read_text()
        for program in ("supervisord", "supervisorctl"):
            for where in ("/usr/bin", "/opt/supervisor/bin"):
                text = text.replace(f'"{where}/{program}"', f'"{BIN / program}"')
    path = tmp_path / name
    path.write_text(text)
    return path


EXAMPLES = ["guardian.toml", "supervisord-pip.toml", "guardian-user.toml", "demo.toml"]


def test_every_example_config_is_tested() -> None:
    assert sorted(p.name for p in ETC.glob("*.toml")) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_config_loads(name: str, tmp_path: Path) -> None:
    # As shipped (reading only: its programs need not be on this host), then with its
    # programs moved to ones this host has, as guardian check loads it.
    raw = load(ETC / name, acting=False)
    here = load(example_here(name, tmp_path))
    assert len(raw.targets) == len(here.targets) == 1
    target = here.targets[0]
    assert Path(target.command[0]).is_file()
    assert raw.settings.timeout == (20 if name == "demo.toml" else 50)
    if name == "demo.toml":
        assert target.name == "demo-agent"
        return
    assert target.name == "supervisord"
    assert target.daemonizes
    assert target.orphans == "kill"
    assert target.env["LANG"] == "C.UTF-8"
    assert target.user is None
    assert target.health.failures == 3
    assert target.health.http is None
    assert target.health.tcp is None
    probe = target.health.command
    assert probe is not None
    # supervisord's own answer, never `status` (README.md, "Supervisord recipes")
    assert probe[0].endswith("/supervisorctl")
    assert Path(probe[0]).is_file()
    assert probe[1:] == (*target.command[1:], "pid")
    assert target.restart == Restart()  # the defaults, when spelled out
    assert target.hooks == Hooks()  # commented out
    if name == "guardian.toml":  # Debian's and Ubuntu's package, as its init script runs it
        assert raw.targets[0].command == (
            "/usr/bin/supervisord", "-c", "/etc/supervisor/supervisord.conf")  # fmt: skip
        assert raw.targets[0].health.command == (
            "/usr/bin/supervisorctl", "-c", "/etc/supervisor/supervisord.conf", "pid")  # fmt: skip
        assert raw.targets[0].pidfile == Path("/run/supervisord.pid")
        assert raw.settings.state_dir == Path("/var/lib/guardian")
        assert raw.settings.audit_log == Path("/var/lib/guardian/audit.jsonl")
    elif name == "supervisord-pip.toml":
        assert raw.targets[0].command == (
            "/opt/supervisor/bin/supervisord", "-c", "/etc/supervisord.conf")  # fmt: skip
        assert raw.targets[0].pidfile == Path("/run/supervisord.pid")  # not pip's /tmp
    else:  # without root: everything in the home folder
        home = tmp_path / "home"
        assert here.settings.state_dir == home / ".local" / "state" / "guardian"
        assert target.command == (str(home / ".local/supervisor/bin/supervisord"), "-c",
                                  str(home / ".config/supervisor/supervisord.conf"))  # fmt: skip
        assert target.pidfile == home / ".local/state/supervisor/supervisord.pid"
        assert (target.cwd, target.env["HOME"]) == (home, str(home))
        assert "~" not in repr(here)
        # guardian itself expands ~ in paths (as the file says), not in arguments
        assert raw.settings.state_dir == Path(os.path.expanduser("~/.local/state/guardian"))
        assert raw.targets[0].command[2] == "~/.config/supervisor/supervisord.conf"


# Debian 12's /etc/supervisor/supervisord.conf (package supervisor 4.2.5-1), as shipped.
DEBIAN_SUPERVISORD_CONF = """\
; supervisor config file

[unix_http_server]
file=/var/run/supervisor.sock   ; (the path to the socket file)
chmod=0700                       ; sockef file mode (default 0700)

[supervisord]
logfile=/var/log/supervisor/supervisord.log ; (main log file;default $CWD/supervisord.log)
pidfile=/var/run/supervisord.pid ; (supervisord pidfile;default supervisord.pid)
childlogdir=/var/log/supervisor            ; ('AUTO' child log dir, default $TEMP)

; the below section must remain in the config file for RPC
; (supervisorctl/web interface) to work, additional interfaces may be
; added by defining them in separate rpcinterface: sections
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///var/run/supervisor.sock ; use a unix:// URL  for a unix socket

; The [include] section can just contain the "files" setting.  This
; setting can list multiple files (separated by whitespace or
; newlines).  It can also contain wildcards.  The filenames are
; interpreted as relative to this file.  Included files *cannot*
; include files themselves.

[include]
files = /etc/supervisor/conf.d/*.conf
"""


def test_debian_recipe_keeps_a_supervisord_laid_out_as_debians(g: Guardian) -> None:
    # Debian's layout moved into tmp_path: /etc/supervisor, /var/run (= /run), /var/log.
    root = g.tmp
    etc, run, log = root / "etc" / "supervisor", root / "run", root / "log" / "supervisor"
    for folder in (etc / "conf.d", run, log):
        folder.mkdir(parents=True)
    (etc / "supervisord.conf").write_text(
        DEBIAN_SUPERVISORD_CONF.replace("/var/run/", f"{run}/")
        .replace("/var/log/supervisor", str(log))
        .replace("/etc/supervisor/", f"{etc}/")
    )
    agents = {name: [sys.executable, str(AGENT), "--tag", f"{root}/{name}"]
              for name in ("worker", "spare")}  # fmt: skip
    (etc / "conf.d" / "agents.conf").write_text(
        f"[program:worker]\ncommand={shlex.join(agents['worker'])}\n"
        f"[program:spare]\ncommand={shlex.join(agents['spare'])}\n"
        "autostart=false\n"  # stopped on purpose: no reason to restart anything
    )
    # The recipe, its paths moved the same way; at its strictest (one failing run
    # restarts), with its optional unix probe on too.
    recipe = example_here("guardian.toml", root).read_text()
    for old, new in (("/etc/supervisor/", f"{etc}/"), ('"/run/', f'"{run}/'),
                     ('"/var/lib/guardian"', f'"{g.state}"'), ("failures = 3", "failures = 1"),
                     ('# unix = "', 'unix = "')):  # fmt: skip
        assert old in recipe
        recipe = recipe.replace(old, new)
    g.config_path.write_text(recipe)
    conf = etc / "supervisord.conf"
    g.command = [str(BIN / "supervisord"), "-c", str(conf)]

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip

    first = g.check()
    assert first.rc == 0, first.stderr
    pid = int((run / "supervisord.pid").read_text())
    g.reaper.track(pid)
    assert (run / "supervisor.sock").exists()
    worker = wait_for(lambda: (w := ctl("pid", "worker").stdout.strip()).isdigit() and int(w),
                      what="worker RUNNING")  # fmt: skip
    g.reaper.track(worker)
    for _ in range(3):
        again = g.check()
        assert (again.rc, again.stderr) == (0, "")
    assert g.actions() == ["started", "ok", "ok", "ok"]
    assert int((run / "supervisord.pid").read_text()) == pid
    assert alive(pid)
    assert alive(worker)
    # What the README's old probe would have said, in that very state.
    assert ctl("status").returncode == 3
    assert ctl("pid").stdout.strip() == str(pid)


def test_demo_starts_finds_healthy_and_restarts_after_a_kill(
    tmp_path: Path, reaper: Reaper
) -> None:
    # The README's first command, on a copy of etc/ whose ../.venv is this virtualenv.
    (tmp_path / "etc").mkdir()
    shutil.copy(ETC / "demo.toml", tmp_path / "etc" / "demo.toml")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    config = tmp_path / "etc" / "demo.toml"
    text = config.read_text().replace("8765", "18765")  # not the port of a demo you run
    config.write_text(text)
    guardian = [sys.executable, "-m", "guardian", "check", "-v", "--config", str(config)]
    pidfile = tmp_path / ".demo-state" / "pids" / "demo-agent.pid"

    def check() -> subprocess.CompletedProcess[str]:
        result = subprocess.run(guardian, capture_output=True, text=True, timeout=60, check=False)
        if pidfile.exists():
            reaper.track(int(pidfile.read_text()))
        return result

    first = check()
    assert first.returncode == 0, first.stderr
    assert "demo-agent: started" in first.stderr
    pid = int(pidfile.read_text())
    heartbeat = tmp_path / ".demo-state" / "demo-agent.heartbeat"
    wait_for(heartbeat.exists, what="the heartbeat file")
    second = check()
    assert "demo-agent: ok: running" in second.stderr
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: not alive(pid), what="the demo agent to die")
    third = check()
    assert "demo-agent: started" in third.stderr
    assert int(pidfile.read_text()) != pid


def test_cron_d_example_is_what_install_writes() -> None:
    from guardian import cron

    lines = [
        line
        for line in (ETC / "cron.d" / "guardian").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    config = Path("/etc/guardian/guardian.toml")
    command = shlex.join(["/opt/guardian/bin/guardian", "check", "--config", str(config)])
    every = cron.parse_interval("1m")
    assert lines == [cron.render_line(every.schedule, command, config, system_user="root")]
    cron.check_cron_file_path(ETC / "cron.d" / "guardian")  # a name cron reads


def _systemd_copy(tmp_path: Path, config: Path) -> Path:
    guardian = Path(sys.executable).parent / "guardian"
    for name in ("guardian.service", "guardian.timer"):
        text = (ETC / "systemd" / name).read_text()
        text = text.replace("/opt/guardian/bin/guardian", str(guardian))
        text = text.replace("/etc/guardian/guardian.toml", str(config))
        (tmp_path / name).write_text(text)
    return tmp_path / "guardian.service"


def test_systemd_units_verify_and_their_command_runs(g: Guardian) -> None:
    service = _systemd_copy(g.tmp, g.config_path)
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(service), str(g.tmp / "guardian.timer")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
    unit = configparser.ConfigParser(strict=False)
    unit.read_string(service.read_text())
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["KillMode"] == "process"  # the target outlives the run
    # ExecStart, as systemd would run it, is a working guardian check.
    result = subprocess.run(
        shlex.split(unit["Service"]["ExecStart"]), capture_output=True, text=True, check=False
    )
    g.track()
    assert result.returncode == 0, result.stderr
    assert alive(g.pid())


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate (.ci/run has it)")
def test_logrotate_rotates_the_audit_log_and_guardian_writes_a_new_one(g: Guardian) -> None:
    audit = g.state / "audit.jsonl"
    assert g.check().rc == 0
    assert g.check().rc == 0
    conf = g.tmp / "logrotate.conf"
    conf.write_text(
        (ETC / "logrotate.d" / "guardian")
        .read_text()
        .replace("/var/lib/guardian/audit.jsonl", str(audit))
    )
    rotate = subprocess.run(
        ["logrotate", "--force", "--state", str(g.tmp / "logrotate.state"), str(conf)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert rotate.returncode == 0, rotate.stderr
    assert len((g.state / "audit.jsonl.1").read_text().splitlines()) == 2
    assert audit.read_text() == ""  # `create`: a fresh, empty log
    assert g.check().rc == 0
    assert [json.loads(line)["action"] for line in audit.read_text().splitlines()] == ["ok"]


def enabling(config: Path, guardian: str, edit: str, interval: str = "1m") -> str:
    """What install.sh says after copying an example: how to enable it, once edited."""
    return (
        "install.sh: to enable it: edit it, see what it would do, then schedule it:\n"
        f"    {edit} {config}\n"
        f"    {guardian} check --dry-run --config {config}\n"
        f"    {guardian} install --interval {interval} --config {config}\n"
    )


def test_install_sh_system_install_copies_the_config_once(
    shared_install: SharedInstall, tmp_path: Path
) -> None:
    assert f"wrote the example config to {shared_install.config}" in shared_install.output
    assert shared_install.config.read_text() == (ETC / "guardian.toml").read_text()
    assert "install.sh: nothing is scheduled" in shared_install.output or (
        "install.sh: it loads as it is; nothing is scheduled yet." in shared_install.output
    )
    assert enabling(shared_install.config, shared_install.guardian, "sudoedit") in (
        shared_install.output  # stdout, then stderr (pip's warnings, if any)
    )
    # Every user can run it: that is what a crontab of another user needs.
    probe = subprocess.run(
        ["runuser", "-u", "nobody", "--", shared_install.guardian, "--version"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    # The operator makes it theirs; a rerun checks it, and never overwrites it.
    mine = example_here("guardian.toml", tmp_path).read_text()
    shared_install.config.write_text(mine.replace('timeout = "50s"', 'timeout = "40s"'))
    again = subprocess.run(
        ["sh", str(ETC.parent / "install.sh"), "--prefix", str(shared_install.prefix),
         "--config", str(shared_install.config), "--no-cron"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"keeping the existing {shared_install.config}" in again.stdout
    assert "nothing is scheduled" not in again.stdout
    assert 'timeout = "40s"' in shared_install.config.read_text()


def crontab_tripwire(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `crontab` only notes that it was called, and fails: an
    install.sh run as root by a test must never reach root's own crontab."""
    folder = tmp_path / "tripwire"
    folder.mkdir()
    called = folder / "called"
    crontab = folder / "crontab"
    crontab.write_text(f'#!/bin/sh\necho "crontab $*" >> {called}\nexit 1\n')
    crontab.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}, called


def test_install_sh_never_schedules_an_example_it_has_just_copied(
    shared_install: SharedInstall, tmp_path: Path
) -> None:
    env, called = crontab_tripwire(tmp_path)
    config = tmp_path / "etc" / "guardian.toml"
    done = subprocess.run(
        ["sh", str(ETC.parent / "install.sh"), "--prefix", str(shared_install.prefix),
         "--config", str(config), "--interval", "5m"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not called.exists(), called.read_text()  # no crontab touched, not even read
    assert config.read_text() == (ETC / "guardian.toml").read_text()
    if Path("/usr/bin/supervisord").exists():  # Debian's package is installed here
        assert "install.sh: it loads as it is; nothing is scheduled yet." in done.stdout
    else:
        assert "install.sh: nothing is scheduled: as it is, it does not load" in done.stdout
        assert "targets.supervisord.command: program /usr/bin/supervisord" in done.stdout
    assert done.stdout.endswith(enabling(config, shared_install.guardian, "sudoedit", "5m"))


def test_install_sh_refuses_a_bad_config(shared_install: SharedInstall, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[guardian]\ntimeout = 'soon'\n")
    result = subprocess.run(
        ["sh", str(ETC.parent / "install.sh"), "--prefix", str(shared_install.prefix),
         "--config", str(bad), "--no-cron"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "guardian.timeout: 'soon' is not a duration" in result.stderr
    assert f"install.sh: {bad} needs fixing" in result.stderr


def as_user(user: str, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True,
                          timeout=600, check=False, env=env)  # fmt: skip


def test_install_sh_for_a_user_without_root(
    system_user: str, shared_install: SharedInstall, shared_dir: Path, reaper: Reaper
) -> None:
    user = system_user
    # Its home, as the password database says: install.sh and guardian go by that, not by
    # $HOME or $XDG_*, which cron and a login shell need not agree on: here they point away.
    home = shared_dir / "home"
    src = home / "src" / "guardian"  # the user's own copy of the checkout: pip builds in it
    src.mkdir(parents=True)
    for name in ("install.sh", "pyproject.toml", "README.md"):
        shutil.copy(ETC.parent / name, src / name)
    for name in ("guardian", "etc"):
        shutil.copytree(ETC.parent / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    elsewhere = shared_dir / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["chown", "-R", user, str(home), str(elsewhere)], check=True)
    subprocess.run(["usermod", "--home", str(home), user], check=True)
    env = {**os.environ, "HOME": str(elsewhere), "XDG_CONFIG_HOME": str(elsewhere / "config"),
           "XDG_STATE_HOME": str(elsewhere / "state"), "PYTHON": "/usr/bin/python3",
           "EDITOR": "nano", "PATH": DEFAULT_PATH}  # fmt: skip
    env.pop("VISUAL", None)
    install_sh = ["sh", str(src / "install.sh"), "--prefix", str(home / "opt" / "guardian")]
    guardian = str(home / "opt" / "guardian" / "bin" / "guardian")
    config = home / ".config" / "guardian" / "guardian.toml"

    def crontab() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["crontab", "-u", user, "-l"], capture_output=True, text=True,
                              check=False)  # fmt: skip

    fresh = as_user(user, env, *install_sh)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert f"install.sh: wrote the example config to {config}" in fresh.stdout
    assert config.read_text() == user_example(home)
    assert (config.stat().st_uid, config.stat().st_mode & 0o777) == (
        pwd.getpwnam(user).pw_uid, 0o644)  # fmt: skip
    assert not (elsewhere / "config" / "guardian").exists()
    assert "/etc/guardian" not in fresh.stdout + fresh.stderr
    # No supervisord in its home yet: said, and nothing scheduled (no crontab at all).
    assert "install.sh: nothing is scheduled: as it is, it does not load" in fresh.stdout
    assert f"targets.supervisord.command: program {home}/.local/supervisor/bin" in fresh.stdout
    assert fresh.stdout.endswith(enabling(config, guardian, "nano"))
    assert f"no crontab for {user}" in crontab().stderr

    # Its supervisord, as the recipe's comments say (the virtualenv: the tests' own).
    (home / ".local").mkdir()
    (home / ".local" / "supervisor").symlink_to(shared_install.prefix)
    subprocess.run(["chown", "-h", user, str(home / ".local"), str(home / ".local" / "supervisor")],
                   check=True)  # fmt: skip
    text = config.read_text()
    mkdir = re.search(r"^#   (mkdir -p .*)$", text, re.MULTILINE)
    assert mkdir is not None
    assert as_user(user, env, "sh", "-c", mkdir[1]).returncode == 0
    block = text.split("(Debian's layout, in your home):\n#\n", 1)[1].split("\n#\n", 1)[0]
    supervisord_conf = home / ".config" / "supervisor" / "supervisord.conf"
    supervisord_conf.write_text("".join(f"{line[4:]}\n" for line in block.splitlines()))
    shutil.chown(supervisord_conf, user)

    # The commands install.sh printed, as the user.
    dry = as_user(user, env, guardian, "check", "--dry-run", "--config", str(config))
    assert dry.returncode == 1, dry.stderr
    assert "supervisord: would start:" in dry.stdout
    started = as_user(user, env, guardian, "check", "--config", str(config))
    pidfile = home / ".local" / "state" / "supervisor" / "supervisord.pid"
    if pidfile.exists():
        reaper.track(int(pidfile.read_text()))
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam(user).pw_uid
    ok = as_user(user, env, guardian, "check", "--config", str(config))
    assert (ok.returncode, ok.stderr) == (0, "")  # found, and its probe answered
    assert (home / ".local" / "state" / "guardian" / "audit.jsonl").is_file()

    # Now an existing config: checked, and scheduled in the user's own crontab.
    again = as_user(user, env, *install_sh, "--interval", "1d")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"keeping the existing {config}" in again.stdout
    (line,) = crontab().stdout.splitlines()
    assert line.startswith("@daily ")
    assert line.endswith(f"{guardian} check --config {config} # guardian: {config}")
    removed = as_user(user, env, guardian, "uninstall", "--config", str(config))
    assert removed.returncode == 0, removed.stderr
    assert f"no crontab for {user}" in crontab().stderr  # as before

    # An existing config naming a program that is not there: refused, nothing scheduled.
    bad = home / "bad.toml"
    bad.write_text('[targets.agent]\ncommand = ["~/nowhere/agent"]\n')
    refused = as_user(user, env, *install_sh, "--config", str(bad))
    assert refused.returncode == 1, refused.stdout
    assert f"targets.agent.command: program {home}/nowhere/agent" in refused.stderr
    assert f"install.sh: {bad} needs fixing" in refused.stderr
    assert f"no crontab for {user}" in crontab().stderr

    stopped = as_user(user, env, guardian, "stop", "supervisord", "--config", str(config))
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not alive(pid), what="supervisord to stop")


def test_readme_documents_every_audit_action() -> None:
    from guardian.audit import ACTIONS

    readme = (ETC.parent / "README.md").read_text()
    assert [a for a in ACTIONS if f"`{a}`" not in readme] == []

"""etc/ansible: the role, applied for real to this host (connection local), twice.

Everything it writes is under tmp_path: the virtualenv, the config, the state folder and
the cron file (which the cron daemon never reads: only /etc/crontab and /etc/cron.d).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from conftest import Reaper, alive

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "etc" / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core not installed")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the role writes a root:root config")

# The PLAY RECAP line for the one host.
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)  # fmt: skip


def ansible_env(tmp: Path) -> dict[str, str]:
    """No user's or checkout's ansible.cfg, temp folders in tmp, a UTF-8 locale."""
    config = tmp / "ansible.cfg"
    config.touch()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def playbook(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLAYBOOK), *args],
        env=ansible_env(tmp),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_site_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    result = playbook(
        tmp_path, "--syntax-check", "-i", str(ANSIBLE / "inventory" / "hosts.yml"),
        str(ANSIBLE / "site.yml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: " in result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """guardian's wheel, built once from a copy of the checkout (a build in the checkout
    itself would leave build/ there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "guardian", source / "guardian",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", str(tmp / "dist"), str(source)],
        check=True, timeout=300,
    )  # fmt: skip
    (built,) = (tmp / "dist").glob("guardian-*.whl")
    return built


def host_python() -> str:
    """The host's python3, as the role's default; else this one (a venv makes venvs too)."""
    system = Path("/usr/bin/python3")
    usable = system.exists() and subprocess.run(
        [str(system), "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"],
        check=False,
    )  # fmt: skip
    return str(system) if usable and usable.returncode == 0 else sys.executable


# Strings a template could get wrong: quotes, backslashes, a '#', a tab, a newline, '%'
# and characters beyond ASCII, one beyond the BMP.
TRICKY = ['say "hi"', "back\\slash", "# not a comment", "tab\there", "two\nlines", "50%",
          "ünïcødé ☃ 😀", "'single'"]  # fmt: skip


def on_this_host(venv: Path, wheel: Path, config: Path) -> dict[str, Any]:
    """The role's variables for a run on this machine: the wheel, into ``venv``."""
    return {
        "guardian_hosts": "localhost",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
        "guardian_python": host_python(),
        "guardian_venv": str(venv),
        "guardian_package": str(wheel),
        "guardian_system_packages": [],
        "guardian_config": str(config),
    }


class Recap(NamedTuple):
    """What ansible-playbook did, from its PLAY RECAP line, and all it said."""

    changed: int
    unreachable: int
    failed: int
    out: str


def apply(tmp: Path, variables: dict[str, Any], *args: str) -> Recap:
    """Apply site.yml to localhost with ``variables``."""
    path = tmp / "vars.json"
    path.write_text(json.dumps(variables))
    result = playbook(tmp, "-i", "localhost,", "-c", "local", "-e", f"@{path}",
                      str(ANSIBLE / "site.yml"), *args)  # fmt: skip
    out = result.stdout + result.stderr
    recap = RECAP.search(result.stdout)
    assert recap is not None, out
    _, changed, unreachable, failed = (int(n) for n in recap.groups())
    return Recap(changed, unreachable, failed, out)


@root_only
def test_the_role_installs_guardian_and_a_second_run_changes_nothing(
    tmp_path: Path, wheel: Path, reaper: Reaper
) -> None:
    venv, state = tmp_path / "venv", tmp_path / "state"
    config, cron_file = tmp_path / "etc" / "guardian.toml", tmp_path / "cron.d" / "guardian"
    textfile = tmp_path / "textfile"  # node_exporter's collector folder: guardian makes none
    textfile.mkdir()
    sleep, echo = shutil.which("sleep"), shutil.which("echo")
    assert sleep is not None
    assert echo is not None
    targets = {
        "sleep.er": {  # a dotted name: a quoted key in TOML, not a nested table
            "command": [sleep, "300.017"],  # its own: never a bystander's sleep 300
            "start_grace": "0.2s",
            "env": {"PATH": "/usr/bin:/bin", "ODD.NAME": TRICKY[0]},
            "on_failure": [echo, *TRICKY],
            "restart": {"burst": 3, "window": "5m"},
        }
    }
    variables: dict[str, Any] = {
        **on_this_host(venv, wheel, config),
        "guardian_cron_file": str(cron_file),
        "guardian_settings": {"state_dir": str(state), "timeout": "20s", "audit_keep": 3},
        "guardian_metrics_file": str(textfile / "guardian.prom"),
        "guardian_targets": targets,
    }
    cron_file.parent.mkdir()

    first = apply(tmp_path, variables)
    assert (first.unreachable, first.failed) == (0, 0), first.out
    # the virtualenv, its pip, guardian, the config's folder, the config (staged, then put
    # in place), the cron line
    assert first.changed == 7, first.out
    assert "sleep.er: would start" in first.out  # the handler's smoke: check --dry-run

    second = apply(tmp_path, variables)
    assert (second.changed, second.unreachable, second.failed) == (0, 0, 0), second.out
    # Check mode agrees: no phantom change (the pip module alone cannot tell a wheel path
    # is installed).
    checked = apply(tmp_path, variables, "--check", "--diff")
    assert (checked.changed, checked.failed) == (0, 0), checked.out

    # The config: root's, not writable by others, and the values exactly as given.
    st = config.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o644)
    data = tomllib.loads(config.read_text())
    assert data["guardian"] == {
        "state_dir": str(state), "timeout": "20s", "audit_keep": 3,
        "metrics_file": str(textfile / "guardian.prom"),
    }  # fmt: skip
    assert data["targets"] == targets

    # The cron line, as guardian's installer writes it, and only it.
    guardian = venv / "bin" / "guardian"
    line = f"* * * * * root {guardian} check --config {config} # guardian: {config}"
    assert [x for x in cron_file.read_text().splitlines() if not x.startswith("#")] == [line]

    # And guardian, with that config, really keeps the target.
    run = subprocess.run([str(guardian), "check", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    pid = int((state / "pids" / "sleep.er.pid").read_text())
    reaper.track(pid)
    assert run.returncode == 0, run.stderr
    assert "sleep.er: started" in run.stderr
    assert alive(pid)
    again = subprocess.run([str(guardian), "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")

    # A config guardian would refuse is never put in place, nor the line changed.
    before = config.read_bytes(), cron_file.read_bytes()
    missing = str(tmp_path / "no-such-program")
    broken = {**variables, "guardian_interval": "2m",
              "guardian_targets": {"gone": {"command": [missing]}}}  # fmt: skip
    refused = apply(tmp_path, broken)
    assert refused.failed == 1, refused.out
    assert "failed to validate" in refused.out
    assert "no-such-program: No such file or directory" in refused.out
    assert (config.read_bytes(), cron_file.read_bytes()) == before

    # absent: guardian's line goes (and its cron file, which held nothing else); once.
    gone = {**variables, "guardian_state": "absent"}
    removed = apply(tmp_path, gone)
    assert (removed.changed, removed.failed) == (1, 0), removed.out
    assert not cron_file.exists()
    removed_again = apply(tmp_path, gone)
    assert (removed_again.changed, removed_again.failed) == (0, 0), removed_again.out


def test_the_template_writes_any_string_and_key_as_toml_reads_them(tmp_path: Path) -> None:
    # U+007F, which TOML forbids raw in a string; a key that ends in a newline (which a
    # regex's "$" would take for a bare key); every control character; quotes.
    odd = "".join(map(chr, range(32))) + '\x7f"\\'
    settings = {"state_dir": "/var/lib/guardian", "del\x7fkey": "a\x7fb", "all": odd}
    targets = {"t": {"command": ["/bin/true", odd], "env": {"TRAILING\n": "v\x7f",
                                                           "ok": "1"}}}  # fmt: skip
    variables = {"guardian_settings": settings, "guardian_targets": targets,
                 "guardian_metrics_file": "", "guardian_ping_url": "",
                 "guardian_venv": "/opt/guardian", "guardian_config": "/etc/g.toml"}  # fmt: skip
    path = tmp_path / "vars.json"
    path.write_text(json.dumps(variables))
    out = tmp_path / "guardian.toml"
    template = ANSIBLE / "roles" / "guardian" / "templates" / "guardian.toml.j2"
    result = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{path}",
         "-m", "ansible.builtin.template", "-a", f"src={template} dest={out}"],
        env=ansible_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    data = tomllib.loads(out.read_text())
    assert data["guardian"] == settings
    assert data["targets"] == targets


@root_only
def test_the_role_installs_into_a_users_crontab_and_takes_it_away(
    system_user: str, shared_dir: Path, tmp_path: Path, wheel: Path, reaper: Reaper
) -> None:
    """guardian_cron_file "" and guardian_cron_user: the line goes into that user's crontab
    (crontab -u, checked by guardian as that user), a second run and --check change nothing,
    and absent leaves the user without a crontab, as before."""
    venv, state = shared_dir / "venv", shared_dir / "state"
    config = shared_dir / "etc" / "guardian.toml"
    state.mkdir()
    shutil.chown(state, system_user)  # the folder the user's guardian writes, as the docs say
    sleep = shutil.which("sleep")
    assert sleep is not None
    variables: dict[str, Any] = {
        **on_this_host(venv, wheel, config),
        "guardian_cron_file": "",
        "guardian_cron_user": system_user,
        "guardian_settings": {"state_dir": str(state), "timeout": "20s"},
        # Short-lived: should cron run the line as the user while the test has it installed,
        # what it started ends by itself (the user is removed after the test).
        "guardian_targets": {"nap": {"command": [sleep, "2"], "start_grace": "0.1s"}},
    }

    def crontab() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["crontab", "-l", "-u", system_user], capture_output=True,
                              text=True, check=False)  # fmt: skip

    assert crontab().returncode != 0  # a new user has none
    try:
        first = apply(tmp_path, variables)
        assert (first.unreachable, first.failed) == (0, 0), first.out
        # the virtualenv, its pip, guardian, the config's folder, the config (staged, then
        # put in place), the cron line
        assert first.changed == 7, first.out
        assert "nap: would start" in first.out  # the handler's smoke, run as the user
        guardian = venv / "bin" / "guardian"
        line = f"* * * * * {guardian} check --config {config} # guardian: {config}"
        assert line in crontab().stdout.splitlines()

        second = apply(tmp_path, variables)
        assert (second.changed, second.failed) == (0, 0), second.out
        checked = apply(tmp_path, variables, "--check", "--diff")
        assert (checked.changed, checked.failed) == (0, 0), checked.out

        # What cron will run, run as the user: it keeps the target.
        run = subprocess.run(["runuser", "-u", system_user, "--", str(guardian), "check",
                              "--config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "nap: started" in run.stderr

        gone = {**variables, "guardian_state": "absent"}
        removed = apply(tmp_path, gone)
        assert (removed.changed, removed.failed) == (1, 0), removed.out
        assert crontab().returncode != 0  # guardian made it, and it held nothing else
    finally:
        subprocess.run(["crontab", "-r", "-u", system_user], capture_output=True, check=False)

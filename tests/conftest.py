"""Real processes, real pidfiles, real locks: the fixtures every test shares."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guardian.discovery import Found, Matcher, scan
from guardian.proc import stat as proc_stat

AGENT = Path(__file__).parent / "targets" / "agent.py"


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "it") -> Any:
    """Poll until ``predicate`` returns something true; fail the test after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


class Reaper:
    """Every process a test starts, or learns that guardian started, ended by pid at teardown.

    A pid is remembered with its start time, so a pid reused since is never hit.
    """

    def __init__(self) -> None:
        self.procs: dict[int, int] = {}
        self.children: list[subprocess.Popen[bytes]] = []

    def track(self, pid: int | None) -> None:
        if pid is None:
            return
        stat = proc_stat(pid)
        if stat is not None:
            self.procs.setdefault(pid, stat.start_ticks)

    def kill_all(self) -> None:
        for pid, ticks in self.procs.items():
            stat = proc_stat(pid)
            if stat is None or stat.start_ticks != ticks:
                continue
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) == pid:  # a target leads its own group: end what it started too
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
        for child in self.children:  # the test's own children: reap them too
            child.wait()


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    yield r
    r.kill_all()


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings and lists of strings: JSON's syntax is TOML's


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """``path`` flocked by a stranger (this process): read access is all that takes."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_config(
    path: Path, guardian: dict[str, object], targets: dict[str, dict[str, object]]
) -> Path:
    lines = ["[guardian]"] + [f"{k} = {toml_value(v)}" for k, v in guardian.items()]
    for name, fields in targets.items():
        lines += ["", f"[targets.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float


class Guardian:
    """One test's guardian: its config, its target, its runs, its audit log."""

    def __init__(self, tmp_path: Path, reaper: Reaper) -> None:
        self.tmp = tmp_path
        self.reaper = reaper
        self.state = tmp_path / "state"
        self.pidfile = tmp_path / "agent.pid"
        self.config_path = tmp_path / "guardian.toml"
        self.command: list[str] = []
        self.configure()

    def agent(self, *extra: str) -> list[str]:
        return [sys.executable, str(AGENT), "--tag", str(self.tmp), *extra]

    def configure(
        self, *extra: str, guardian: dict[str, object] | None = None, **target: object
    ) -> Path:
        self.command = list(target.pop("command", self.agent(*extra)))  # type: ignore[call-overload]
        fields: dict[str, object] = {
            "command": self.command,
            "pidfile": str(self.pidfile),
            "start_grace": "0.3s",
            "start_timeout": "10s",
            **target,
        }
        settings = {"state_dir": str(self.state), "timeout": "30s", **(guardian or {})}
        return write_config(self.config_path, settings, {"agent": fields})

    def run(
        self, *args: str, timeout: float = 60, wrap: tuple[str, ...] = (), **popen: Any
    ) -> Result:
        """guardian with ``args`` and this config (``wrap``: argv to run it under)."""
        began = time.monotonic()
        proc = subprocess.run(
            [*wrap, sys.executable, "-m", "guardian", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **popen,
        )
        self.track()
        return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - began)

    def check(self, *args: str, **kwargs: Any) -> Result:
        return self.run("check", *args, **kwargs)

    def track(self) -> None:
        """Hand whatever runs with the target's command line to the reaper."""
        for found in self.matches():
            self.reaper.track(found.pid)

    def matches(self) -> list[Found]:
        return scan(Matcher(tuple(self.command)))

    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "audit.jsonl"
        if not path.is_file():  # missing, or something planted (a FIFO would hang the test)
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def actions(self) -> list[str]:
        return [r["action"] for r in self.audit()]

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start a process of the test's own (tracked for teardown)."""
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **popen)
        self.reaper.track(proc.pid)
        self.reaper.children.append(proc)
        return proc


@pytest.fixture
def g(tmp_path: Path, reaper: Reaper) -> Guardian:
    return Guardian(tmp_path, reaper)


@pytest.fixture
def cron_d(tmp_path: Path) -> tuple[str, ...]:
    """argv that runs a command with a folder of the test's own as /etc/cron.d, in a
    mount namespace of its own: guardian sees a cron file cron would read, and the
    host's cron daemon (outside it) never sees, let alone runs, it."""
    if not Path("/etc/cron.d").is_dir():
        pytest.skip("needs /etc/cron.d (Debian's cron package)")
    folder = tmp_path / "cron.d"
    folder.mkdir()
    wrap = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/cron.d && exec "$@"', str(folder))  # fmt: skip
    probe = subprocess.run([*wrap, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    return wrap


@pytest.fixture
def system_user() -> Iterator[str]:
    """A throwaway system user, created for the test and removed after it."""
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    name = f"gt{os.getpid() % 100000}x{time.monotonic_ns() % 10000}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True,
    )  # fmt: skip
    try:
        yield name
    finally:
        # userdel leaves the user's crontab in cron's spool: remove it first.
        subprocess.run(["crontab", "-r", "-u", name], capture_output=True, check=False)
        # The real cron daemon runs during the suite (.ci/run starts it): a test that put a
        # line in this user's crontab can straddle a minute, and cron then runs that line as
        # the user. Wait for such a run to end (bounded) rather than fail userdel on it.
        uid = _uid_of(name)
        wait_for(lambda: not _live_processes_of(uid), timeout=90,
                 what=f"the processes of {name} to end")  # fmt: skip
        # A user left behind (its processes still running) fails loudly above. Request this
        # fixture before `reaper` (or `g`), so their processes end first. Only zombies may
        # remain (where pid 1 reaps nothing, an orphan's end is one): -f lets the user go.
        if subprocess.run(["userdel", name], check=False).returncode != 0:
            subprocess.run(["userdel", "-f", name], check=True)


def _uid_of(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _live_processes_of(uid: int) -> list[int]:
    """Pids of processes (zombies aside) whose real or effective uid is ``uid``."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = fields.get("Uid", "").split()
        if str(uid) in uids[:2] and not fields.get("State", "").strip().startswith("Z"):
            live.append(int(entry.name))
    return live


@contextlib.contextmanager
def effective_uid(uid: int) -> Iterator[None]:
    """The block as ``uid`` (the effective user only: root comes back after it)."""
    if os.geteuid() != 0:
        pytest.skip("changing user needs root")
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` of the test's own at ``folder``/disk, unmounted after (a disk
    that really fills up); the test is skipped where mounting is not allowed."""
    mount = folder / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user can read (pytest's own tmp_path is root's alone, mode 0700)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="guardian-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


ROOT = Path(__file__).parent.parent


@dataclass
class SharedInstall:
    """A system install by install.sh, from /usr/bin/python3, that every user can run."""

    folder: Path
    prefix: Path
    config: Path
    output: str

    @property
    def guardian(self) -> str:
        return str(self.prefix / "bin" / "guardian")


@pytest.fixture(scope="session")
def shared_install() -> Iterator[SharedInstall]:
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("a system install for other users needs root")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3")
    folder = Path(tempfile.mkdtemp(prefix="guardian-install-"))
    folder.chmod(0o755)
    prefix, config = folder / "opt", folder / "etc" / "guardian.toml"
    try:
        done = subprocess.run(
            ["sh", str(ROOT / "install.sh"), "--prefix", str(prefix), "--config", str(config),
             "--no-cron"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        # supervisor for the tests' supervisord, in the same virtualenv
        subprocess.run(
            [str(prefix / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "supervisor"],
            check=True, timeout=600,
        )  # fmt: skip
        yield SharedInstall(folder, prefix, config, done.stdout + done.stderr)
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="session")
def cron_daemon() -> Iterator[int]:
    """The pid of a running cron daemon; started here (and stopped after) if none runs."""
    if not Path("/usr/sbin/cron").exists():
        pytest.skip("needs Debian's cron package (.ci/run installs it)")

    def running() -> int | None:
        try:
            pid = int(Path("/run/crond.pid").read_text())
        except (OSError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        return pid if cmdline.exists() and b"cron" in cmdline.read_bytes() else None

    pid = running()
    if pid is not None:
        yield pid
        return
    subprocess.run(["/usr/sbin/cron"], check=True)  # daemonizes, and writes /run/crond.pid
    pid = wait_for(running, what="cron to start")
    ticks = proc_stat(pid)
    try:
        yield pid
    finally:
        stat = proc_stat(pid)
        if stat is not None and ticks is not None and stat.start_ticks == ticks.start_ticks:
            os.kill(pid, signal.SIGTERM)


def write_supervisord_conf(
    conf: Path,
    run_dir: Path,
    *,
    programs: dict[str, list[str]] | None = None,
    http_port: int | None = None,
) -> Path:
    """A supervisord config whose socket, log and pidfile live in ``run_dir``."""
    text = (
        f"[unix_http_server]\nfile={run_dir}/s.sock\n"
        f"[supervisord]\nlogfile={run_dir}/supervisord.log\npidfile={run_dir}/supervisord.pid\n"
        f"childlogdir={run_dir}\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{run_dir}/s.sock\n"
    )
    if http_port is not None:
        text += f"[inet_http_server]\nport=127.0.0.1:{http_port}\n"
    for name, argv in (programs or {}).items():
        text += f"[program:{name}]\ncommand={' '.join(argv)}\n"
    conf.write_text(text)
    return conf


@pytest.fixture
def cc(tmp_path: Path) -> Callable[[str, str], Path]:
    """Build a small C program of the test's own (a target that Python cannot be)."""
    import shutil

    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("needs a C compiler")

    def build(name: str, source: str) -> Path:
        src = tmp_path / f"{name}.c"
        src.write_text(source)
        out = tmp_path / name
        subprocess.run([compiler, "-pthread", "-o", str(out), str(src)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        return out

    return build


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every process a test starts carries its tmp_path in its argv: none may outlive the
    session (each is ended by its pid in a finalizer; this only says when one was not)."""
    base = str(tmp_path_factory.getbasetemp())
    yield

    def left() -> list[str]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if base in argv and alive(int(entry)):
                found.append(f"{entry}: {argv.replace(chr(0), ' ')[:200]}")
        return found

    deadline = time.monotonic() + 5
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    leaks = left()
    assert not leaks, "processes the tests left running:\n" + "\n".join(leaks)

"""TOML to frozen dataclasses.

Every problem becomes one ``ConfigError`` line that names the file, the key and
what is wrong, so that cron mails an operator something they can act on.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from guardian.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/guardian/guardian.toml")
DEFAULT_STATE_DIR = "/var/lib/guardian"
# cron's environment is nearly empty; targets get this PATH unless their env sets one.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP = 'a number of seconds or a string such as "500ms", "30s", "5m", "1h", "7d"'
# A config is a page of text; anything this large is a mistake (or a disk image).
MAX_CONFIG_BYTES = 1024 * 1024


def _home(uid: int | None = None) -> Path:
    """The home of user ``uid`` (guardian's own by default), from the password database.

    Not ``$HOME`` nor ``$XDG_*``: cron sets the first and none of the second,
    and a run from a login shell (or ``sudo -E``) must use the very files the
    cron run uses (two lock folders would let two runs start two copies).
    """
    return Path(pwd.getpwuid(os.geteuid() if uid is None else uid).pw_dir)


def _expand_home(value: str, uid: int | None) -> str:
    """``~`` and ``~/...`` as the home of ``uid`` (never ``$HOME``); ``~name/...`` as name's."""
    if not value.startswith("~"):
        return value
    name, sep, rest = value[1:].partition("/")
    try:
        home = str(_home(uid)) if not name else pwd.getpwnam(name).pw_dir
    except KeyError:
        return value  # no such user: a folder called "~name", as the shell would leave it
    return home + sep + rest


def default_config() -> Path:
    """Root's config lives in /etc; any other user's in ``~/.config/guardian`` (XDG's place)."""
    if os.geteuid() == 0:
        return DEFAULT_CONFIG
    return _home() / ".config" / "guardian" / "guardian.toml"


def default_state_dir(uid: int | None = None) -> str:
    """Root's state in /var/lib; any other user's in ``~/.local/state/guardian`` (XDG's place).

    ``uid``: the user guardian runs as (its own, by default).
    """
    if (os.geteuid() if uid is None else uid) == 0:
        return DEFAULT_STATE_DIR
    return str(_home(uid) / ".local" / "state" / "guardian")


def own_identity() -> dict[str, str]:
    """``HOME``, ``USER`` and ``LOGNAME`` of guardian's own user (what a login would set)."""
    pw = pwd.getpwuid(os.geteuid())
    return {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"`` or ``"1d"``.

    Raises ValueError with a message fit to follow a key name.
    """
    if isinstance(value, bool):  # TOML true is an int to Python; never a duration
        # One error type (ValueError) for every bad value, as callers expect: TRY004 waived.
        raise ValueError(f"{value!r} is not a duration ({DURATION_HELP})")  # noqa: TRY004
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m[1]) * _UNITS[m[2] or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration ({DURATION_HELP})")
    if not 0 <= seconds < 10 * 365 * 86400:  # also rejects nan and inf
        raise ValueError(f"{value!r} is out of range (0 up to 10 years)")
    return seconds


class Settings(NamedTuple):
    state_dir: Path
    audit_log: Path
    timeout: float
    # check --watch: how long a run keeps watching after its check (None: it does not)
    watch: float | None = None
    # Prometheus's textfile collector reads this; rewritten after every run (None: none)
    metrics_file: Path | None = None
    # The dead-man ping, healthchecks.io's convention: URL, URL/fail, URL/start (None: none)
    ping_url: str | None = None
    ping_timeout: float = 3.0  # each ping's limit (at most PING_TIMEOUT_MAX)
    ping_start: bool = False  # also URL/start when a run begins
    # Built-in rotation of the audit log (0: none, logrotate's job): past this size the
    # log becomes audit.jsonl.1, the older ones .2.gz ... .<keep>.gz
    audit_max_bytes: int = 0
    audit_keep: int = 5

    @property
    def lock_dir(self) -> Path:
        return self.state_dir / "locks"


# A ping is a few bytes to a server that answers at once; one that takes longer must
# not hold a run (and so the next restart) up.
PING_TIMEOUT_MAX = 10.0
# The smallest audit_max_bytes: a few hundred records (a smaller one would rotate every run).
AUDIT_MIN_BYTES = 64 << 10
_SIZE = re.compile(r"(\d+)\s*(|k|K|M|G|KiB|MiB|GiB|kB|KB|MB|GB)")
_SIZE_UNITS = {"": 1, "k": 1024, "K": 1024, "KiB": 1024, "kB": 1024, "KB": 1024,
               "M": 1 << 20, "MiB": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30,
               "GB": 1 << 30}  # fmt: skip


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512K"``, ``"10M"`` or ``"1G"`` (powers of 1024).

    Raises ValueError with a message fit to follow a key name.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = int(m[1]) * _SIZE_UNITS[m[2]]
    else:
        raise ValueError(f'{value!r} is not a size (a number of bytes, or "512K", "10M", "1G")')
    if not 0 <= size < 1 << 50:
        raise ValueError(f"{value!r} is out of range")
    return size


class Restart(NamedTuple):
    """Crash-loop policy (as systemd's StartLimitBurst and RestartSec, but re-arming)."""

    burst: int = 5
    window: float = 600.0
    backoff: float = 10.0
    max_backoff: float = 300.0
    min_uptime: float = 60.0


class Health(NamedTuple):
    """Probes for a target that is alive but maybe hung; any combination."""

    heartbeat_file: Path | None = None
    max_age: float = 30.0
    tcp: tuple[str, int] | None = None
    http: str | None = None
    unix: Path | None = None
    command: tuple[str, ...] | None = None
    timeout: float = 5.0
    failures: int = 3
    interval: float = 10.0  # how often a watcher probes it (a cron run probes once a run)

    @property
    def any(self) -> bool:
        probes = (self.heartbeat_file, self.tcp, self.http, self.unix, self.command)
        return any(p is not None for p in probes)


class Hooks(NamedTuple):
    on_start: tuple[str, ...] | None = None
    on_failure: tuple[str, ...] | None = None
    on_give_up: tuple[str, ...] | None = None
    timeout: float = 10.0


class Target(NamedTuple):
    name: str
    command: tuple[str, ...]
    pidfile: Path
    daemonizes: bool
    match: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    user: str | None
    output: Path
    start_timeout: float
    start_grace: float
    group: str | None = None
    stop_signal: int = 15
    stop_timeout: float = 10.0
    orphans: str = "kill"
    restart: Restart = Restart()
    health: Health = Health()
    hooks: Hooks = Hooks()
    # Programs it names that cannot be run, as (key, the config error), when the loader
    # was asked to keep them rather than refuse the config: one target's missing program
    # must not stop every other target from being checked.
    problems: tuple[tuple[str, str], ...] = ()


class Config(NamedTuple):
    path: Path
    settings: Settings
    targets: tuple[Target, ...]

    def select(self, names: tuple[str, ...] | list[str]) -> tuple[Target, ...]:
        """The targets named (all when none are), in config order; unknown names are an error."""
        known = {t.name for t in self.targets}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"{self.path}: no target named {unknown[0]!r} (targets: {', '.join(sorted(known))})"
            )
        return tuple(t for t in self.targets if not names or t.name in names)


class _Table:
    """One TOML table being read: typed getters, and every unused key is an error."""

    def __init__(
        self,
        path: Path,
        where: str,
        data: Mapping[str, Any],
        runner: int | None = None,
        deferred: list[tuple[str, str]] | None = None,
    ) -> None:
        self.path = path
        self.where = where
        self.data = data
        self.runner = runner  # whose home ``~`` is: the user guardian runs as
        # Problems that are the target's own (a program gone): kept here, not raised.
        self.deferred = deferred
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        dotted = f"{self.where}.{key}" if self.where else key
        return ConfigError(f"{self.path}: {dotted}: {problem}")

    def no_nul(self, key: str, value: str) -> str:
        """``value``, which guardian will hand to the OS, where a NUL byte cannot go.

        exec, open and getpwnam raise ValueError on one: caught here, at load,
        it is a config error, rather than a start that fails at run time.
        """
        if "\0" in value:
            raise self.error(key, f"{value!r} contains a NUL byte")
        return value

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(key, f"expected {_KIND_NAMES[kind]}, got {_describe(value)}")
        return value

    def duration(self, key: str, default: str, *, positive: bool = False) -> float:
        self.used.add(key)
        try:
            seconds = parse_duration(self.data.get(key, default))
        except ValueError as e:
            raise self.error(key, str(e)) from None
        if positive and seconds <= 0:
            raise self.error(key, "must be more than 0")
        return seconds

    def path_value(self, key: str, default: str | None = None) -> Path | None:
        value = self.get(key, str, default)
        if value is None:
            return None
        if not value:
            raise self.error(key, "must not be empty")
        return _resolve(self.path.parent, self.no_nul(key, value), self.runner)

    def string_list(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key, list)
        if value is None:
            return None
        if not value:
            raise self.error(key, "must not be empty")
        if not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        if not value[0]:
            raise self.error(key, "the program (first item) must not be empty")
        return tuple(self.no_nul(key, v) for v in value)

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return int(value)

    def table(self, key: str) -> _Table:
        return _Table(self.path, f"{self.where}.{key}", self.get(key, dict, {}), self.runner,
                      self.deferred)  # fmt: skip

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise self.error(key, "unknown key")


_KIND_NAMES = {
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "a table",
    int: "a whole number",
}


def _describe(value: object) -> str:
    kind = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list"}
    return f"{kind.get(type(value), 'table' if isinstance(value, dict) else 'value')} {value!r}"


def _resolve(base: Path, value: str, runner: int | None) -> Path:
    # Lexical only (abspath, not resolve): a virtualenv's python is a symlink
    # that must be executed by its own path.
    return Path(os.path.abspath(base / _expand_home(value, runner)))


def which(program: str, path_env: str) -> str | None:
    """The executable file ``program`` names on ``path_env``, as execvp would find it.

    Except in a folder that is not absolute (an empty element means ``.`` to execvp):
    what a config means must not depend on the folder guardian was started from.
    """
    for folder in path_env.split(os.pathsep):
        if not os.path.isabs(folder):
            continue
        candidate = os.path.join(folder, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _program(
    table: _Table, key: str, argv: tuple[str, ...], path_env: str, *, must_exist: bool
) -> tuple[str, ...]:
    """argv with argv[0] made absolute: paths against the config's folder, bare names on PATH.

    ``must_exist``: a program that is not there or cannot be executed is a config error
    now, not a failed start every minute.
    """
    program = argv[0]
    if "/" not in program:
        found = which(program, path_env)
        if found is None:
            raise table.error(key, f"program {program!r} not found on PATH {path_env}")
        return (found, *argv[1:])
    path = str(_resolve(table.path.parent, program, table.runner))
    problem = _unusable(path) if must_exist else None
    if problem is not None:
        error = table.error(key, problem)
        if table.deferred is None:
            raise error
        table.deferred.append((f"{table.where}.{key}", str(error)))
    return (path, *argv[1:])


def _unusable(path: str) -> str | None:
    """Why the program at ``path`` cannot be run, or None."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"program {path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"program {path} is not a file"
    if not os.access(path, os.X_OK):
        return f"program {path} is not executable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _target(
    path: Path,
    name: str,
    data: object,
    settings: Settings,
    *,
    acting: bool,
    starting: bool,
    runner: int | None,
    defer: bool,
) -> Target:
    where = f"targets.{name}"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{path}: {where}: a target name is 1 to 64 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where}: expected a table, got {_describe(data)}")
    deferred: list[tuple[str, str]] | None = [] if defer else None
    t = _Table(path, where, data, runner, deferred)

    env = dict(t.get("env", dict, {}))
    for key, value in env.items():
        if "\0" in key:  # said at `env`: a NUL in a key would end up in the message too
            raise t.error("env", f"the name {key!r} contains a NUL byte")
        env_key = f"env.{key}"
        if not key or "=" in key:  # exec would refuse it (or split it somewhere else)
            raise t.error(env_key, f"{key!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise t.error(env_key, f"expected a string, got {_describe(value)}")
        t.no_nul(env_key, value)
    env.setdefault("PATH", DEFAULT_PATH)

    raw_command = t.string_list("command")
    if raw_command is None:
        raise t.error("command", "is required (a list: the program and its arguments)")
    command = _program(t, "command", raw_command, env["PATH"], must_exist=starting)
    raw_match = t.string_list("match")
    match = (
        command
        if raw_match is None
        else _program(t, "match", raw_match, env["PATH"], must_exist=starting)
    )

    daemonizes = t.get("daemonizes", bool, False)
    pidfile = t.path_value("pidfile")
    if pidfile is None:
        if daemonizes:
            raise t.error("pidfile", "is required when daemonizes = true (the target writes it)")
        pidfile = settings.state_dir / "pids" / f"{name}.pid"

    user = _user(t, acting=acting)
    group = _group(t, acting=acting)
    orphans = t.get("orphans", str, "kill")
    if orphans not in ("kill", "keep"):
        raise t.error("orphans", f'{orphans!r}: use "kill" or "keep"')

    target = Target(
        name=name,
        command=command,
        pidfile=pidfile,
        daemonizes=daemonizes,
        match=match,
        cwd=t.path_value("cwd", "/") or Path("/"),
        env=env,
        user=user,
        output=t.path_value("output") or settings.state_dir / f"{name}.out",
        start_timeout=t.duration("start_timeout", "30s", positive=True),
        start_grace=t.duration("start_grace", "1s"),
        group=group,
        stop_signal=_signal(t, "stop_signal"),
        stop_timeout=t.duration("stop_timeout", "10s"),
        orphans=orphans,
        restart=_restart(t.table("restart")),
        health=_health(t.table("health"), env["PATH"], must_exist=starting),
        hooks=Hooks(
            on_start=_hook(t, "on_start", env["PATH"], must_exist=starting),
            on_failure=_hook(t, "on_failure", env["PATH"], must_exist=starting),
            on_give_up=_hook(t, "on_give_up", env["PATH"], must_exist=starting),
            timeout=t.duration("hook_timeout", "10s", positive=True),
        ),
    )
    t.finish()
    return target._replace(problems=tuple(deferred or ()))


def _user(t: _Table, *, acting: bool) -> str | None:
    """A user that must exist on this host (looked up once, at load).

    Acting (checking, starting, stopping), guardian must be able to become
    that user: unless it is guardian's own, only root can. Found here, that
    is a config error, not a start failure counted toward a crash loop.
    """
    name: str | None = t.get("user", str)
    if name is None:
        return None
    try:
        uid = pwd.getpwnam(t.no_nul("user", name)).pw_uid
    except KeyError:
        raise t.error("user", f"no such user {name!r}") from None
    if acting and uid != os.geteuid() and os.geteuid() != 0:
        raise t.error("user", f"{name!r} is not guardian's own user "
                      f"({_user_name(os.geteuid())}): running the target as another user "
                      "needs guardian to run as root")  # fmt: skip
    return name


def _group(t: _Table, *, acting: bool) -> str | None:
    """A group that must exist on this host; as ``_user``, another one needs root."""
    name: str | None = t.get("group", str)
    if name is None:
        return None
    try:
        gid = grp.getgrnam(t.no_nul("group", name)).gr_gid
    except KeyError:
        raise t.error("group", f"no such group {name!r}") from None
    if acting and gid != os.getegid() and os.geteuid() != 0:
        raise t.error("group", f"{name!r} is not guardian's own group (gid "
                      f"{os.getegid()}): running the target with another group needs "
                      "guardian to run as root")  # fmt: skip
    return name


def _signal(t: _Table, key: str) -> int:
    value = t.get(key, str, "SIGTERM")
    name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
    number = getattr(signal, name, None)
    if not isinstance(number, signal.Signals) or name.startswith("SIG_"):
        raise t.error(key, f"{value!r} is not a signal name (such as SIGTERM, SIGINT, SIGQUIT)")
    return int(number)


def _hook(t: _Table, key: str, path_env: str, *, must_exist: bool) -> tuple[str, ...] | None:
    argv = t.string_list(key)
    return None if argv is None else _program(t, key, argv, path_env, must_exist=must_exist)


def _restart(t: _Table) -> Restart:
    restart = Restart(
        burst=t.integer("burst", 5, minimum=1),
        window=t.duration("window", "10m", positive=True),
        backoff=t.duration("backoff", "10s"),
        max_backoff=t.duration("max_backoff", "5m"),
        min_uptime=t.duration("min_uptime", "1m"),
    )
    t.finish()
    return restart


def _address(t: _Table, key: str) -> tuple[str, int] | None:
    value = t.get(key, str)
    if value is None:
        return None
    host, _, port = t.no_nul(key, value).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise t.error(key, f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _audit_size(t: _Table) -> int:
    t.used.add("audit_max_bytes")
    try:
        size = parse_size(t.data.get("audit_max_bytes", 0))
    except ValueError as e:
        raise t.error("audit_max_bytes", str(e)) from None
    if 0 < size < AUDIT_MIN_BYTES:
        raise t.error("audit_max_bytes", f"must be 0 (no rotation) or at least "
                      f"{AUDIT_MIN_BYTES // 1024}K")  # fmt: skip
    return size


def _url(t: _Table, key: str, what: str = "the probe") -> str | None:
    """An http:// or https:// URL a probe or a ping can use as it is: checked here, not
    at run time.

    The path and the query are sent (a fragment never is).
    """
    value: str | None = t.get(key, str)
    if value is None:
        return None
    t.no_nul(key, value)
    # Before urlsplit, which quietly drops tabs and newlines (and would let a
    # line end smuggle headers into the request).
    if any(c.isspace() or not c.isprintable() for c in value):
        raise t.error(key, f"{value!r} contains whitespace or control characters")
    try:
        url = urlsplit(value)
    except ValueError as e:  # "Invalid IPv6 URL": an unclosed [
        raise t.error(key, f"{value!r} is not a URL ({e})") from None
    if url.scheme not in ("http", "https"):
        raise t.error(key, f"{value!r} is not an http:// or https:// URL")
    if not url.hostname:
        raise t.error(key, f"{value!r} has no host")
    if url.username is not None or url.password is not None:
        raise t.error(key, f"{value!r}: {what} sends no credentials (user@ in the URL)")
    try:
        port = url.port
    except ValueError as e:  # not a number, or not below 65536
        raise t.error(key, f"{value!r} has a bad port ({e})") from None
    if port == 0:
        raise t.error(key, f"{value!r} has a bad port (0)")
    return value


def _health(t: _Table, path_env: str, *, must_exist: bool) -> Health:
    raw = t.string_list("command")
    command = None if raw is None else _program(t, "command", raw, path_env,
                                                 must_exist=must_exist)  # fmt: skip
    health = Health(
        heartbeat_file=t.path_value("heartbeat_file"),
        max_age=t.duration("max_age", "30s", positive=True),
        tcp=_address(t, "tcp"),
        http=_url(t, "http"),
        unix=t.path_value("unix"),
        command=command,
        timeout=t.duration("timeout", "5s", positive=True),
        failures=t.integer("failures", 3, minimum=1),
        interval=t.duration("interval", "10s", positive=True),
    )
    t.finish()
    return health


def _check_owner(path: Path, st: os.stat_result) -> None:
    """As root, trust only a config that no one but root can change (as sudo and sshd do):
    it names the commands guardian runs as root."""
    if os.geteuid() != 0:
        return
    if st.st_uid != 0:
        owner = _user_name(st.st_uid)
        raise ConfigError(f"{path}: owned by {owner}, not root; guardian runs as root, so "
                          "refuses it (chown root it)")  # fmt: skip
    if st.st_mode & 0o022:
        raise ConfigError(f"{path}: writable by group or others (mode {st.st_mode & 0o777:o}); "
                          "guardian runs as root, so refuses it (chmod go-w it)")  # fmt: skip


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _read(path: Path) -> bytes:
    """The config file's bytes: a regular file, of sane size, that root may trust.

    O_NONBLOCK: a FIFO planted at the config path must not hang the run (open
    would wait for a writer); O_NOCTTY: nor may a terminal become ours.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file; a config must be one")
        _check_owner(path, st)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than 1 MiB ({st.st_size} bytes); not a config")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, MAX_CONFIG_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:  # it grew after fstat
                raise ConfigError(f"{path}: larger than 1 MiB; not a config")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _cannot_write(path: Path, *, folder: bool) -> str | None:
    """Why guardian could not write ``path`` (a file, or a ``folder`` of files), or None.

    What does not exist yet must be creatable: the nearest folder above it that
    exists must let guardian in and write. ``os.access`` asks the kernel with
    guardian's effective ids, so a read-only file system counts too.
    """
    flags = os.W_OK | os.X_OK
    probe = path
    while True:
        try:
            st = os.stat(probe)
        except FileNotFoundError:
            if probe.parent == probe:  # pragma: no cover - "/" always exists
                return None
            probe = probe.parent
            continue
        except OSError as e:
            return f"{probe}: {e.strerror}"
        break
    if probe == path and not folder:  # the file exists: it must be writable, as a file
        if os.path.islink(path):
            return f"{path} is a symlink, and guardian never writes through one"
        if not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file"
        ok = os.access(path, os.W_OK, effective_ids=True)
        return None if ok else f"{path} is not writable by {_user_name(os.geteuid())}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{probe} is not a folder"
    if not os.access(probe, flags, effective_ids=True):
        what = "" if probe == path else f" (to make {path})"
        return f"{probe} is not writable by {_user_name(os.geteuid())}{what}"
    return None


def _not_own_folder(path: Path) -> str | None:
    """Why a check would not trust ``path``, a folder of guardian's own, if it exists."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None  # made when needed, with the right owner and mode
    except OSError as e:
        return f"{path}: {e.strerror}"
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    if st.st_uid != me:
        return f"{path} is owned by {_user_name(st.st_uid)}, not {_user_name(me)}"
    if st.st_mode & 0o022:
        return f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_writable(config: Config) -> None:
    """ConfigError, naming the key, for any place guardian must write and cannot.

    ``install`` and ``check --dry-run`` ask this: a folder guardian cannot
    write would make every cron run fail. (A real run does not stop at it: a
    dead target is started even when its state cannot be kept.)
    """
    s = config.settings
    places: list[tuple[str, Path, bool]] = [
        ("guardian.state_dir", s.state_dir, True),
        ("guardian.audit_log", s.audit_log, False),
    ]
    for t in config.targets:
        if not t.daemonizes:  # guardian writes it (a daemon writes its own, as its user)
            # replaced by rename: its folder must be writable, not only the file
            places.append((f"targets.{t.name}.pidfile", t.pidfile.parent, True))
        places.append((f"targets.{t.name}.output", t.output, False))
    if s.metrics_file is not None:
        # Replaced by rename in its folder, which is node_exporter's: never made by guardian.
        where = s.metrics_file.parent
        if not where.is_dir():
            raise ConfigError(f"{config.path}: guardian.metrics_file: {where} is not a folder "
                              "(node_exporter's textfile directory?); every run would fail to "
                              "write there")  # fmt: skip
        places.append(("guardian.metrics_file", where, True))
        planted = os.path.islink(s.metrics_file) or (
            os.path.lexists(s.metrics_file) and not os.path.isfile(s.metrics_file)
        )
        if planted:
            raise ConfigError(f"{config.path}: guardian.metrics_file: {s.metrics_file} is not a "
                              "regular file, and guardian replaces nothing else; every run "
                              "would fail to write there")  # fmt: skip
    for key, path, folder in places:
        problem = _cannot_write(path, folder=folder)
        if problem:
            raise ConfigError(f"{config.path}: {key}: {problem}; every run would fail to write "
                              "there")  # fmt: skip
    try:
        st = os.stat(s.state_dir)
    except OSError:
        pass  # made when needed (or said above)
    else:
        me = os.geteuid()
        if st.st_uid not in (0, me) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            raise ConfigError(f"{config.path}: guardian.state_dir: {s.state_dir} is owned by "
                              f"{_user_name(st.st_uid)} with mode {stat.S_IMODE(st.st_mode):o}: "
                              "others could replace its locks and delete its audit log, so "
                              "every run would refuse it")  # fmt: skip
    for sub in ("locks", "state"):  # a folder a check will refuse as not guardian's own
        unusable = _not_own_folder(s.state_dir / sub)
        if unusable:
            raise ConfigError(f"{config.path}: guardian.state_dir: {unusable}; every run "
                              "would refuse it")  # fmt: skip


def load(
    path: Path,
    *,
    acting: bool = True,
    starting: bool | None = None,
    runner: int | None = None,
    defer: bool = False,
) -> Config:
    """Read and check the config at ``path``; any problem is a ConfigError.

    ``acting``: guardian is to act on the targets (check, start, stop), so it
    must also be able to run them as their ``user`` and ``group``. Only
    reading it (``status``, ``uninstall``) needs no such thing, and works for
    an operator who is not root. ``starting`` (by default, ``acting``): the
    programs it may run (the target's, its probes', its hooks') must be there
    and executable; a stop needs none of them. ``runner``: the user guardian runs
    as, whose home ``~`` and the default ``state_dir`` are (its own, by default;
    ``status`` looks on behalf of another). ``defer``: a program that cannot be run
    is recorded in its target's ``problems`` instead of refusing the whole config
    (a real check: it goes on with the other targets).
    """
    if starting is None:
        starting = acting
    path = Path(os.path.abspath(path))
    try:
        data = tomllib.loads(_read(path).decode())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({e.reason})") from None
    except RecursionError:  # tomllib recurses once per level of [ or {
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None

    top = _Table(path, "", data, runner)
    g = _Table(path, "guardian", top.get("guardian", dict, {}), runner)
    fallback = default_state_dir(runner)
    state_dir = g.path_value("state_dir", fallback) or Path(fallback)
    settings = Settings(
        state_dir=state_dir,
        audit_log=g.path_value("audit_log") or state_dir / "audit.jsonl",
        timeout=g.duration("timeout", "50s", positive=True),
        watch=g.duration("watch", "0s", positive=False) or None,
        metrics_file=g.path_value("metrics_file"),
        ping_url=_url(g, "ping_url", what="the ping"),
        ping_timeout=g.duration("ping_timeout", "3s", positive=True),
        ping_start=g.get("ping_start", bool, False),
        audit_max_bytes=_audit_size(g),
        audit_keep=g.integer("audit_keep", 5, minimum=1),
    )
    if settings.watch is not None and settings.watch < 0:
        raise g.error("watch", "must not be negative")
    if settings.ping_timeout > PING_TIMEOUT_MAX:
        raise g.error("ping_timeout", f"must be at most {PING_TIMEOUT_MAX:g}s (a ping must "
                      "never hold a run up)")  # fmt: skip
    if settings.audit_keep > 100:
        raise g.error("audit_keep", "must be at most 100")
    g.finish()

    raw_targets = top.get("targets", dict, {})
    top.finish()
    if not raw_targets:
        raise ConfigError(f"{path}: targets: no target defined (add a [targets.NAME] table)")
    targets = []
    for name, body in raw_targets.items():
        targets.append(_target(path, name, body, settings, acting=acting, starting=starting,
                               runner=runner, defer=defer))  # fmt: skip
    config = Config(path=path, settings=settings, targets=tuple(targets))
    _metrics_apart(config)
    return config


def _metrics_apart(config: Config) -> None:
    """ConfigError if ``metrics_file`` is one of guardian's own files (the audit log or a
    rotated one, the config, a state, lock, hold or pid file, a target's output or
    heartbeat): rewritten after every run, it would replace that file, silently."""
    s = config.settings
    metrics = s.metrics_file
    if metrics is None:
        return
    # node_exporter's textfile collector reads *.prom files only: the name says what the
    # file is, and no file of guardian's, cron's or logrotate's has it.
    if metrics.suffix != ".prom" or metrics.name == ".prom":
        raise ConfigError(f"{config.path}: guardian.metrics_file: {metrics} must be named "
                          "NAME.prom (the textfile collector reads no other)")  # fmt: skip

    def both(p: Path) -> set[str]:  # as written, with its folders' symlinks resolved, and whole
        return {
            os.path.abspath(p),
            os.path.join(os.path.realpath(p.parent), p.name),
            os.path.realpath(p),
        }

    ours: set[str] = set()
    for p in (config.path, s.audit_log):
        ours |= both(p)
    for t in config.targets:
        for own in (t.pidfile, t.output, t.health.heartbeat_file):
            if own is not None:
                ours |= both(own)
    mine = both(metrics)
    rotated = any(
        name.startswith((f"{s.audit_log.name}.", f"{s.audit_log.name}-"))
        and os.path.realpath(folder) == os.path.realpath(s.audit_log.parent)
        for folder, name in (os.path.split(m) for m in mine)
    )
    folders = {os.path.realpath(s.state_dir / sub) for sub in ("state", "locks", "holds", "pids")}
    inside = any(os.path.realpath(os.path.dirname(m)) in folders for m in mine)
    if mine & ours or rotated or inside:
        raise ConfigError(f"{config.path}: guardian.metrics_file: {metrics} is one of guardian's "
                          "own files (or in one of its folders), which every run would "
                          "replace with metrics")  # fmt: skip

"""The command line: parse, call, turn every outcome into an exit code.

The only module that imports click, and the one that prints: what a run
says to a person comes here (the hard time-out's last line included, passed
down as ``say``); only faulthandler's last-resort dump writes to stderr by
itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from guardian import __version__, audit, deadline
from guardian.audit import AuditRecord
from guardian.config import Config, check_writable, default_config, load, parse_duration
from guardian.errors import (
    EXIT_INTERNAL,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    AuditError,
    ConfigError,
    GuardianError,
    RunTimeout,
)
from guardian.files import never_blocking
from guardian.run import (
    ASIDES,
    CONFIG_ERROR,
    DEFAULT_TIMEOUT,
    RUNNING,
    Interrupted,
    Run,
    RunResult,
)

if TYPE_CHECKING:  # imported when a run tells the world (guardian/tell.py)
    from guardian.tell import Tell


class Duration(click.ParamType[float, str | float]):
    """A duration such as ``30s``; a bad one is a usage error (exit 2) naming the option."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if seconds <= 0:
            self.fail("must be more than 0", param, ctx)
        return seconds


def _line(record: AuditRecord) -> str:
    """One line for a person: the error first when there is one, then the evidence."""
    what = f"{record.error} ({record.reason})" if record.error else record.reason
    return f"{record.target}: {_WORDS.get(record.action, record.action)}: {what}"


class _Stream:
    """stdout or stderr, written so that a reader that stopped reading cannot hang guardian.

    When cron's mailer is stuck, its pipe fills and a plain write blocks for
    ever (the hard time-out's own last line included); so does a terminal
    whose output is stopped (Ctrl-S), or a socket nobody reads (journald
    stalled). Each is written without blocking (``files.never_blocking``; a
    socket with MSG_DONTWAIT), waiting for room a few seconds in all, for both
    streams together; what does not fit then is dropped: the audit log has
    every record. A file is written as it is.
    """

    wait_left = 3.0  # seconds, for the whole run

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._out: int | None = None
        self._socket: socket.socket | None = None
        self.dropped: str | None = None  # why some of what was written was dropped, if it was

    def _target(self) -> int:
        if self._out is None:
            self._out = never_blocking(self.fd)
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.fstat(self._out).st_mode):
                    self._socket = socket.socket(fileno=os.dup(self._out))
        return self._out

    def _write(self, out: int, data: memoryview) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        return os.write(out, data)

    def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", "replace"))
        try:
            out = self._target()
            while data:
                try:
                    data = data[self._write(out, data) :]
                except BlockingIOError:
                    began = time.monotonic()
                    ready = select.select([], [out], [], _Stream.wait_left)[1]
                    _Stream.wait_left = max(0.0, _Stream.wait_left - (time.monotonic() - began))
                    if not ready:
                        self.dropped = "nobody read it for 3s"
                        return  # nobody reads: the audit log has it
        except OSError as e:
            self.dropped = e.strerror or str(e)
            return  # closed, or a broken pipe: the audit log has it


_STDOUT, _STDERR = _Stream(1), _Stream(2)


def _err(line: str) -> None:
    _STDERR.write(f"guardian: {line}\n")


def _out(text: str) -> None:
    _STDOUT.write(f"{text}\n")


# Quiet when all is well: cron mails whatever a job prints.
_QUIET = frozenset({"ok", "skipped", "adopted", "backoff", "held", "watch_ended"})
_WORDS = {"would_start": "would start", "start_failed": "start failed"}


class IntervalType(click.ParamType[str, str]):
    """A cron interval (``1m``, ``5m``, ``1h``, ``1d``); anything else: exit 2, with the choices."""

    name = "interval"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from guardian.cron import parse_interval

        try:
            return parse_interval(value).text
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _config_option(f: Any) -> Any:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="GUARDIAN_CONFIG",
        default=default_config,
        show_default="/etc/guardian/guardian.toml as root, else ~/.config/guardian/guardian.toml",
        show_envvar=True,
        help="The config file.",
    )(f)


def _place_options(f: Any) -> Any:
    f = click.option(
        "--cron-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="A system cron file (such as /etc/cron.d/guardian) instead of a user's crontab.",
    )(f)
    return click.option(
        "--user",
        metavar="NAME",
        help="That user's crontab (as root); with --cron-file, the user the line runs as.",
    )(f)


def _place(user: str | None, cron_file: Path | None) -> Any:
    from guardian.cron import Place

    if cron_file is not None:
        return Place(user=user or "root", cron_file=Path(os.path.abspath(cron_file)))
    return Place(user=user)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="guardian")
def cli() -> None:
    """Keep a supervisor (supervisord, or any long-running process) alive from cron.

    \b
    Set up:
      guardian check --dry-run --config /etc/guardian/guardian.toml
      guardian check --config /etc/guardian/guardian.toml
    """


@cli.command(
    epilog="""\b
Examples:
  guardian check                        # every target in /etc/guardian/guardian.toml
  guardian check --dry-run              # what it would do, and why; changes nothing
  guardian check --target supervisord --json --config etc/demo.toml

\b
Exit codes: 0 all running; 1 some target not running (or, with --dry-run,
would be started); 2 usage or config error; 3 internal error or audit log
not writable; 124 guardian's own timeout.
"""
)
@_config_option
@click.option(
    "--target", "names", multiple=True, metavar="NAME", help="Check only NAME (repeatable)."
)
@click.option(
    "--dry-run", is_flag=True, help="Say what would be done, with the evidence; do nothing."
)
@click.option("--timeout", type=Duration(), help="Limit on the whole run (default: the config's).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's audit records on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was found for every target.")
@click.option("--watch", "watch_for", type=Duration(), metavar="DURATION",
              help="After the check, keep watching this long (restarting within a second); "
              "default: the config's `watch`, else no watch.")  # fmt: skip
def check(
    *,
    config_path: Path,
    names: tuple[str, ...],
    dry_run: bool,
    timeout: float | None,
    as_json: bool,
    verbose: bool,
    watch_for: float | None,
) -> int:
    """Find each target; start it, detached, if it is not running; audit every decision."""
    from guardian.check import run_check

    if dry_run and watch_for:
        raise click.UsageError("--watch cannot be used with --dry-run (a dry run acts on nothing)")
    out = _Output(as_json=as_json, dry_run=dry_run, verbose=verbose)
    run = Run(dry_run=dry_run, emit=out.emit, say=_err)
    run.sink = out

    def job(config: Config) -> RunResult:
        targets = config.select(names)
        tell = None if dry_run else _tell(config, run, out, start=True)
        try:
            result = run_check(config, targets, run)
            seconds = watch_for or (None if dry_run else config.settings.watch)
            if tell is not None:
                tell.checked(result, final=not seconds)
            if seconds:
                from guardian.watch import watch

                result = watch(config, targets, run, result, seconds,
                               after=tell.acted if tell is not None else None,
                               locked=tell.watching if tell is not None else None)  # fmt: skip
                if tell is not None:
                    tell.ended(result)
        except BaseException:  # cut where nothing else handles it: no ping outlives the run
            if tell is not None:
                tell.abandon()
            raise
        return result

    # A real run goes on past one target's missing program; a dry run refuses it (exit 2).
    return _within(run, config_path, timeout, out, job, defer=not dry_run)


def _within(
    run: Run,
    config_path: Path,
    timeout: float | None,
    out: _Output,
    job: Callable[[Config], RunResult],
    *,
    starting: bool = True,
    defer: bool = False,
) -> int:
    """Read the config and do ``job`` inside the run's time limit, signals handled.

    ``starting``: the job may start a target, so its programs must be there.

    The config is read inside it too (a hung NFS mount, a slow user lookup): for
    that, ``--timeout`` or guardian's default limit holds, then the config's.
    """
    # Once the run is over, a signal that was still on its way (a second SIGTERM) must not
    # kill the process before it exits with the code that says what happened. One that
    # comes while the run is being armed is kept, and ends it once it is.
    came: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: came.append(signum))
    try:
        with run.armed(timeout or DEFAULT_TIMEOUT) as limit:
            if came:
                _interrupt(came[0], None)  # now that it is armed
            run.step(f"reading its config {config_path}")
            config = load(config_path, starting=starting, defer=defer)
            if run.dry_run:  # what would make every real run fail is a config error here
                check_writable(config)
            if timeout is None:
                limit.limit(config.settings.timeout)
            out.config = config
            return out.exit_code(job(config))
    except RunTimeout:
        _err(f"timeout: guardian's own limit ran out while {run.doing}")
        return EXIT_TIMEOUT
    except Interrupted as stop:
        _err(f"interrupted by {signal.Signals(stop.signum).name} while {run.doing}")
        return 128 + stop.signum


class _Output:
    """Where a run's records go: the audit log always, and a person's screen as asked."""

    def __init__(self, *, as_json: bool, dry_run: bool, verbose: bool) -> None:
        self.config: Config | None = None
        self.as_json = as_json
        self.dry_run = dry_run
        self.verbose = verbose
        self.audit_failed = False
        self.latest: dict[str, AuditRecord] = {}

    @property
    def failed(self) -> bool:
        return self.audit_failed

    def emit(self, record: AuditRecord) -> None:
        self.log(record)
        self.show(record)

    def log(self, record: AuditRecord) -> None:
        try:
            # (Records come only once the config is read: there is always a log to name.)
            s = self.config.settings if self.config else None
            audit.append(s.audit_log if s else Path(), record,
                         max_bytes=s.audit_max_bytes if s else 0,
                         keep=s.audit_keep if s else 5)  # fmt: skip
        except audit.RotationError as e:
            # Written, but the log keeps growing: said (once a run), and the run exits 3.
            self.audit_failed = True
            _err(str(e))
        except AuditError as e:
            # Never lost silently: the record goes to stderr, and so into cron's mail.
            self.audit_failed = True
            _err(f"{e}; the record was: {record.to_json()}")

    def show(self, record: AuditRecord) -> None:
        if record.action not in ASIDES or record.action == "held":
            self.latest[record.target] = record  # each target's outcome (a ping's verdict)
        if self.as_json:
            _out(record.to_json())
        elif self.dry_run:
            _out(_line(record))
            for probe in record.probes:  # what each probe found: a dry run runs them too
                _out(f"{record.target}: probe {probe}")
        if not self.dry_run and (self.verbose or record.action not in _QUIET):
            line = _line(record)
            if record.pid is not None and record.action in ("started", "adopted", "restarted"):
                line += f" (pid {record.pid})"
            _err(line)
            if self.verbose:  # (a failure's reason already names the probes that failed)
                for probe in record.probes:
                    _err(f"{record.target}: probe {probe}")
            for hook in record.hooks:
                _err(f"{record.target}: hook {hook}")
            for extra in record.output_tail:
                _err(f"{record.target}: | {extra}")

    def exit_code(self, result: RunResult) -> int:
        if result.interrupted is not None:
            return 128 + result.interrupted
        if result.timed_out:
            return EXIT_TIMEOUT
        if any(r.reason.startswith(CONFIG_ERROR) for r in result.records):
            return EXIT_USAGE  # a target's program is gone: the config needs fixing
        if self.audit_failed or result.trouble:
            return EXIT_INTERNAL
        outcomes = [r for r in result.records if r.action not in ASIDES]
        if any(r.action not in RUNNING for r in outcomes):
            return EXIT_NOT_RUNNING
        return EXIT_OK


def _tell(config: Config, run: Run, out: _Output, *, start: bool) -> Tell | None:
    """What tells the world of this run (metrics, a ping), if the config asks for any:
    imported only then (a healthy check without either pays nothing for it)."""
    s = config.settings
    if not (s.metrics_file or (s.ping_url and start)):
        return None
    from guardian.tell import Tell

    return Tell.maybe(config, run, out, _line, start=start)


def _by_hand(
    what: str, config_path: Path, name: str, timeout: float | None, hold: Any = None
) -> int:
    from guardian.check import by_hand

    out = _Output(as_json=False, dry_run=False, verbose=True)
    run = Run(dry_run=False, emit=out.emit, say=_err)

    def job(config: Config) -> RunResult:
        (target,) = config.select([name])
        tell = _tell(config, run, out, start=False)
        result = by_hand(what, config, target, run, hold)
        if tell is not None:
            tell.checked(result, final=True)
        return result

    # A stop (or a reset) needs no program: one removed by an upgrade can still be stopped.
    return _within(run, config_path, timeout, out, job, starting=what in ("restart", "start"))


@cli.command(
    epilog="""\b
Examples:
  guardian stop supervisord --for 2h --reason "kernel upgrade, ticket OPS-1234"
  guardian stop supervisord            # held until: guardian start supervisord
"""
)
@_config_option
@click.argument("name")
@click.option("--for", "hold_for", type=Duration(), metavar="DURATION",
              help="Hold it down this long (30m, 2h, 1d), then checks start it again. "
              "Default: until `guardian start NAME`.")  # fmt: skip
@click.option("--reason", default="", metavar="TEXT",
              help="Why, for the audit log and `guardian status`.")  # fmt: skip
@click.option("--timeout", type=Duration(), help="Limit on the whole run (default: the config's).")
def stop(
    *, config_path: Path, name: str, hold_for: float | None, reason: str, timeout: float | None
) -> int:
    """Stop target NAME and hold it down: no check or watcher starts it until `guardian
    start NAME` (or --for runs out). The hold survives reboots."""
    from guardian import holds

    return _by_hand("stop", config_path, name, timeout,
                    holds.make(name, seconds=hold_for, reason=reason))  # fmt: skip


@cli.command(epilog="\b\nExample:\n  guardian start supervisord   # after guardian stop")
@_config_option
@click.argument("name")
@click.option("--timeout", type=Duration(), help="Limit on the whole run (default: the config's).")
def start(*, config_path: Path, name: str, timeout: float | None) -> int:
    """Release target NAME's hold and start it now (if it is not running), under its lock;
    no backoff applies."""
    return _by_hand("start", config_path, name, timeout)


@cli.command(epilog="\b\nExample:\n  guardian restart supervisord")
@_config_option
@click.argument("name")
@click.option("--timeout", type=Duration(), help="Limit on the whole run (default: the config's).")
def restart(*, config_path: Path, name: str, timeout: float | None) -> int:
    """Stop target NAME (if it runs) and start it again, under its lock; no backoff applies,
    and a hold is released."""
    return _by_hand("restart", config_path, name, timeout)


@cli.command(
    epilog="\b\nExample:\n  guardian reset supervisord   # after fixing what made it crash"
)
@_config_option
@click.argument("name")
def reset(*, config_path: Path, name: str) -> int:
    """Forget target NAME's crash loop (backoff, gave_up, probe failures)."""
    return _by_hand("reset", config_path, name, None)


@cli.command(
    epilog="""\b
Examples:
  while work; do guardian heartbeat /run/agent.heartbeat; done
  # and in the target's config: [targets.agent.health] heartbeat_file = "/run/agent.heartbeat"
"""
)
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def heartbeat(*, path: Path) -> int:
    """Mark an agent alive: touch PATH (the agent's side of a heartbeat_file probe)."""
    from guardian.heartbeat import beat

    try:
        beat(path)
    except OSError as e:
        _err(f"cannot touch {path}: {e.strerror}")
        return EXIT_NOT_RUNNING
    return EXIT_OK


class ReportError(GuardianError):
    """install or uninstall did its job, but could not say so on stdout (exit 3)."""

    exit_code = EXIT_INTERNAL


def _report(text: str, *, done: str) -> None:
    """Print what install or uninstall did; ``done`` says it on stderr if stdout fails.

    The crontab is changed by then: a full disk or a closed pipe on stdout must
    not look like a bug (a traceback), nor like a change not made.
    """
    try:
        click.echo(text)
    except OSError as e:
        # What stays in stdout's buffer would fail again as Python exits, and make
        # the exit code 120: send it where it can go.
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        raise ReportError(f"{done}; but stdout could not be written ({e.strerror})") from None


@cli.command(
    epilog="""\b
Examples:
  guardian install --interval 1m                     # this user's crontab
  guardian install --interval 5m --user agents       # the crontab of user agents (as root)
  guardian install --cron-file /etc/cron.d/guardian  # a system cron file, run as root
  guardian install --dry-run                         # print the line and where; change nothing
  guardian install --interval 1m --watch             # and watch between runs (sub-second)
"""
)
@_config_option
@click.option("--interval", type=IntervalType(), default="1m", show_default=True,
              help="How often cron runs guardian check.")  # fmt: skip
@_place_options
@click.option("--log", type=click.Path(path_type=Path, dir_okay=False),
              help="Append guardian's output to FILE instead of cron's mail.")  # fmt: skip
@click.option(
    "--dry-run", is_flag=True, help="Print the line and where it would go; change nothing."
)
@click.option("--watch", is_flag=True,
              help="Each run keeps watching until the next takes over: a target's death is "
              "acted on within a second, not a minute (check --watch).")  # fmt: skip
def install(
    *,
    config_path: Path,
    interval: str,
    user: str | None,
    cron_file: Path | None,
    log: Path | None,
    dry_run: bool,
    watch: bool,
) -> int:
    """Install (or update in place) the crontab line that runs guardian check."""
    from guardian import cron

    place = _place(user, cron_file)
    run_as = place.user or pwd.getpwuid(os.geteuid()).pw_name
    for_another = os.geteuid() == 0 and run_as != "root"
    if for_another:
        # What cron will run as that user is checked as that user (cannot_run_as, below):
        # here only what the line needs (its `~`, the timeout), read as that user's.
        try:
            runner = pwd.getpwnam(run_as).pw_uid
        except KeyError:
            raise ConfigError(f"--user: no such user {run_as!r}") from None
        config = load(config_path, acting=False, starting=False, runner=runner)
    else:
        config = load(config_path)
        check_writable(config)
    every = cron.parse_interval(interval)
    longest = every.seconds + cron.WATCH_OVERLAP
    if not watch and config.settings.watch is not None and config.settings.watch > longest:
        raise ConfigError(
            f"{config.path}: guardian.watch: {config.settings.watch:g}s is longer than the "
            f"interval {interval} and {cron.WATCH_OVERLAP}s of overlap, so runs would pile up "
            f"(each waiting to watch); set watch to at most {longest}s, or use --watch, "
            "which watches until the next run takes over"
        )
    if config.settings.timeout >= every.seconds:
        raise ConfigError(
            f"{config.path}: guardian.timeout: {config.settings.timeout:g}s is not shorter than "
            f"the interval {interval} ({every.seconds}s), so runs would pile up; set timeout "
            f"below {every.seconds}s or choose a longer --interval"
        )
    log = Path(os.path.abspath(log)) if log is not None else None
    command = cron.guardian_command(config.path, log, cron.watch_for(every) if watch else None)
    line = cron.render_line(
        every.schedule, command, config.path, system_user=place.user if place.system else None
    )

    def warn_if_not_run() -> None:  # written as asked all the same: tests, staging
        if place.cron_file is not None and (why := cron.not_run_reason(place.cron_file)):
            _err(f"warning: {place.cron_file}: {why}")

    if for_another:
        problem = cron.cannot_run_as(run_as, config.path)
        if problem:
            raise ConfigError(problem)
    if dry_run:
        warn_if_not_run()
        _report(f"would install in {place.describe()}:\n{line}", done="nothing changed")
        return EXIT_OK
    before, after = cron.update(place, config.path, line)
    warn_if_not_run()  # as the file is now: written by root, mode 0644
    verb = "already installed" if before == after else "installed"
    _report(f"{verb} in {place.describe()}:\n{line}", done=f"{verb} in {place.describe()}")
    return EXIT_OK


@cli.command(
    epilog="""\b
Examples:
  guardian uninstall                                   # this user's crontab
  guardian uninstall --cron-file /etc/cron.d/guardian
"""
)
@_config_option
@_place_options
def uninstall(*, config_path: Path, user: str | None, cron_file: Path | None) -> int:
    """Remove guardian's crontab line for this config, and nothing else.

    A crontab (or cron file) that held nothing else is removed with it, so a
    user who had no crontab before install has none again.
    """
    from guardian import cron

    config = Path(os.path.abspath(config_path))
    place = _place(user, cron_file)
    done = cron.remove(place, config)
    where = place.describe()
    if not done.removed:
        said = f"nothing to remove: no line for {config} in {where}"
    elif not done.deleted:
        said = f"removed guardian's line for {config} from {where}"
    elif place.system:
        said = f"removed guardian's line for {config}, and {where}, which held nothing else"
    else:
        said = (f"removed guardian's line for {config}, and {where}, which held nothing "
                "else (crontab -r), as before install")  # fmt: skip
    _report(said, done=said)
    return EXIT_OK


@cli.command(
    epilog="""\b
Examples:
  guardian status
  guardian status --json --config /etc/guardian/guardian.toml
  guardian status --cron-file /etc/cron.d/guardian

\b
Exit code 0 when every target is running and not failing its probes, none is
held (guardian stop), no watcher is stuck, guardian ran when its cron line said
it would, and (with a cron line) a cron daemon runs; 1 otherwise (the lines say
why; --json: "problems"); 2 usage or config error; 3 the report could not be
written to stdout (a full disk, a closed or stuck pipe). Monitoring can call
it. What this user cannot see (/proc mounted hidepid) is said, not counted: run
it as root.
"""
)
@_config_option
@_place_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def status(*, config_path: Path, user: str | None, cron_file: Path | None, as_json: bool) -> int:
    """Each target: running, healthy, held back or given up on, its last failure and starts
    in 24 hours; when guardian last ran; the cron line and whether a cron daemon runs it."""
    import json

    from guardian import cron
    from guardian.status import gather, runner_of

    # Whose guardian it is (the user cron runs it as) decides what `~`, the default
    # state_dir, the target's user and a believable state file are.
    path = Path(os.path.abspath(config_path))
    runner = runner_of(path, user)
    config = load(path, acting=False, runner=runner)
    unreadable: tuple[str, ...] = ()
    if user is None and cron_file is None:
        found = cron.search(config.path)
        entries, unreadable = list(found.entries), tuple(map(str, found.unreadable))
    else:
        entries = cron.installed(_place(user, cron_file), config.path)
    report = gather(config, entries, runner=runner, cron_unreadable=unreadable)
    # Never blocking (a pipe nobody reads must not hang it), and never a traceback: a
    # report that could not be written is said on stderr, with its own exit code.
    _out(json.dumps(report.to_dict(), indent=2) if as_json else "\n".join(report.lines()))
    if _STDOUT.dropped is not None:
        _err(f"cannot write the report to stdout: {_STDOUT.dropped}")
        return EXIT_INTERNAL
    return EXIT_OK if report.ok else EXIT_NOT_RUNNING


@cli.command(
    epilog="""\b
Examples:
  guardian report                          # the last 7 days, every target
  guardian report --since 30d --target supervisord
  guardian report --json | jq '.targets[0].availability'

\b
Exit codes: 0 the report; 1 some of the audit log could not be read, or was left
unread (the report says which file, and is partial), or there is no audit log at
all; 2 usage or config error; 3 the report could not be written to stdout.
"""
)
@_config_option
@click.option("--since", type=Duration(), default="7d", show_default=True,
              help="The period: this long before now.")  # fmt: skip
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="Only this target (repeatable); default: every one.")  # fmt: skip
@click.option("--width", type=click.IntRange(10, 1000), default=None,
              help="Timeline cells (default: the terminal's width).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def report(
    *,
    config_path: Path,
    since: float,
    targets: tuple[str, ...],
    width: int | None,
    as_json: bool,
) -> int:
    """Availability, outages, starts by cause and time to recovery per target, and a
    timeline, from the audit log and its rotated files."""
    import json
    import shutil

    from guardian import report as reporting
    from guardian.status import runner_of

    path = Path(os.path.abspath(config_path))
    config = load(path, acting=False, runner=runner_of(path, None))
    chosen = config.select(list(targets))
    cells = width or max(10, min(1000, shutil.get_terminal_size((80, 24)).columns - 2))
    made = reporting.build(config.settings.audit_log, [t.name for t in chosen],
                           since=since, cells=cells)  # fmt: skip
    if as_json:
        _out(json.dumps(made.to_dict(), indent=2))
    else:
        _out("\n".join(reporting.lines(made, colour=reporting.is_colour(1))))
    if _STDOUT.dropped is not None:
        _err(f"cannot write the report to stdout: {_STDOUT.dropped}")
        return EXIT_INTERNAL
    if made.no_log is not None:  # a wrong audit_log must not look like a quiet host
        _err(f"no audit log at {made.no_log} (is audit_log right?): nothing to report")
    for problem in made.unreadable_files:
        _err(f"cannot read {problem}: the report is partial")
    return EXIT_NOT_RUNNING if made.unreadable_files or made.no_log else EXIT_OK


def _usable_std_streams() -> None:
    """Make fds 0, 1 and 2, the umask and SIGCHLD safe, whatever a caller left them as.

    A closed fd 2 would be handed to the next file opened (the audit log, a
    lock), and whatever is written to "stderr" would land in it; a closed
    stream is /dev/null instead. What guardian creates is never writable by
    others, whatever umask it inherits.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: the one missing
            if null != fd:  # pragma: no cover - open returns the lowest free descriptor
                os.dup2(null, fd)
                os.close(null)
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:  # Python found the fd closed when it started
            setattr(sys, name, open(os.devnull, mode))  # noqa: SIM115 - lives as long as the process
    os.umask(0o022)
    # SIGCHLD ignored by the parent is inherited: the kernel would then reap guardian's
    # children at once, and a child's pid (and process group) could go to a stranger
    # while guardian still meant to signal it. Children are guardian's to reap.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    deadline.deliver(Interrupted(signum))


def main(argv: list[str] | None = None) -> int:
    try:
        # A SIGINT is Interrupted from here on, as inside a run: never KeyboardInterrupt,
        # which click turns into a blank line and "aborted" (exit 2). (One that came
        # earlier, while Python imported guardian: see guardian/__init__.py.)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not ignored)
            signal.signal(signal.SIGINT, _interrupt)
        _usable_std_streams()
        rv = cli.main(args=argv, prog_name="guardian", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE
    except click.Abort:
        _err("aborted")
        return EXIT_USAGE
    except GuardianError as e:
        _err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Interrupted as stop:  # outside a run (before it is armed, or a command of no run)
        _err(f"interrupted by {signal.Signals(stop.signum).name}")
        return 128 + stop.signum
    except RunTimeout:  # outside a run's own handling (it expired while being armed)
        _err("timeout: guardian's own limit ran out")
        return EXIT_TIMEOUT
    except Exception:
        _err("internal error (a bug in guardian; please report it with this traceback):")
        _STDERR.write(traceback.format_exc())
        return EXIT_INTERNAL
    finally:
        # What is left is exiting with the code that says what happened: a SIGINT
        # meanwhile must not turn it into a traceback (or into 130).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return rv if isinstance(rv, int) else EXIT_OK


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()

"""The command line: parse, call, turn every outcome into an exit code.

The only module that imports click or prints.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from guardian import __version__, audit
from guardian.audit import AuditRecord
from guardian.config import DEFAULT_CONFIG, load, parse_duration
from guardian.errors import (
    EXIT_INTERNAL,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    AuditError,
    GuardianError,
)


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


def _err(line: str) -> None:
    click.echo(f"guardian: {line}", err=True)


# Quiet when all is well: cron mails whatever a job prints.
_QUIET = frozenset({"ok", "skipped", "adopted"})
_WORDS = {"would_start": "would start", "start_failed": "start failed"}


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
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="GUARDIAN_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    show_envvar=True,
    help="The config file.",
)
@click.option(
    "--target", "names", multiple=True, metavar="NAME", help="Check only NAME (repeatable)."
)
@click.option(
    "--dry-run", is_flag=True, help="Say what would be done, with the evidence; do nothing."
)
@click.option("--timeout", type=Duration(), help="Limit on the whole run (default: the config's).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's audit records on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was found for every target.")
def check(
    *,
    config_path: Path,
    names: tuple[str, ...],
    dry_run: bool,
    timeout: float | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Find each target; start it, detached, if it is not running; audit every decision."""
    from guardian.check import RUNNING, run_check

    config = load(config_path)
    targets = config.select(names)
    audit_failed = False

    def emit(record: AuditRecord) -> None:
        nonlocal audit_failed
        try:
            audit.append(config.settings.audit_log, record)
        except AuditError as e:
            # Never lost silently: the record goes to stderr, and so into cron's mail.
            audit_failed = True
            _err(f"{e}; the record was: {record.to_json()}")
        if as_json:
            click.echo(record.to_json())
        elif dry_run:
            click.echo(_line(record))
        if not dry_run and (verbose or record.action not in _QUIET):
            line = _line(record)
            if record.pid is not None and record.action in ("started", "adopted"):
                line += f" (pid {record.pid})"
            _err(line)
            for out in record.output_tail:
                _err(f"{record.target}: | {out}")

    result = run_check(
        config,
        targets,
        dry_run=dry_run,
        timeout=timeout or config.settings.timeout,
        emit=emit,
    )
    if result.timed_out:
        return EXIT_TIMEOUT
    if audit_failed:
        return EXIT_INTERNAL
    if any(r.action not in RUNNING for r in result.records):
        return EXIT_NOT_RUNNING
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    try:
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
    except Exception:
        _err("internal error (a bug in guardian; please report it with this traceback):")
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else EXIT_OK


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()

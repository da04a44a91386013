"""The one error family guardian raises; cli.py turns each into an exit code."""

from __future__ import annotations

# Exit codes, documented in README.md.
EXIT_OK = 0
EXIT_NOT_RUNNING = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_TIMEOUT = 124


class GuardianError(Exception):
    """A failure guardian understands and can explain in one line."""

    exit_code = EXIT_INTERNAL


class ConfigError(GuardianError):
    """The config (or the command line) is wrong: the message names file, key and problem."""

    exit_code = EXIT_USAGE


class LaunchError(GuardianError):
    """A target could not be started (exec failed, bad cwd, no such user...)."""

    exit_code = EXIT_NOT_RUNNING


class AuditError(GuardianError):
    """An audit record could not be written."""

    exit_code = EXIT_INTERNAL


class RunTimeout(BaseException):  # it is the run's own time-out, not an error of ours
    """The run's own time limit was reached.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` in
    guardian or in a library it calls can swallow it.
    """

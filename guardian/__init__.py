"""guardian: a careful cron job that keeps a supervisor alive."""

from __future__ import annotations

# A literal, not importlib.metadata: `guardian check` runs every minute on
# every host and reading package metadata costs milliseconds it never needs.
__version__ = "0.1.0"

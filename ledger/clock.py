"""Injectable clocks: a ledger entry's timestamp comes from one, so seeded runs can reproduce hashes."""

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], str]
"""Returns the current time as an ISO-8601 UTC string."""


def system_clock() -> str:
    """Wall-clock time, ISO-8601 UTC with microseconds."""
    return datetime.now(timezone.utc).isoformat()


def fixed_clock(timestamp: str = "1970-01-01T00:00:00+00:00") -> Clock:
    """A clock that always answers ``timestamp``: entries then hash the same on every run."""
    datetime.fromisoformat(timestamp)  # refuse a malformed timestamp now, not at append time
    return lambda: timestamp

"""The time a saga's decisions are made at.

The orchestrator asks its clock for `now` when it decides (a timer's due time, a retry's, a
reply timeout's) and the deadline worker compares the deadline table with the same clock. In
production that is the wall clock, and the table is read at the database's own `now()`; a
test gives a `saga.testing.VirtualClock`, whose time moves only when the test moves it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def table_time(clock: Clock) -> datetime | None:
    """The time the deadline table is read at: None (the database's `now()`) for the wall
    clock, else the clock's own time."""
    return None if isinstance(clock, SystemClock) else clock.now()


def check_clock(clock: object, owner: str) -> Clock:
    """A clock whose `now()` gives an aware datetime; an error naming what is wrong otherwise."""
    if not isinstance(clock, Clock):
        raise TypeError(f"{owner}: clock must have a now() method returning a datetime, got {clock!r}")
    now = clock.now()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError(f"{owner}: clock.now() must return a timezone-aware datetime, got {now!r}")
    return clock

"""A clock whose time moves only when a test moves it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

Driver = Callable[[datetime], Awaitable[None]]


class VirtualClock:
    """Give it to an `Orchestrator` (`clock=`): decisions are made at its time and deadlines
    fire by it. `await clock.advance(3600)` moves it an hour ahead at once. On a running
    `System`, what falls due on the way fires in order, each at its own time: a timeout, the
    retry it schedules, that retry's timeout, and so on up to the hour."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError(
                f"VirtualClock: start must be timezone-aware (e.g. datetime.now(UTC)), got {start!r}"
            )
        self._now = start if start is not None else datetime.now(UTC)
        self._driver: Driver | None = None

    def now(self) -> datetime:
        return self._now

    def move(self, seconds: float) -> None:
        """Move the time ahead and do nothing else (decision tests without services)."""
        self.move_to(self._now + timedelta(seconds=_ahead(seconds)))

    def move_to(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError(f"VirtualClock: time moves forward only; it is {self._now}, not {when}")
        self._now = when

    async def advance(self, seconds: float) -> None:
        """Move the time ahead by `seconds`; on a running system, fire what falls due."""
        target = self._now + timedelta(seconds=_ahead(seconds))
        if self._driver is None:
            self.move_to(target)
        else:
            await self._driver(target)

    def attach(self, driver: Driver) -> None:
        """`driver(target)` moves the clock to `target` (a running system's deadline firing)."""
        self._driver = driver

    def __repr__(self) -> str:
        return f"VirtualClock({self._now.isoformat()})"


def _ahead(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(
            f"VirtualClock: time moves forward only, by a number of seconds >= 0; got {seconds!r}"
        )
    return float(seconds)

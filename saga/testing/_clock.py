"""A clock whose time moves only when a test moves it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

Listener = Callable[[float], Awaitable[None]]


class VirtualClock:
    """Give it to an `Orchestrator` (`clock=`): decisions are made at its time and deadlines
    fire by it. `await clock.advance(3600)` moves it an hour ahead at once; a running
    `System` first lets what is in flight reach Kafka, and then fires what fell due."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError(
                f"VirtualClock: start must be timezone-aware (e.g. datetime.now(UTC)), got {start!r}"
            )
        self._now = start if start is not None else datetime.now(UTC)
        self._before: list[Listener] = []
        self._after: list[Listener] = []

    def now(self) -> datetime:
        return self._now

    def move(self, seconds: float) -> None:
        """Move the time ahead, and do nothing else (decision tests without services)."""
        if seconds < 0:
            raise ValueError(f"VirtualClock: time moves forward only; got {seconds} seconds")
        self._now += timedelta(seconds=seconds)

    async def advance(self, seconds: float) -> None:
        """Move the time ahead; what listens (a running `System`) settles before, and fires
        the deadlines that fell due after."""
        if seconds < 0:
            raise ValueError(f"VirtualClock: time moves forward only; got {seconds} seconds")
        for listener in self._before:
            await listener(seconds)
        self.move(seconds)
        for listener in self._after:
            await listener(seconds)

    def listen(self, *, before: Listener | None = None, after: Listener | None = None) -> None:
        if before is not None:
            self._before.append(before)
        if after is not None:
            self._after.append(after)

    def __repr__(self) -> str:
        return f"VirtualClock({self._now.isoformat()})"

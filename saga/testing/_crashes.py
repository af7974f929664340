"""Crash points in-process: a worker of a running `System` killed exactly there, and replaced.

`eventstore.crash_point(name)` calls a hook; this one knows which worker of which system is
running (a context variable set when the worker starts, inherited by its tasks), counts the
passes, and raises `Killed` at the armed pass. `Killed` is a BaseException: no worker loop
catches it, so the task that got there ends there, its transaction rolled back, its Kafka
offsets not committed. As with a killed process, the whole worker goes, whichever of its
tasks got there (the orchestrator worker's reply consumer is a task of its own): the
system stops the worker and starts a fresh one in its place.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from eventstore import CRASH_POINTS, set_crash_hook

_RUNNING: ContextVar[tuple[Any, str] | None] = ContextVar("saga_testing_worker", default=None)
_installed = False


class Killed(BaseException):
    """A worker of a test's system killed at a crash point (the stand-in for kill -9)."""

    def __init__(self, worker: str, point: str, nth: int) -> None:
        super().__init__(f"{worker} killed at crash point {point} (pass {nth})")
        self.worker, self.point, self.nth = worker, point, nth


@contextmanager
def running_as(system: Any, worker: str) -> Iterator[None]:
    """Tasks started inside belong to `worker` of `system` (for the crash points they reach)."""
    token = _RUNNING.set((system, worker))
    try:
        yield
    finally:
        _RUNNING.reset(token)


def _reached(point: str) -> None:
    running = _RUNNING.get()
    if running is not None:
        system, worker = running
        system.crashes.reached(worker, point)


class Crashes:
    """How often each worker of one system reached each crash point, and the one kill armed."""

    def __init__(self, system: Any) -> None:
        global _installed
        if not _installed:
            set_crash_hook(_reached)
            _installed = True
        self.system = system
        self.counts: Counter[tuple[str, str]] = Counter()
        self.armed: tuple[str, str, int] | None = None
        self.kills: list[Killed] = []
        self._dying: dict[str, asyncio.Event] = {}

    def killing(self, worker: str) -> asyncio.Event:
        """An event set when `worker` (the one running now) is killed, in any of its tasks."""
        self._dying[worker] = asyncio.Event()
        return self._dying[worker]

    def arm(self, worker: str, point: str, nth: int = 1) -> None:
        """Kill `worker` the `nth` time it reaches `point` from now on (once)."""
        if point not in CRASH_POINTS:
            raise ValueError(
                f"{point!r} is not a crash point; the crash points are: {', '.join(CRASH_POINTS)}"
            )
        if nth < 1:
            raise ValueError(f"nth counts passes from 1, got {nth}")
        self.armed = (worker, point, self.counts[(worker, point)] + nth)

    def reached(self, worker: str, point: str) -> None:
        self.counts[(worker, point)] += 1
        if self.armed == (worker, point, self.counts[(worker, point)]):
            self.armed = None
            killed = Killed(worker, point, self.counts[(worker, point)])
            self.kills.append(killed)
            if worker in self._dying:
                self._dying[worker].set()
            raise killed

    @staticmethod
    def is_kill(exc: BaseException) -> bool:
        return isinstance(exc, Killed)

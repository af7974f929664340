"""The lifecycle every background worker here shares: start, stop, wait."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eventstore._crash import armed

log = logging.getLogger(__name__)


class Worker:
    """One asyncio task running `_run()` until `stop()`.

    `start()` and `stop()` are safe to call twice and in any order: a `start()` during a
    `stop()` waits for the old task to end first, and a `stop()` returns only once the task
    finished the work it had in flight. Subclasses write `_run()`, which watches
    `self._stopping`, and may override `_open()` / `_close()` for their resources.
    """

    name = "worker"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._lifecycle = asyncio.Lock()

    async def _open(self) -> None:
        """Acquire resources before the task starts (raise to refuse to start)."""

    async def _close(self) -> None:
        """Release resources after the task ended."""

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        async with self._lifecycle:
            if self._task is not None:
                return
            self._stopping = asyncio.Event()
            armed()  # a misspelt SAGA_CRASH_AT stops the worker here, not inside a handler
            await self._open()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Finish the work in flight, then release everything. Safe to call twice."""
        async with self._lifecycle:
            task = self._task
            if task is None:
                return
            self._stopping.set()
            self._wakeup.set()
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():  # this stop() is being cancelled, not the task
                    raise
            finally:
                if task.done():
                    self._task = None
                    await self._close()

    def ended(self) -> bool:
        """Whether the task ended by itself (failed, or returned) while nobody stopped it."""
        task = self._task
        return task is not None and task.done() and not self._stopping.is_set()

    async def wait(self) -> None:
        """Until the task ends by itself (or fails: its error is raised here)."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by a wake-up or a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)

    async def _backoff(self, seconds: float) -> None:
        """Sleep, cut short only by a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

"""Running a worker as a process: its event loop; start it, stop it cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

from eventstore import DatabaseUnreachableError, OutageLog
from outbox import BrokerUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
EventLoop = Literal["auto", "asyncio", "uvloop"]


def run(main: Coroutine[Any, Any, T], event_loop: EventLoop = "auto") -> T:
    """Run `main` on uvloop when it is installed (or asked for), else on asyncio's own loop.

    The workers spend much of their time in the event loop (a socket to Postgres, one to
    Kafka, many small messages); uvloop does that part several times faster, which
    `bench/saga_e2e.py` shows as about a quarter more sagas a second."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise RuntimeError(
                    "SAGA_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


# How often a process tries again to start while Postgres or Kafka is away.
START_RETRY_S = 2.0


async def run_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    wait: Callable[[], Coroutine[Any, Any, None]],
    *,
    retry_s: float = START_RETRY_S,
) -> None:
    """start(); then on SIGTERM/SIGINT stop() (which finishes the work in flight).

    While start() finds Postgres or Kafka away (`DatabaseUnreachableError`,
    `BrokerUnavailableError`), it is tried again every `retry_s`, with one log line when the
    wait begins, one a minute, one when it ends; a signal meanwhile ends the wait, and the
    process, cleanly. Other errors of start() (a wrong database, say) are raised.

    `wait()` returns when the worker ends by itself; a worker that fails takes the process
    down with its error rather than leaving it running and doing nothing.
    """
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    if not await _start_when_reachable(start, signalled, retry_s):
        log.info("stopping: signalled while starting")
        await stop()
        return
    signal_task = asyncio.create_task(signalled.wait())
    worker_task = asyncio.create_task(wait())
    try:
        await asyncio.wait({signal_task, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        if signalled.is_set():
            log.info("stopping: finishing the work in flight")
    finally:
        signal_task.cancel()
        await stop()
        if worker_task.done():
            worker_task.result()
        else:
            worker_task.cancel()


async def _start_when_reachable(
    start: Callable[[], Awaitable[None]], signalled: asyncio.Event, retry_s: float
) -> bool:
    """start(), again while a service is away. False when signalled first."""
    outage = OutageLog(log, retry_s)
    while True:
        try:
            if not await _unless_signalled(start(), signalled):
                return False
        except (DatabaseUnreachableError, BrokerUnavailableError) as exc:
            outage.failed(exc.service, exc.reason)
            if not await _unless_signalled(asyncio.sleep(retry_s), signalled):
                return False
            continue
        outage.ended()
        return True


async def _unless_signalled(work: Awaitable[None], signalled: asyncio.Event) -> bool:
    """Await `work`; when a signal comes first, cancel it and return False."""
    task = asyncio.ensure_future(work)
    signal_task = asyncio.create_task(signalled.wait())
    try:
        await asyncio.wait({task, signal_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signal_task.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # its clean-up runs; how it ended no longer matters
    return False

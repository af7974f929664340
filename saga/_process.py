"""Running a worker as a process: its event loop; start it, stop it cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

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


async def run_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    wait: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """start(); then on SIGTERM/SIGINT stop() (which finishes the work in flight).

    `wait()` returns when the worker ends by itself; a worker that fails takes the process
    down with its error rather than leaving it running and doing nothing.
    """
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    await start()
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

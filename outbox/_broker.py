"""When Kafka is away: which failures mean that, and keeping aiokafka's logging of it short."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)

from eventstore import OutageLog
from outbox._errors import BrokerUnavailableError

log = logging.getLogger(__name__)

# What a client's start raises when no broker answers (refused, unresolvable, silent).
_UNREACHABLE = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    OSError,
    TimeoutError,
)


def broker_unavailable(bootstrap_servers: str, exc: BaseException) -> BrokerUnavailableError | None:
    """`exc` as a BrokerUnavailableError when it says no broker answered, else None."""
    if isinstance(exc, BrokerUnavailableError):
        return exc
    if not isinstance(exc, _UNREACHABLE):
        return None
    reason = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    if "Unable to bootstrap" in reason:  # aiokafka names each address, and not why
        reason = "no broker answered (refused, unresolved or silent)"
    return BrokerUnavailableError(bootstrap_servers, reason)


async def watch_broker(
    reachable: Callable[[], Awaitable[bool]],
    outage: OutageLog,
    service: str,
    reason: str,
    pause: Callable[[], Awaitable[None]],
    stopping: Callable[[], bool],
) -> None:
    """Until `stopping()`: ask `reachable()`, say an outage in `outage`'s few lines, `pause()`.
    (A client that lost its broker retries by itself; this only says so, clearly.)"""
    while not stopping():
        if await reachable():
            outage.ended()
        else:
            outage.failed(service, reason)
        await pause()


class KafkaLogThrottle(logging.Filter):
    """Lets through one aiokafka warning or error of a kind (its logger and message template)
    every `repeat_s`, saying how many like it were held back; other records pass untouched.

    With its broker gone, aiokafka logs each failed connection and metadata request, several
    lines a second per client; the process says what matters in its own lines."""

    def __init__(self, repeat_s: float = 60.0) -> None:
        super().__init__()
        self.repeat_s = repeat_s
        self._kinds: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not (
            record.name == "aiokafka" or record.name.startswith("aiokafka.")
        ):
            return True
        kind = (record.name, record.msg)
        now = time.monotonic()
        said_at, held = self._kinds.get(kind, (float("-inf"), 0))
        if now - said_at < self.repeat_s:
            self._kinds[kind] = (said_at, held + 1)
            return False
        self._kinds[kind] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} like it in the last {now - said_at:.0f}s not shown)"
            record.args = ()
        return True


def quiet_kafka_logs(repeat_s: float = 60.0) -> None:
    """Put a `KafkaLogThrottle` on the root logger's handlers (for a process's main, after
    logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, KafkaLogThrottle) for f in handler.filters):
            handler.addFilter(KafkaLogThrottle(repeat_s))


async def close_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop a producer even when it cannot reach Kafka.

    aiokafka's `stop()` first flushes what is pending, and a producer that lost its broker
    can retry that forever (aio-libs/aiokafka#517, #642). After `timeout_s` its sender task
    is cancelled instead, which lets `stop()` close the connections. What it still held was
    not acknowledged, so those outbox rows were not deleted and are sent again later.
    """
    stopping = asyncio.ensure_future(producer.stop())
    try:
        await asyncio.wait_for(asyncio.shield(stopping), timeout_s)
        return
    except TimeoutError:
        log.warning(
            "relay: producer did not flush within %.0fs; dropping its unacknowledged sends", timeout_s
        )
    sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    if sender_task is not None:
        sender_task.cancel()
    try:
        await asyncio.wait_for(stopping, timeout_s)
    except (TimeoutError, asyncio.CancelledError, KafkaError) as exc:
        log.warning("relay: producer stop did not finish cleanly (%r)", exc)

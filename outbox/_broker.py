"""When Kafka is away: which failures mean that, and keeping aiokafka's logging of it short."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError

from eventstore import OutageLog
from outbox._errors import BrokerUnavailableError

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

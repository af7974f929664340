"""The relay: moves committed outbox rows to Kafka, in order, at least once.

Order. Rows are published in id order. Two transactions that write messages for the same
key one after the other (the saga runtime's do: each appends to the saga's stream with an
expected version, so the second starts after the first committed) insert their rows in
that order, and both are visible to the relay whenever the second is. Rows are deleted only
after Kafka acknowledged them; when a send fails, the rows of that key from the failure on
stay in the table and are sent again, after the ones before them.

Availability. Several relays may run; one leads. The leader holds a session-level advisory
lock on its Postgres connection and does all its reads and deletes on that connection, so
if the connection dies the lock goes with it and a standby takes over. A leader cut off
mid-batch may still have records in flight that the new leader sends again: duplicates,
which the consumers' inbox absorbs. Key-partitioned ownership would give more throughput,
but a single leader keeps order simple to reason about and one relay is far from the limit.

Waking. `Outbox.put` queues a NOTIFY that Postgres delivers at commit; the relay LISTENs and
polls as a fallback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from eventstore import libpq_url
from eventstore._worker import Worker, listening
from outbox._errors import PublishError
from outbox._outbox import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

DEFAULT_LOCK_KEY = 7_302_115_002

_CLAIM = "SELECT id, topic, key, value, headers::text FROM outbox ORDER BY id LIMIT %s"
_DELETE = "DELETE FROM outbox WHERE id = ANY(%s)"
_LAG = "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 FROM outbox"


@dataclass(frozen=True)
class RelayLag:
    pending: int
    oldest_age_s: float


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0
    is_leader: bool = False


def acked_prefix(rows: Sequence[tuple[int, str]], failed: set[int]) -> list[int]:
    """Ids safe to delete: per key, the rows before that key's first failure.

    `rows` are (id, key) in send order; `failed` the ids whose send failed or never happened.
    """
    blocked: set[str] = set()
    safe: list[int] = []
    for row_id, key in rows:
        if row_id in failed:
            blocked.add(key)
        elif key not in blocked:
            safe.append(row_id)
    return safe


async def close_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop a producer even when it cannot reach Kafka.

    aiokafka's `stop()` first flushes what is pending, and a producer that lost its broker
    can retry that forever (aio-libs/aiokafka#517, #642). After `timeout_s` the pending sends
    are failed instead; their outbox rows were not deleted and are sent again later.
    """
    stopping = asyncio.ensure_future(producer.stop())
    try:
        await asyncio.wait_for(asyncio.shield(stopping), timeout_s)
    except TimeoutError:
        log.warning("relay: producer did not flush within %.0fs; failing its pending sends", timeout_s)
        producer._message_accumulator.fail_all(KafkaTimeoutError())
        await stopping


class Relay(Worker):
    """`await relay.start()` ... `await relay.stop()`."""

    name = "outbox-relay"

    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        standby_interval_s: float = 1.0,
        retry_max_s: float = 5.0,
        ack_timeout_s: float = 30.0,
        lock_key: int = DEFAULT_LOCK_KEY,
        lag_log_interval_s: float = 30.0,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"relay batch_size must be >= 1, got {batch_size}")
        if poll_interval_s <= 0 or standby_interval_s <= 0 or retry_max_s <= 0:
            raise ValueError("relay intervals must be > 0")
        super().__init__()
        self.database_url = libpq_url(database_url)
        self.bootstrap_servers = bootstrap_servers
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.standby_interval_s = standby_interval_s
        self.retry_max_s = retry_max_s
        self.ack_timeout_s = ack_timeout_s
        self.lock_key = lock_key
        self.lag_log_interval_s = lag_log_interval_s
        self.producer_options = {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 1,
            "request_timeout_ms": 30_000,
            **(producer_options or {}),
        }
        self.stats = RelayStats()

    async def _run(self) -> None:
        delay = 0.2
        async with listening(self.database_url, NOTIFY_CHANNEL, self._wakeup):
            while not self._stopping.is_set():
                try:
                    await self._lead()
                    delay = 0.2
                except (psycopg.Error, OSError) as exc:
                    log.warning("relay: Postgres unavailable (%s); retrying in %.1fs", exc, delay)
                except (KafkaError, PublishError) as exc:
                    self.stats.failures += 1
                    log.warning("relay: Kafka did not take the batch (%s); retrying in %.1fs", exc, delay)
                self.stats.is_leader = False
                await self._backoff(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def _lead(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, application_name=f"saga-relay-{os.getpid()}"
        ) as conn:
            while not self._stopping.is_set():
                row = await (
                    await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
                ).fetchone()
                if row and row[0]:
                    break
                await self._backoff(self.standby_interval_s)
            else:
                return
            self.stats.is_leader = True
            log.info("relay: leading")
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, **self.producer_options)
            await producer.start()
            try:
                await self._publish_loop(conn, producer)
            finally:
                await close_producer(producer, self.ack_timeout_s)

    async def _publish_loop(self, conn: psycopg.AsyncConnection[Any], producer: AIOKafkaProducer) -> None:
        next_lag_log = time.monotonic() + self.lag_log_interval_s
        while not self._stopping.is_set():
            # Cleared before reading, so a NOTIFY that lands during the batch is not lost.
            self._wakeup.clear()
            published = await self.publish_batch(conn, producer)
            if time.monotonic() >= next_lag_log:
                lag = await self.lag(conn)
                log.info("relay: %d pending, oldest %.1fs", lag.pending, lag.oldest_age_s)
                next_lag_log = time.monotonic() + self.lag_log_interval_s
            if published < self.batch_size:
                await self._pause(self.poll_interval_s)

    async def publish_batch(self, conn: psycopg.AsyncConnection[Any], producer: AIOKafkaProducer) -> int:
        """Send the oldest rows, wait for Kafka's acks, delete what was acknowledged in order."""
        rows = await (await conn.execute(_CLAIM, (self.batch_size,))).fetchall()
        if not rows:
            return 0
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        error: BaseException | None = None
        for row_id, topic, key, value, headers in rows:
            try:
                future = await producer.send(
                    topic,
                    value=bytes(value),
                    key=key.encode(),
                    headers=[(k, v.encode()) for k, v in orjson.loads(headers).items()],
                )
            except KafkaError as exc:
                error = exc
                break
            sent.append((row_id, future))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        ok = {
            row_id
            for (row_id, _), result in zip(sent, results, strict=True)
            if not isinstance(result, BaseException)
        }
        failed = {row[0] for row in rows} - ok
        deletable = acked_prefix([(row[0], row[2]) for row in rows], failed)
        await self.delete(conn, deletable)
        self.stats.published += len(deletable)
        self.stats.batches += 1
        if failed:
            error = error or next(r for r in results if isinstance(r, BaseException))
            raise PublishError(
                f"{len(failed)} of {len(rows)} records were not acknowledged: {error!r}"
            ) from error
        return len(rows)

    async def delete(self, conn: psycopg.AsyncConnection[Any], ids: list[int]) -> None:
        if ids:
            await conn.execute(_DELETE, (ids,))

    async def lag(self, conn: psycopg.AsyncConnection[Any] | None = None) -> RelayLag:
        """Rows waiting and the age of the oldest, in seconds."""
        if conn is None:
            async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as own:
                return await self.lag(own)
        row = await (await conn.execute(_LAG)).fetchone()
        assert row is not None
        return RelayLag(int(row[0]), float(row[1]))

"""The relay: moves committed outbox rows to Kafka, in order, at least once.

Order. Rows are published in id order. Two transactions that write messages for the same
key one after the other (the saga runtime's do: each appends to the saga's stream with an
expected version, so the second starts after the first committed) insert their rows in
that order, and both are visible to the relay whenever the second is. Rows are deleted only
after Kafka acknowledged them; when a send fails, the rows of that topic and key from the
failure on stay in the table and are sent again, after the ones before them. (Order holds
per topic and key: what one consumer sees. A topic the broker lacks holds up only its own
rows: see `outbox/_topics.py`.)

Sharing. Several relays may run, and they share the work: every row is in one of 64 buckets
(a hash of its key) and each relay publishes the buckets it holds, a share of them by the
number of relays running, rebalanced as relays come and go (`outbox/_buckets.py`). It holds
them as session-level advisory locks on its Postgres connection and does all its reads and
deletes on that connection, so if the connection dies the locks go with it and the other
relays take its buckets. A relay cut off mid-batch may still have records in flight that the
next holder sends again: duplicates, which the consumers' inbox absorbs.

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
from aiokafka.errors import KafkaConnectionError, KafkaError, UnknownTopicOrPartitionError

from eventstore import (
    Database,
    GaugeRefresher,
    OutageLog,
    StoreUnavailableError,
    Worker,
    check_database,
    crash_point,
    database_service,
    is_retriable,
)
from outbox._broker import broker_unavailable, close_producer
from outbox._buckets import ALL_BUCKETS, BucketShare
from outbox._errors import BrokerUnavailableError, PublishError
from outbox._kafka_check import check_kafka
from outbox._kafka_connection import KafkaConnection, as_connection
from outbox._log_context import log_context_of_headers
from outbox._metrics import count_published, refresh_outbox_gauges
from outbox._outbox import NOTIFY_CHANNEL, RelayLag, outbox_lag, outbox_migrations
from outbox._topics import MissingTopics
from outbox._tracing import SendSpans

log = logging.getLogger(__name__)

# Rows of topics the broker lacks are left out (see outbox/_topics.py); nothing of theirs is
# sent, so order per topic and key holds.
# Only the relay's own buckets (several relays share the table).
_CLAIM = (
    "SELECT id, topic, key, value, headers::text FROM outbox "
    "WHERE bucket = ANY(%s::smallint[]) AND topic <> ALL(%s::text[]) ORDER BY id LIMIT %s"
)
_OF_TOPIC = (
    "SELECT id, topic, key, value, headers::text FROM outbox "
    "WHERE bucket = ANY(%s::smallint[]) AND topic = %s ORDER BY id LIMIT %s"
)
_DELETE = "DELETE FROM outbox WHERE id = ANY(%b::bigint[])"


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0
    refused: int = 0
    buckets: int = 0  # how many of the 64 buckets this relay publishes now


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


class Relay(Worker):
    """`await relay.start()` ... `await relay.stop()`.

    `poll_interval_s`: the longest wait for new rows when no NOTIFY comes. `rebalance_interval_s`:
    how often it looks at which relays run and takes up its share of the buckets, so about how
    long the buckets of a relay that died wait for another.
    """

    name = "outbox-relay"

    def __init__(
        self,
        database: Database,
        kafka: str | KafkaConnection,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        rebalance_interval_s: float = 1.0,
        retry_max_s: float = 5.0,
        ack_timeout_s: float = 30.0,
        lag_log_interval_s: float = 30.0,
        unpublishable_after_s: float = 300.0,
        producer_options: dict[str, Any] | None = None,
        metrics_interval_s: float | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"relay batch_size must be >= 1, got {batch_size}")
        if poll_interval_s <= 0 or rebalance_interval_s <= 0 or retry_max_s <= 0:
            raise ValueError("relay intervals must be > 0")
        super().__init__()
        self.database = database
        self.kafka = as_connection(kafka)
        self.bootstrap_servers = self.kafka.bootstrap_servers
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.rebalance_interval_s = rebalance_interval_s
        self.retry_max_s = retry_max_s
        self.ack_timeout_s = ack_timeout_s
        self.lag_log_interval_s = lag_log_interval_s
        # Idempotent with acks=all whatever `producer_options` say (it refuses weaker ones).
        self.producer_options = self.kafka.producer_options("relay", **(producer_options or {}))
        self.stats = RelayStats()
        self.missing_topics = MissingTopics(give_up_after_s=unpublishable_after_s)
        # Postgres or Kafka away: a line when it goes, one a minute, one when it is back.
        self._outage = OutageLog(log, retry_s=retry_max_s)
        # Set when /metrics is served: the outbox gauges need a query, made every so often.
        self._gauges: GaugeRefresher | None = None
        if metrics_interval_s is not None:
            self._gauges = GaugeRefresher(
                self.name, lambda: refresh_outbox_gauges(database), metrics_interval_s
            )

    async def _open(self) -> None:
        """Refuse to start on a database that is wrong (`DatabaseConfigError`, `SchemaError`);
        `DatabaseUnreachableError` when Postgres is away."""
        await check_database(self.database, outbox_migrations())
        await check_kafka(self.kafka)
        if self._gauges is not None:
            await self._gauges.start()

    async def _close(self) -> None:
        if self._gauges is not None:
            await self._gauges.stop()

    async def _run(self) -> None:
        delay = 0.2
        async with self.database.listening(NOTIFY_CHANNEL, self._wakeup):
            while not self._stopping.is_set():
                try:
                    await self._lead()
                    delay = 0.2
                except (psycopg.Error, OSError, StoreUnavailableError) as exc:
                    self._outage.failed(database_service(self.database), _first_line(exc))
                except BrokerUnavailableError as exc:
                    self._outage.failed(exc.service, exc.reason)
                except (KafkaError, PublishError) as exc:
                    self.stats.failures += 1
                    log.warning("relay: Kafka did not take the batch (%s); retrying in %.1fs", exc, delay)
                self.stats.buckets = 0
                await self._backoff(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def _lead(self) -> None:
        # A connection of its own: the locks are the session's, and go if the connection dies.
        async with self.database.session(application_name=f"saga-relay-{os.getpid()}") as conn:
            self._outage.ended(database_service(self.database))
            share = BucketShare(conn)
            await share.join()
            producer = AIOKafkaProducer(**self.producer_options)
            try:
                try:
                    await producer.start()
                except Exception as exc:
                    gone = broker_unavailable(self.bootstrap_servers, exc)
                    if gone is None:
                        raise
                    raise gone from exc
                self._outage.ended()
                await self._publish_loop(conn, producer, share)
            finally:
                await close_producer(producer, self.ack_timeout_s)

    async def _publish_loop(
        self, conn: psycopg.AsyncConnection[Any], producer: AIOKafkaProducer, share: BucketShare
    ) -> None:
        next_lag_log = time.monotonic() + self.lag_log_interval_s
        next_share = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() >= next_share:
                # Between batches: nothing of a bucket let go here is in flight.
                await share.rebalance()
                self.stats.buckets = len(share.held)
                next_share = time.monotonic() + self.rebalance_interval_s
            # Cleared before reading, so a NOTIFY that lands during the batch is not lost.
            self._wakeup.clear()
            published = await self.publish_batch(conn, producer, tuple(share.held)) if share.held else 0
            if time.monotonic() >= next_lag_log:
                lag = await self.lag(conn)
                log.info("relay: %d pending, oldest %.1fs", lag.pending, lag.oldest_age_s)
                next_lag_log = time.monotonic() + self.lag_log_interval_s
            if published < self.batch_size:
                await self._pause(max(0.0, min(self.poll_interval_s, next_share - time.monotonic())))

    async def publish_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        producer: AIOKafkaProducer,
        buckets: Sequence[int] = ALL_BUCKETS,
    ) -> int:
        """Send the oldest rows of `buckets`, wait for Kafka's acks, delete what was acknowledged.

        A row Kafka refuses for good (its error is not retriable) is moved to `outbox_dead`
        with the error instead of blocking its key forever; rows whose send failed in a way
        that can pass stay, and so do the later rows of their key (order per key).
        """
        await self._set_aside_missing_topics(conn, buckets)
        claim = (list(buckets), self.missing_topics.excluded, self.batch_size)
        rows = await (await conn.execute(_CLAIM, claim)).fetchall()
        if not rows:
            # Only rows of missing topics may be waiting: those topics are asked about again.
            await self.missing_topics.refresh(producer, ())
            return 0
        await self.missing_topics.refresh(producer, {row[1] for row in rows})
        missing = set(self.missing_topics.excluded)
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        refused: dict[int, BaseException] = {}
        error: BaseException | None = None
        waiting: set[tuple[str, str]] = set()  # (topic, key) with a row not sent: none after it is
        spans = SendSpans()
        for row_id, topic, key, value, headers in rows:
            if topic in missing:
                continue  # stays; the next batches leave its topic out
            if (topic, key) in waiting:
                continue
            fields = orjson.loads(headers)
            spans.start(row_id, topic, key, fields)
            try:
                future = await producer.send(
                    topic,
                    value=bytes(value),
                    key=key.encode(),
                    headers=[(k, v.encode()) for k, v in fields.items()],
                )
            except KafkaError as exc:
                spans.failed(row_id, exc)
                if not is_retriable(exc):
                    refused[row_id] = exc
                    continue
                error = error or exc
                if isinstance(exc, KafkaConnectionError):
                    break  # the broker is gone: nothing else would pass
                waiting.add((topic, key))
                continue
            sent.append((row_id, future))
        if sent:
            # Bounded: with its broker gone, aiokafka would retry these for as long as it is down.
            await asyncio.wait([f for _, f in sent], timeout=self.ack_timeout_s)
        ok: set[int] = set()
        for row_id, future in sent:
            spans.answered(row_id, future)
            if not future.done() or future.cancelled():
                continue
            outcome = future.exception()
            if outcome is None:
                ok.add(row_id)
            elif not is_retriable(outcome):
                refused[row_id] = outcome
            else:
                error = error or outcome
        if refused:
            await self.quarantine(conn, rows, refused)
        unsent = {row[0] for row in rows if row[1] in missing}
        failed = {row[0] for row in rows} - ok - set(refused) - unsent
        order = [
            (row[0], f"{row[1]}\x00{row[2]}")
            for row in rows
            if row[0] not in refused and row[0] not in unsent
        ]
        deletable = acked_prefix(order, failed)
        crash_point("relay.after_ack")
        await self.delete(conn, deletable)
        self.stats.published += len(deletable)
        count_published(len(deletable))
        self.stats.batches += 1
        if failed:
            first = next(row for row in rows if row[0] in failed)
            error = error or TimeoutError(f"no ack within {self.ack_timeout_s}s")
            raise PublishError(
                f"{len(failed)} of {len(rows)} records not acknowledged, first: outbox row {first[0]} "
                f"(topic {first[1]!r}, key {first[2]!r}): {error!r}"
            ) from error
        return len(rows)

    async def _set_aside_missing_topics(
        self, conn: psycopg.AsyncConnection[Any], buckets: Sequence[int]
    ) -> None:
        """Rows of a topic missing for too long go to `outbox_dead` with the reason (only those
        of `buckets`: the others are another relay's)."""
        for topic in self.missing_topics.given_up():
            of_topic = (list(buckets), topic, self.batch_size)
            while rows := await (await conn.execute(_OF_TOPIC, of_topic)).fetchall():
                reason = UnknownTopicOrPartitionError(
                    f"topic {topic!r} did not exist on the broker for {self.missing_topics.give_up_after_s:.0f}s"
                )
                await self.quarantine(conn, rows, dict.fromkeys((row[0] for row in rows), reason))
            self.missing_topics.forget(topic)

    async def quarantine(
        self,
        conn: psycopg.AsyncConnection[Any],
        rows: list[tuple[Any, ...]],
        refused: dict[int, BaseException],
    ) -> None:
        for row_id, topic, key, _, headers in rows:
            if row_id in refused:
                with log_context_of_headers(orjson.loads(headers)):
                    log.error(
                        "relay: Kafka refused outbox row %d (topic %r, key %r) for good: %r; moved to outbox_dead",
                        row_id,
                        topic,
                        key,
                        refused[row_id],
                    )
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO outbox_dead (id, message_id, topic, key, value, headers, created_at, error) "
                "SELECT o.id, o.message_id, o.topic, o.key, o.value, o.headers, o.created_at, e.error "
                "FROM outbox o JOIN unnest(%s::bigint[], %s::text[]) AS e(id, error) ON e.id = o.id "
                "ON CONFLICT (id) DO NOTHING",
                (list(refused), [repr(exc) for exc in refused.values()]),
            )
            await conn.execute(_DELETE, (list(refused),))
        self.stats.refused += len(refused)

    async def delete(self, conn: psycopg.AsyncConnection[Any], ids: list[int]) -> None:
        if ids:
            await conn.execute(_DELETE, (ids,))

    async def lag(self, conn: psycopg.AsyncConnection[Any] | None = None) -> RelayLag:
        """Rows waiting and the age of the oldest, in seconds."""
        if conn is None:
            async with self.database.autocommit() as own:
                return await outbox_lag(own)
        return await outbox_lag(conn)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

"""The consumer runtime: Kafka records to handlers, each in one Postgres transaction.

For every record: parse the envelope and the message; in one transaction insert the inbox
row (consumer group, message id) and run the handler, so a message redelivered after a
crash or a rebalance finds its inbox row and is skipped: its effect happens once. Offsets
are committed only after the Postgres commits they cover.

What cannot become a message (bad headers, unknown type, invalid payload, no handler) goes
to the dead-letter topic at once, with the reason in its headers. A handler that raises is
retried with backoff; after `max_attempts`, or at once when its error is not retriable
(`eventstore.is_retriable`: a bad statement, a refusal, `retriable = False`), the record is
dead-lettered too. Postgres being unreachable is not the message's fault: that is retried
until it comes back, and nothing is dead-lettered for it.
Records of one partition are handled in order.

Throughput comes from handling what one fetch brought together: one transaction, one inbox
statement for all of it, and a batch handler that may write for all of its messages at once
(the orchestrator decides on many sagas in a few statements). When anything in that
transaction fails, it is rolled back and the same records are handled again, partition by
partition, each record in a savepoint of its own, so the one that failed is found, retried
and, if need be, dead-lettered, and the others are applied. A deadlock or serialization
failure is nobody's fault: the batch simply runs again. A batch still running after
`slow_batch_s` is rolled back, and its partitions go on record by record, the records of one
key in order and those of different keys side by side, until they have caught up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import (
    Database,
    ErrorKind,
    StoreUnavailableError,
    Worker,
    classify_error,
    crash_point,
    driver_connection,
    is_retriable,
    translate_errors,
)
from outbox._errors import MessageDecodeError
from outbox._message import Envelope, MessageRegistry

log = logging.getLogger(__name__)

Handler = Callable[[AsyncConnection, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record decoded into its message, with the handler its type maps to."""

    handler: Handler
    message: BaseModel
    envelope: Envelope


# Handles several deliveries in the caller's transaction, in order (the default runs each
# one's handler in turn). Raising rolls all of them back; they are then handled one by one.
BatchHandler = Callable[[AsyncConnection, list[Delivery]], Awaitable[None]]

_INBOX = (
    "INSERT INTO inbox (consumer_group, message_id, message_type) VALUES (%s, %s, %s) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)
_INBOX_MANY = (
    "INSERT INTO inbox (consumer_group, message_id, message_type) "
    "SELECT %s, * FROM unnest(%b::uuid[], %b::text[]) ON CONFLICT DO NOTHING RETURNING message_id"
)


async def handle_in_turn(conn: AsyncConnection, deliveries: list[Delivery]) -> None:
    for d in deliveries:
        await d.handler(conn, d.message, d.envelope)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    collisions: int = 0  # batches rolled back by a deadlock or serialization failure, then redone
    slow_batches: int = 0  # batches that ran past slow_batch_s and went on in the background


class _Collided(Exception):
    """A batch lost a race with another transaction (ErrorKind.CONTENTION)."""


class _Stopping(Exception):
    """Raised inside a partition's work when the consumer stops mid-way."""


class Consumer(Worker):
    """A consumer group member. `handlers` maps message types (model classes) to handlers.

    `after_commit_point` names the crash point (see `eventstore.crash_point`) reached after
    each Postgres commit, before the offsets it covers are committed."""

    def __init__(
        self,
        database: Database,
        bootstrap_servers: str,
        *,
        group_id: str,
        topics: Sequence[str],
        registry: MessageRegistry,
        handlers: Mapping[type[BaseModel], Handler],
        batch_handler: BatchHandler = handle_in_turn,
        dead_letter_suffix: str = ".dlq",
        max_attempts: int = 5,
        retry_backoff_s: float = 0.1,
        retry_max_s: float = 5.0,
        max_records: int = 500,
        slow_batch_s: float = 1.0,
        consumer_options: dict[str, Any] | None = None,
        after_commit_point: str = "consumer.after_commit",
    ) -> None:
        if not topics:
            raise ValueError(f"consumer {group_id!r}: no topics to consume")
        if max_attempts < 1:
            raise ValueError(f"consumer {group_id!r}: max_attempts must be >= 1, got {max_attempts}")
        if slow_batch_s <= 0:
            raise ValueError(f"consumer {group_id!r}: slow_batch_s must be > 0, got {slow_batch_s}")
        if not dead_letter_suffix:
            raise ValueError(f"consumer {group_id!r}: dead_letter_suffix must not be empty")
        super().__init__()
        self.name = f"consumer:{group_id}"
        self.database = database
        self.engine = database.engine
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.topics = list(topics)
        self.registry = registry
        self.handlers = {registry.type_of_model(model).name: handler for model, handler in handlers.items()}
        self.batch_handler = batch_handler
        self.dead_letter_suffix = dead_letter_suffix
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retry_max_s = retry_max_s
        self.max_records = max_records
        self.slow_batch_s = slow_batch_s
        self.after_commit_point = after_commit_point
        self.consumer_options = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": 100,
            # A member that died holds its partitions until its session expires: keep that short.
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            **(consumer_options or {}),
        }
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batch_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        # Partitions that had a slow batch, handled record by record until they catch up.
        self._lanes: dict[TopicPartition, _Lane] = {}

    async def _open(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", enable_idempotence=True
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id, **self.consumer_options
        )
        self._consumer.subscribe(self.topics, listener=_FinishBatchOnRevoke(self._batch_lock, self._lanes))
        try:
            await self._producer.start()
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            await self._consumer.stop()
            raise

    async def _close(self) -> None:
        """Leave the group (its offsets are committed), then stop the dead-letter producer."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        try:
            while not self._stopping.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                except KafkaError as exc:
                    log.warning("consumer %s: fetch failed (%s); retrying", self.group_id, exc)
                    await self._backoff(self.retry_max_s)
                    continue
                for tp in [tp for tp in batch if tp in self._lanes]:
                    self._lanes[tp].feed(batch.pop(tp))
                if not batch:
                    continue
                async with self._batch_lock:
                    await self._handle_fetch(batch)
        finally:
            await asyncio.gather(
                *(lane.close() for lane in list(self._lanes.values())), return_exceptions=True
            )

    async def _handle_fetch(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Apply a fetch, commit its offsets.

        All its partitions' records go in one transaction (one commit; and two partitions of
        one process never hold row locks the other waits for). Undecodable records are left
        out and dead-lettered after the commit. When that transaction fails, partition by
        partition, one after the other (see `_handle_partition`). When it is still running
        after `slow_batch_s`, it is rolled back and its partitions go on in lanes (see
        `_Lane`): a slow record holds up the records of its own key and no others."""
        assert self._consumer is not None
        deliveries: list[Delivery] = []
        undecodable: list[tuple[ConsumerRecord[bytes, bytes], MessageDecodeError]] = []
        for records in batch.values():
            for record in records:
                try:
                    deliveries.append(self._parse(record))
                except MessageDecodeError as bad:
                    undecodable.append((record, bad))
        work = asyncio.create_task(self._apply_merged(deliveries))
        finished, _ = await asyncio.wait({work}, timeout=self.slow_batch_s)
        if not finished:
            self.stats.slow_batches += 1
            log.warning(
                "consumer %s: a batch took over %.1fs; %s go on record by record, keys side by side",
                self.group_id,
                self.slow_batch_s,
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in batch),
            )
            # Its transaction holds the row locks of every record before the slow one: roll
            # it back, and go on with these partitions in lanes (see _Lane).
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            for tp, records in batch.items():
                lane = self._lanes[tp] = _Lane(self, tp)
                lane.feed(records)
            return
        try:
            applied = work.result()
        except Exception:
            log.exception("consumer %s: unexpected failure; the records will be fetched again", self.group_id)
            await self._backoff(self.retry_max_s)
            await self._settle(batch, {tp: records[0].offset for tp, records in batch.items()})
            return
        if applied is None:  # stopping while Postgres was away
            done = {tp: records[0].offset for tp, records in batch.items()}
        elif not applied:
            done = {tp: await self._handle_partition(records) for tp, records in batch.items()}
        else:
            done = {tp: int(records[-1].offset) + 1 for tp, records in batch.items()}
            stopped = False
            for record, problem in undecodable:
                if not stopped:
                    try:
                        await self._dead_letter(
                            record, f"undecodable: {problem}", type(problem).__name__, attempts=0
                        )
                        continue
                    except _Stopping:
                        stopped = True
                # Not dead-lettered yet: its partition is fetched again from it (the records
                # after it that were applied find their inbox rows).
                tp = TopicPartition(record.topic, record.partition)
                done[tp] = min(done[tp], int(record.offset))
        await self._settle(batch, done)

    async def _apply_merged(self, deliveries: list[Delivery]) -> bool | None:
        """`_apply_deliveries` until it is not a collision nor Postgres away; None when the
        consumer stops while Postgres is away."""
        while True:
            try:
                return await self._apply_deliveries(deliveries)
            except _Collided:
                await self._collided()
            except StoreUnavailableError:
                if self._stopping.is_set():
                    return None
                await self._backoff(self.retry_max_s)

    async def _settle(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], done: dict[TopicPartition, int]
    ) -> None:
        """Commit the offsets of what was handled; fetch the unhandled rest again."""
        assert self._consumer is not None
        consumer = self._consumer
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            next_offset = done[tp]
            if next_offset > records[0].offset:
                offsets[tp] = next_offset
            if next_offset <= records[-1].offset and tp in consumer.assignment():
                consumer.seek(tp, next_offset)
        if offsets:
            crash_point(self.after_commit_point)
            try:
                async with self._commit_lock:
                    await consumer.commit(offsets)
            except KafkaError as exc:
                # The records come again after the rebalance; the inbox skips them.
                log.warning("consumer %s: offset commit failed (%s)", self.group_id, exc)

    async def _collided(self) -> None:
        """Not the records' fault: the same batch again once the other side is through."""
        self.stats.collisions += 1
        await asyncio.sleep(random.uniform(0.005, 0.05))

    async def _handle_partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> int:
        """Handle in order; returns the offset to commit (the one after the last handled).

        First all of it together (see the module docstring). When that fails: one
        transaction with a savepoint per record, up to the record that fails; that record
        alone, with its retries and, if need be, the dead-letter topic; then together again.
        """
        next_offset: int = records[0].offset
        i = 0
        together = True
        while i < len(records):
            try:
                if together:
                    done = await self._apply_together(records[i:])
                    if done is None:
                        together = False
                        continue
                else:
                    done = await self._apply_one_by_one(records[i:])
                if done:
                    i += done
                    next_offset = int(records[i - 1].offset) + 1
                    continue
                await self._handle_record(records[i])
                together = True
            except _Stopping:
                return next_offset
            except _Collided:
                await self._collided()
                continue
            except StoreUnavailableError:
                if self._stopping.is_set():
                    return next_offset
                await self._backoff(self.retry_max_s)
                continue
            except Exception:
                log.exception(
                    "consumer %s: unexpected failure; the record will be fetched again", self.group_id
                )
                await self._backoff(self.retry_max_s)
                return next_offset
            next_offset = int(records[i].offset) + 1
            i += 1
        return next_offset

    async def _apply_together(self, records: list[ConsumerRecord[bytes, bytes]]) -> int | None:
        """The decodable records up to the first that is not, in one transaction; returns how
        many were applied, or None when the transaction failed and was rolled back."""
        deliveries = []
        for record in records:
            try:
                deliveries.append(self._parse(record))
            except MessageDecodeError:
                break
        return len(deliveries) if await self._apply_deliveries(deliveries) else None

    async def _apply_deliveries(self, deliveries: list[Delivery]) -> bool:
        """In one transaction: the inbox rows, then the batch handler for the messages not
        seen before. False when it failed and was rolled back; raises _Collided when it lost
        a race with another transaction, StoreUnavailableError when Postgres is gone."""
        if not deliveries:
            return True
        fresh: list[Delivery] = []
        try:
            with translate_errors():
                async with self.engine.begin() as conn:
                    driver = await driver_connection(conn)
                    cur = await driver.execute(
                        _INBOX_MANY,
                        (
                            self.group_id,
                            [d.envelope.message_id for d in deliveries],
                            [d.envelope.message_type for d in deliveries],
                        ),
                    )
                    new = {row[0] for row in await cur.fetchall()}
                    for d in deliveries:
                        if d.envelope.message_id in new:  # the first of a message sent twice in one fetch
                            new.discard(d.envelope.message_id)
                            fresh.append(d)
                    if fresh:
                        await self.batch_handler(conn, fresh)
        except StoreUnavailableError:
            raise
        except Exception as exc:
            kind = classify_error(exc)
            if kind is ErrorKind.CONNECTION_LOST:
                raise
            if kind is ErrorKind.CONTENTION:
                raise _Collided() from exc
            log.info(
                "consumer %s: %d records failed together (%r); handling them one by one",
                self.group_id,
                len(deliveries),
                exc,
            )
            return False
        self.stats.handled += len(fresh)
        self.stats.duplicates += len(deliveries) - len(fresh)
        return True

    def _parse(self, record: ConsumerRecord[bytes, bytes]) -> Delivery:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            envelope = Envelope.from_kafka(record.headers)
            handler = self.handlers.get(envelope.message_type)
            if handler is None:
                raise MessageDecodeError(
                    f"no handler for message type {envelope.message_type!r} in consumer group {self.group_id!r}"
                )
            message = self.registry.decode(
                envelope.message_type, envelope.schema_version, record.value or b"", lambda: where
            )
        except MessageDecodeError:
            raise
        except Exception as exc:  # an upcaster or a validator that raised something else
            raise MessageDecodeError(f"cannot decode {where}: {exc!r}") from exc
        return Delivery(handler, message, envelope)

    async def _apply_one_by_one(self, records: list[ConsumerRecord[bytes, bytes]]) -> int:
        """Apply records in one transaction until one cannot be; returns how many committed."""
        handled = duplicates = 0
        with translate_errors():
            async with self.engine.begin() as conn:
                driver = await driver_connection(conn)
                for record in records:
                    try:
                        d = self._parse(record)
                    except MessageDecodeError:
                        break
                    try:
                        async with conn.begin_nested():
                            cur = await driver.execute(
                                _INBOX, (self.group_id, d.envelope.message_id, d.envelope.message_type)
                            )
                            if await cur.fetchone() is None:
                                duplicates += 1
                            else:
                                await d.handler(conn, d.message, d.envelope)
                                handled += 1
                    except Exception as exc:
                        if classify_error(exc) is ErrorKind.CONNECTION_LOST:
                            raise
                        break
        self.stats.handled += handled
        self.stats.duplicates += duplicates
        return handled + duplicates

    async def _handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            d = self._parse(record)
        except MessageDecodeError as exc:
            await self._dead_letter(record, f"undecodable: {exc}", type(exc).__name__, attempts=0)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._apply(d.handler, d.message, d.envelope)
                return
            except StoreUnavailableError as exc:
                attempt -= 1  # not the message's fault: wait for Postgres, count nothing
                log.warning("consumer %s: %s: Postgres unavailable (%s)", self.group_id, where, exc)
                delay = self.retry_max_s
            except Exception as exc:
                if classify_error(exc) is ErrorKind.CONTENTION:
                    attempt -= 1  # it lost a race with another transaction: not its fault either
                    self.stats.collisions += 1
                    delay = 0.05
                elif not is_retriable(exc) or attempt >= self.max_attempts:
                    await self._dead_letter(
                        record,
                        f"handler failed after {attempt} attempt(s): {exc!r}",
                        type(exc).__name__,
                        attempt,
                    )
                    return
                else:
                    self.stats.retries += 1
                    delay = min(self.retry_backoff_s * 2 ** (attempt - 1), self.retry_max_s)
                    log.warning("consumer %s: %s attempt %d failed (%r)", self.group_id, where, attempt, exc)
            if self._stopping.is_set():
                raise _Stopping()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _apply(self, handler: Handler, message: BaseModel, envelope: Envelope) -> None:
        with translate_errors():
            async with self.engine.begin() as conn:
                driver = await driver_connection(conn)
                cur = await driver.execute(
                    _INBOX, (self.group_id, envelope.message_id, envelope.message_type)
                )
                if await cur.fetchone() is None:
                    self.stats.duplicates += 1
                    return
                await handler(conn, message, envelope)
        self.stats.handled += 1

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error_type: str, attempts: int
    ) -> None:
        assert self._producer is not None
        topic = f"{record.topic}{self.dead_letter_suffix}"
        headers = [
            *record.headers,
            ("dlq_reason", reason[:4000].encode()),
            ("dlq_error_type", error_type.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_consumer_group", self.group_id.encode()),
            ("dlq_attempts", str(attempts).encode()),
        ]
        log.error(
            "consumer %s: %s[%d]@%d to %s: %s",
            self.group_id,
            record.topic,
            record.partition,
            record.offset,
            topic,
            reason,
        )
        delay = self.retry_backoff_s
        value = record.value
        while True:
            try:
                await asyncio.wait_for(
                    self._producer.send_and_wait(topic, value=value, key=record.key, headers=headers),
                    timeout=self.retry_max_s * 6,
                )
                self.stats.dead_lettered += 1
                return
            except (KafkaError, TimeoutError) as exc:
                where = f"{record.topic}[{record.partition}]@{record.offset} -> {topic}"
                if isinstance(exc, KafkaError) and not is_retriable(exc) and value is not None:
                    # Say too large for the dead-letter topic: keep the reason and the headers at least.
                    log.error(
                        "consumer %s: %s refused (%r); dead-lettering without the value",
                        self.group_id,
                        where,
                        exc,
                    )
                    value = None
                    headers = [*headers, ("dlq_value_dropped", repr(exc).encode())]
                    continue
                log.warning(
                    "consumer %s: dead-letter publish %s failed (%r); retrying", self.group_id, where, exc
                )
                if self._stopping.is_set():
                    raise _Stopping() from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)


class _Lane:
    """A partition whose batch was slow, until it catches up: each record in a transaction of
    its own; the records of one key in order, those of different keys side by side (up to
    `concurrency` at once), so a slow record holds up its own key and no other.

    The partition's committed offset is the lowest record not done yet: what comes again
    after a crash and was done finds its inbox row. The lane ends when nothing is left in
    it; the partition's next fetch goes the usual way. A partition with more than
    4 * `max_records` records waiting is paused until half of them are done.
    """

    def __init__(self, consumer: Consumer, tp: TopicPartition, concurrency: int = 16) -> None:
        self.consumer = consumer
        self.tp = tp
        self.waiting: dict[bytes | None, deque[ConsumerRecord[bytes, bytes]]] = {}
        self.outstanding: set[int] = set()  # offsets fed and not done
        self.next_offset = 0  # after the last record fed
        self.committed = -1
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(concurrency)
        self.closing = False
        self.limit = 4 * consumer.max_records
        self._ending: asyncio.Task[None] | None = None

    def feed(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        kafka = self.consumer._consumer
        assert kafka is not None
        for record in records:
            self.outstanding.add(int(record.offset))
            self.next_offset = int(record.offset) + 1
            queue = self.waiting.get(record.key)
            if queue is None:
                self.waiting[record.key] = deque([record])
                task = asyncio.create_task(self._run_key(record.key))
                self.tasks.add(task)
                task.add_done_callback(self._task_done)
            else:
                queue.append(record)
        if len(self.outstanding) >= self.limit:
            kafka.pause(self.tp)

    async def _run_key(self, key: bytes | None) -> None:
        queue = self.waiting[key]
        while not self.closing:
            if not queue:
                del self.waiting[key]  # in the same step as the check: `feed` starts a new task
                return
            record = queue[0]
            try:
                async with self.slots:
                    if self.closing:
                        return
                    await self.consumer._handle_record(record)
            except _Stopping:
                self.closing = True
                return
            except Exception:
                log.exception(
                    "consumer %s: unexpected failure; the record will be fetched again",
                    self.consumer.group_id,
                )
                self.closing = True  # the lane ends here; the partition is fetched again from it
                return
            queue.popleft()
            self.outstanding.discard(int(record.offset))
            crash_point(self.consumer.after_commit_point)
            await self._commit()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self._ending = asyncio.get_running_loop().create_task(self._end())

    async def _commit(self) -> None:
        kafka = self.consumer._consumer
        assert kafka is not None
        try:
            async with self.consumer._commit_lock:  # in turn: the committed offset only grows
                low = min(self.outstanding) if self.outstanding else self.next_offset
                if low > self.committed:
                    await kafka.commit({self.tp: low})
                    self.committed = low
        except KafkaError as exc:
            log.warning("consumer %s: offset commit failed (%s)", self.consumer.group_id, exc)
        if self.tp in kafka.paused() and len(self.outstanding) < self.limit // 2:
            kafka.resume(self.tp)

    async def _end(self) -> None:
        """No task left: either everything fed is done, or the lane is closing."""
        if self.tasks or self.consumer._lanes.get(self.tp) is not self:
            return
        if self.outstanding and not self.closing:
            return  # cannot happen: each key with records outstanding has its task
        kafka = self.consumer._consumer
        assert kafka is not None
        del self.consumer._lanes[self.tp]
        await self._commit()
        if self.tp in kafka.assignment():
            if self.outstanding and not self.consumer._stopping.is_set():
                kafka.seek(self.tp, min(self.outstanding))  # what was not done comes again
            kafka.resume(self.tp)

    async def close(self) -> None:
        """Finish the records in flight, commit, and leave the rest to be fetched again."""
        self.closing = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._end()


class _FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions go to another member, let their batches in flight finish and commit."""

    def __init__(self, lock: asyncio.Lock, lanes: dict[TopicPartition, _Lane]) -> None:
        self._lock = lock
        self._lanes = lanes

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        going = set(revoked)
        async with self._lock:
            await asyncio.gather(
                *(lane.close() for tp, lane in list(self._lanes.items()) if tp in going),
                return_exceptions=True,
            )

    async def on_partitions_assigned(self, assigned: object) -> None:
        pass

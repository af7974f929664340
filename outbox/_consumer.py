"""The consumer runtime: Kafka records to handlers, each in one Postgres transaction.

This module is the Kafka side: the fetch loop, the group membership and the offset commits.
Offsets are committed only after the Postgres commits they cover. Applying what a fetch
brought (the inbox, the handlers, retries) is `outbox._apply`; a partition whose batch was
slow goes on in a lane (`outbox._lanes`); what cannot be applied goes to the dead-letter
topic (`outbox._dead_letters`), which the consumer creates when missing as it starts; a dead
letter Kafka does not take holds its partition, and only that one. Records of one partition
are handled in order. Old inbox rows are deleted as they pass the retention (`outbox._inbox`).

Throughput comes from handling what one fetch brought together: one transaction, one inbox
statement for all of it, and a batch handler that may write for all of its messages at once
(the orchestrator decides on many sagas in a few statements). When anything in that
transaction fails, it is rolled back and the same records are handled again, partition by
partition, so the one that failed is found, retried and, if need be, dead-lettered, and the
others are applied. A batch still running after `slow_batch_s` is rolled back, and its
partitions go on record by record, the records of one key in order and those of different
keys side by side, until they have caught up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from eventstore import Database, Migration, OutageLog, Worker, check_database, crash_point
from outbox._apply import Applier, offset_after
from outbox._broker import broker_unavailable, watch_broker
from outbox._consumer_checks import check_dead_letters_and_inbox, check_options
from outbox._dead_letters import DeadLetters
from outbox._delivery import BatchHandler, ConsumerStats, Decoded, Delivery, Handler, Record, handle_in_turn
from outbox._errors import MessageDecodeError
from outbox._inbox import keep_trimmed
from outbox._kafka_check import check_kafka
from outbox._kafka_connection import KafkaConnection, as_connection
from outbox._lanes import FinishBatchOnRevoke, Lanes
from outbox._message import MessageRegistry
from outbox._outbox import outbox_migrations
from outbox._topic_admin import check_topics

log = logging.getLogger(__name__)

Fetch = dict[TopicPartition, list[Decoded]]

WEEK_S = 7 * 24 * 3600.0
BROKER_PROBE_TIMEOUT_S = 2.0


class Consumer(Worker):
    """A consumer group member. `handlers` maps message types (model classes) to handlers.

    Each topic's dead-letter topic (`<topic><dead_letter_suffix>`) is created at start when
    missing, with its topic's partitions and `dead_letter_replication_factor`. The group's
    inbox rows older than `inbox_retention_s` are deleted. `after_commit_point` names the
    crash point (see `eventstore.crash_point`) reached after Postgres commits, before the
    offsets they cover are committed. `schema`: the migrations `start()` checks are applied
    before it joins the group (the outbox's by default). Every `broker_watch_s` (None: never)
    it asks its broker for metadata, to say when it lost it (aiokafka retries by itself)."""

    def __init__(
        self,
        database: Database,
        kafka: str | KafkaConnection,
        *,
        group_id: str,
        topics: Sequence[str],
        registry: MessageRegistry,
        handlers: Mapping[type[BaseModel], Handler],
        batch_handler: BatchHandler = handle_in_turn,
        dead_letter_suffix: str = ".dlq",
        dead_letter_replication_factor: int = 1,
        inbox_retention_s: float = WEEK_S,
        max_attempts: int = 5,
        retry_backoff_s: float = 0.1,
        retry_max_s: float = 5.0,
        max_records: int = 500,
        slow_batch_s: float = 1.0,
        consumer_options: dict[str, Any] | None = None,
        after_commit_point: str = "consumer.after_commit",
        schema: Sequence[Migration] | None = None,
        broker_watch_s: float | None = 5.0,
    ) -> None:
        check_options(group_id, topics, max_attempts, slow_batch_s, dead_letter_suffix)
        check_dead_letters_and_inbox(group_id, dead_letter_replication_factor, inbox_retention_s)
        super().__init__()
        self.name = f"consumer:{group_id}"
        self.database = database
        self.engine = database.engine
        self.kafka = as_connection(kafka)
        self.bootstrap_servers = self.kafka.bootstrap_servers
        self.group_id = group_id
        self.topics = list(topics)
        self.registry = registry
        self.handlers = {registry.type_of_model(model).name: handler for model, handler in handlers.items()}
        self.batch_handler = batch_handler
        self.dead_letter_suffix = dead_letter_suffix
        self.dead_letter_replication_factor = dead_letter_replication_factor
        self.inbox_retention_s = inbox_retention_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retry_max_s = retry_max_s
        self.max_records = max_records
        self.slow_batch_s = slow_batch_s
        self.after_commit_point = after_commit_point
        self.schema = list(outbox_migrations() if schema is None else schema)
        if broker_watch_s is not None and broker_watch_s <= 0:
            raise ValueError(
                f"consumer {group_id!r}: broker_watch_s must be > 0 or None, got {broker_watch_s}"
            )
        self.broker_watch_s = broker_watch_s
        # A member that died holds its partitions until its session expires: the connection's
        # session_timeout_ms (6 s unless set) says how long.
        self.consumer_options = self.kafka.consumer_options(
            f"consumer-{group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            **(consumer_options or {}),
        )
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._batch_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._dead_letters = DeadLetters(
            self.kafka,
            group_id=group_id,
            suffix=dead_letter_suffix,
            replication_factor=dead_letter_replication_factor,
            retry_backoff_s=retry_backoff_s,
            retry_max_s=retry_max_s,
            stats=self.stats,
            stopping=self._is_stopping,
            on_sent=self._dead_lettered_late,
        )
        self._applier = self._make_applier()
        # Partitions that had a slow batch, handled record by record until they catch up.
        self._lanes = Lanes(
            name=group_id,
            apply=self._apply_in_lane,
            commit=self._commit,
            hold_back=self._hold_back,
            give_back=self._give_back,
            limit=4 * max_records,
            apply_together=self._apply_together_in_lane,
        )

    def _make_applier(self) -> Applier:
        return Applier(
            self.database,
            group_id=self.group_id,
            registry=self.registry,
            handlers=self.handlers,
            batch_handler=self.batch_handler,
            stats=self.stats,
            dead_letter=self._dead_letters.send,
            stopping=self._is_stopping,
            backoff=self._backoff,
            max_attempts=self.max_attempts,
            retry_backoff_s=self.retry_backoff_s,
            retry_max_s=self.retry_max_s,
        )

    def _is_stopping(self) -> bool:
        return self._stopping.is_set()

    async def _open(self) -> None:
        """Check Postgres and the schema, then join the group: a consumer that could not apply
        what it fetches would only hold partitions a healthy member could take. Raises
        `DatabaseUnreachableError` or `BrokerUnavailableError` when a service is away (try
        again later), `DatabaseConfigError` or `SchemaError` when the database is wrong."""
        await check_database(self.database, self.schema)
        await check_kafka(self.kafka)
        try:
            await self._dead_letters.start()
            # Before a metadata request names the topics (a lenient broker would create them).
            await check_topics(self.kafka, self.topics, who=self.name)
            self._consumer = AIOKafkaConsumer(group_id=self.group_id, **self.consumer_options)
            self._consumer.subscribe(
                self.topics, listener=FinishBatchOnRevoke(self._batch_lock, self._lanes, self._dead_letters)
            )
            await self._dead_letters.provide(self.topics)
            await self._consumer.start()
        except BaseException as exc:
            await self._dead_letters.stop()
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await consumer.stop()
            gone = broker_unavailable(self.bootstrap_servers, exc)
            if gone is not None and gone is not exc:
                raise gone from exc
            raise

    async def _close(self) -> None:
        """Leave the group (its offsets are committed), then stop the dead-letter producer."""
        if self._consumer is not None:
            await self._consumer.stop()
        await self._dead_letters.stop()

    async def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether the broker answers a metadata request from this consumer within `timeout_s`
        (False before `start()`). Never raises."""
        consumer = self._consumer
        if consumer is None:
            return False
        try:
            # A metadata request for this consumer's own topics: `consumer.topics()` would ask
            # for every topic on the broker, which costs the broker and us far more.
            client = consumer._client  # aiokafka keeps its client private
            return bool(await asyncio.wait_for(client.force_metadata_update(), timeout_s))
        except (KafkaError, TimeoutError, OSError):
            return False

    async def _run(self) -> None:
        side_tasks = [
            asyncio.create_task(self._dead_letters.retry_waiting()),
            asyncio.create_task(
                keep_trimmed(self.database, self.group_id, self.inbox_retention_s, self.stats)
            ),
        ]
        if self.broker_watch_s is not None:
            watch = watch_broker(
                lambda: self.broker_reachable(BROKER_PROBE_TIMEOUT_S),
                OutageLog(log, retry_s=self.broker_watch_s),
                f"Kafka at {self.bootstrap_servers}",
                f"no answer to consumer {self.group_id}'s metadata request within {BROKER_PROBE_TIMEOUT_S:g}s",
                lambda: self._backoff(self.broker_watch_s or 0.0),
                self._is_stopping,
            )
            side_tasks.append(asyncio.create_task(watch))
        try:
            await self._fetch_and_handle()
        finally:
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            self._dead_letters.abandon()  # lanes waiting on one end now
            await self._lanes.close()

    async def _fetch_and_handle(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except KafkaError as exc:
                log.warning("consumer %s: fetch failed (%s); retrying", self.group_id, exc)
                await self._backoff(self.retry_max_s)
                continue
            fetch = {tp: [self._applier.decode(r) for r in records] for tp, records in batch.items()}
            for tp in [tp for tp in fetch if tp in self._lanes]:
                self._lanes.feed(tp, fetch.pop(tp))
            if not fetch:
                continue
            async with self._batch_lock:
                await self._handle_fetch(fetch)

    async def _handle_fetch(self, fetch: Fetch) -> None:
        """Apply a fetch, commit its offsets.

        All its partitions' records go in one transaction (one commit; and two partitions of
        one process never hold row locks the other waits for). Undecodable records are left
        out and dead-lettered after the commit. When that transaction fails, partition by
        partition, one after the other. When it is still running after `slow_batch_s`, it
        is rolled back and its partitions go on in lanes: a slow record holds up the records
        of its own key and no others."""
        work = asyncio.create_task(self._applier.apply_fetch([d for items in fetch.values() for d in items]))
        finished, _ = await asyncio.wait({work}, timeout=self.slow_batch_s)
        if not finished:
            await self._to_lanes(work, fetch)
            return
        try:
            applied = work.result()
        except Exception:
            log.exception("consumer %s: unexpected failure; the records will be fetched again", self.group_id)
            await self._backoff(self.retry_max_s)
            applied = None
        if applied is None:  # stopping while Postgres was away, or the failure above
            done = {tp: items[0].offset for tp, items in fetch.items()}
        elif not applied:
            done = {tp: await self._applier.apply_partition(items) for tp, items in fetch.items()}
        else:
            done = await self._dead_letter_undecodable(fetch)
        await self._settle(fetch, done)

    async def _to_lanes(self, work: asyncio.Task[bool | None], fetch: Fetch) -> None:
        self.stats.slow_batches += 1
        log.warning(
            "consumer %s: a batch took over %.1fs; %s go on record by record, keys side by side",
            self.group_id,
            self.slow_batch_s,
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in fetch),
        )
        # Its transaction holds the row locks of every record before the slow one: roll it
        # back, and go on with these partitions in lanes.
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        for tp, items in fetch.items():
            self._lanes.feed(tp, items)

    async def _dead_letter_undecodable(self, fetch: Fetch) -> dict[TopicPartition, int]:
        """After the fetch was applied: what it could not decode. Returns the offsets done."""
        done = {tp: offset_after(items, len(items)) for tp, items in fetch.items()}
        for tp, items in fetch.items():
            for item in items:
                if not isinstance(item.result, MessageDecodeError):
                    continue
                if self._is_stopping() or not await self._applier.apply_record(item):
                    # Not dead-lettered (yet): its partition is fetched again from it (the
                    # records after it that were applied find their inbox rows).
                    done[tp] = item.offset
                    break
        return done

    async def _settle(self, fetch: Fetch, done: dict[TopicPartition, int]) -> None:
        """Commit the offsets of what was handled; fetch the unhandled rest again."""
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for tp, items in fetch.items():
            next_offset = done[tp]
            if next_offset > items[0].offset:
                offsets[tp] = next_offset
            if next_offset <= items[-1].offset and tp in self._consumer.assignment():
                self._consumer.seek(tp, next_offset)
                if self._dead_letters.waiting_in(tp):
                    self._consumer.pause(tp)  # until `_dead_lettered_late`
        if offsets:
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit offsets whose records' Postgres transactions have committed."""
        assert self._consumer is not None
        crash_point(self.after_commit_point)
        try:
            async with self._commit_lock:
                await self._consumer.commit(offsets)
        except KafkaError as exc:
            # The records come again after the rebalance; the inbox skips them.
            log.warning("consumer %s: offset commit failed (%s)", self.group_id, exc)
            return False
        return True

    async def _apply_in_lane(self, item: Decoded) -> bool:
        """In a lane, a record whose dead letter waits holds up its key until it is sent."""
        return await self._applier.apply_record(item) or await self._dead_letters.wait(item.record)

    async def _apply_together_in_lane(self, items: list[Decoded]) -> bool:
        """In a lane, records of keys with nothing held up: in one transaction, as a fetch is.
        False (all rolled back) when one cannot be decoded, when that failed for a reason of
        the records' own, or when it took over `slow_batch_s`: then they go one by one."""
        if not all(isinstance(item.result, Delivery) for item in items):
            return False
        work = asyncio.create_task(self._applier.apply_fetch(items))
        try:
            finished, _ = await asyncio.wait({work}, timeout=self.slow_batch_s)
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if not finished:
            self.stats.slow_batches += 1
            return False
        return work.result() is True

    async def _dead_lettered_late(self, record: Record) -> None:
        """A dead letter that waited went through: its partition, held at it, goes on after it.
        (In a lane, the record's key was waiting for it and goes on by itself.)"""
        assert self._consumer is not None
        tp = TopicPartition(record.topic, record.partition)
        async with self._batch_lock:  # after the `_settle` that paused the partition
            if tp in self._lanes or tp not in self._consumer.assignment():
                return
            await self._commit({tp: record.offset + 1})
            self._consumer.seek(tp, record.offset + 1)
            self._consumer.resume(tp)

    def _hold_back(self, tp: TopicPartition) -> None:
        assert self._consumer is not None
        self._consumer.pause(tp)

    def _give_back(self, tp: TopicPartition, rewind_to: int | None) -> None:
        assert self._consumer is not None
        if tp not in self._consumer.assignment():
            return
        if rewind_to is not None and not self._stopping.is_set():
            self._consumer.seek(tp, rewind_to)  # what was not done comes again
        self._consumer.resume(tp)

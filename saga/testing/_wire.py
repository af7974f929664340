"""The Kafka side of one exploring run: every record on the system's topics seen from the
start, a record put on its topic a second time, and whether the consumer groups caught up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

Seen = Callable[["Wire", ConsumerRecord[bytes, bytes]], Awaitable[None]]


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


class Wire:
    """Reads `topics` from their beginning, outside any consumer group, and awaits
    `seen(wire, record)` for each record, in order per partition."""

    def __init__(self, bootstrap: str, topics: Sequence[str], seen: Seen) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.seen = seen
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._parts: list[TopicPartition] = []
        self._done: dict[TopicPartition, int] = {}  # next offset whose `seen` has not finished
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        await self._admin.start()
        self._parts = [
            TopicPartition(t, p) for t in self.topics for p in sorted(await self._producer.partitions_for(t))
        ]
        self._consumer.assign(self._parts)
        await self._consumer.seek_to_beginning(*self._parts)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        """Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for stop in (self._consumer.stop, self._producer.stop, self._admin.close):
            with contextlib.suppress(Exception):
                await stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            for tp, records in batch.items():
                for record in records:
                    await self.seen(self, record)
                    self._done[tp] = record.offset + 1

    async def send_again(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """The same key, value and headers on the same topic and partition: a real duplicate."""
        await self._producer.send_and_wait(
            record.topic,
            value=record.value,
            key=record.key,
            headers=list(record.headers),
            partition=record.partition,
        )

    async def caught_up(self) -> bool:
        """Whether every record on the topics so far has been seen."""
        self._raise_failure()
        ends = await self._consumer.end_offsets(self._parts)
        return all(self._done.get(tp, 0) >= end for tp, end in ends.items())

    async def lags(self, groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """Records on its topics each consumer group has not committed (group -> count)."""
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(self._parts)
        lags: dict[str, int] = {}
        for group, topics in groups.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            lags[group] = sum(
                max(end - _offset(committed.get(tp)), 0) for tp, end in ends.items() if tp.topic in topics
            )
        return lags

    def _raise_failure(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            failure = self._task.exception()
            if failure is not None:
                raise AssertionError(
                    f"saga.testing: reading the system's topics failed: {failure!r}"
                ) from failure


def _offset(committed: Any) -> int:
    return 0 if committed is None or committed.offset < 0 else int(committed.offset)

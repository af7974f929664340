"""A poison record whose dead-letter topic cannot be written: what the consumer does meanwhile,
and after the topic is fixed. Run against several ways of breaking the dead-letter topic."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from outbox import Consumer, Envelope, Handler, MessageRegistry, Outbox
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping
from tests.outbox.test_consumer import apply_ping, send_pings


class Refused(Exception):
    retriable = False


async def apply_or_refuse(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
    if message.seq < 0:
        raise Refused(f"ping {message.key}/{message.seq} is refused")
    await apply_ping(conn, message, envelope)


async def applied(engine: AsyncEngine) -> set[tuple[str, int]]:
    async with engine.connect() as conn:
        return {(r.key, r.seq) for r in await conn.execute(text("SELECT key, seq FROM effects"))}


async def committed(bootstrap: str, group_id: str, topic: str) -> list[int | None]:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await probe.start()
    try:
        return [await probe.committed(TopicPartition(topic, p)) for p in (0, 1)]
    finally:
        await probe.stop()


def errors(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


class Scenario:
    """Topic of 2 partitions. Partition 0: a good ping, the poison, a good ping of the poison's
    key. Partition 1: three good pings, sent once the poison's dead letter waits."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        database: Database,
        bootstrap: str,
        outbox: Outbox,
        registry: MessageRegistry,
        topic: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.engine = engine
        self.database = database
        self.bootstrap = bootstrap
        self.outbox = outbox
        self.registry = registry
        self.topic = topic
        self.caplog = caplog
        self.group_id = f"held-{topic}"

    def consumer(self, handler: Handler = apply_or_refuse, **options: Any) -> Consumer:
        return Consumer(
            self.database,
            self.bootstrap,
            group_id=self.group_id,
            topics=[self.topic],
            registry=self.registry,
            handlers={Ping: handler},
            retry_backoff_s=0.05,
            retry_max_s=0.5,
            **options,
        )

    # A topic too small for the record refuses it whole, and then without its value: if it is
    # made roomy between those two sends, the copy without the value is the one that lands
    # (the documented fallback, with `dlq_value_dropped`). Set for a topic that is too small.
    value_may_drop = False

    async def run(self, consumer: Consumer, make_writable: Callable[[], Awaitable[None]]) -> None:
        topic, dlq = self.topic, f"{self.topic}.dlq"
        await consumer.start()
        try:
            pings = [Ping(key="a", seq=0), Ping(key="a", seq=-1), Ping(key="a", seq=1)]
            await send_pings(self.bootstrap, self.outbox, topic, pings, partition=0)
            await wait_for(lambda: consumer.stats.dead_letters_waiting == 1, 60, "the dead letter to wait")
            await send_pings(self.bootstrap, self.outbox, topic, [Ping(key="b", seq=s) for s in range(3)], 1)
            await wait_for(
                lambda: self.has({("b", 0), ("b", 1), ("b", 2)}), 60, "partition 1 handled meanwhile"
            )
            assert await applied(self.engine) == {("a", 0), ("b", 0), ("b", 1), ("b", 2)}
            await wait_for(self._committed([1, 3]), 30, "partition 0 committed up to the poison only")
            waiting = errors(self.caplog, f"cannot write to the dead-letter topic {dlq}")
            assert len(waiting) == 1, waiting  # once, not once per try
            assert f"{topic}[0]@1 waits for it" in waiting[0]
            assert consumer.stats.dead_lettered == 0

            await make_writable()
            await wait_for(lambda: self.has({("a", 1)}), 60, "partition 0 to go on after the fix")
            await wait_for(self._committed([3, 3]), 30, "both partitions committed to their ends")
            assert consumer.stats.dead_lettered == 1
            assert consumer.stats.dead_letters_waiting == 0
            assert consumer.stats.handled == 5
        finally:
            await consumer.stop()
        async with Collector(self.bootstrap, [dlq]) as dead:
            await wait_for(lambda: len(dead.records) >= 1, 30, "the dead letter")
        assert len(dead.records) == 1
        assert (dead.headers(0)["dlq_topic"], dead.headers(0)["dlq_partition"]) == (topic, "0")
        assert dead.headers(0)["dlq_offset"] == "1"
        assert dead.headers(0)["dlq_reason"].startswith("handler failed after 1 attempt(s): Refused(")
        assert_dead_letter_value(dead, 0, Ping(key="a", seq=-1), may_drop=self.value_may_drop)

    async def has(self, wanted: set[tuple[str, int]]) -> bool:
        return wanted <= await applied(self.engine)

    def _committed(self, offsets: list[int]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await committed(self.bootstrap, self.group_id, self.topic) == offsets

        return check


def assert_dead_letter_value(dead: Collector, i: int, expected: Ping, *, may_drop: bool) -> None:
    """The dead letter holds the poison's value; or, where the topic refused the value (`may_drop`),
    no value and `dlq_value_dropped` saying the record was too large."""
    record, headers = dead.records[i], dead.headers(i)
    if may_drop and record.value is None:
        assert "MessageSizeTooLarge" in headers["dlq_value_dropped"]
        return
    assert Ping.model_validate_json(record.value) == expected
    assert "dlq_value_dropped" not in headers

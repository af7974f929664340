"""Dead-letter topics on a broker that, as in production, creates no topic by itself.

The consumer creates `<topic>.dlq` when it starts; when it cannot, it says so once and goes
on, and a poison record then holds only its own partition until the topic exists. And the
consumer tells whether it can reach the broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import Consumer, MessageRegistry, Outbox
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, wait_for
from tests.outbox.dead_letter_scenario import Scenario, errors
from tests.outbox.messages import Ping
from tests.outbox.test_consumer import apply_ping, send_pings


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, name: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([name])
    finally:
        await admin.close()
    return len(described["partitions"]) if described["error_code"] == 0 else None


async def test_a_missing_dead_letter_topic_is_created_at_start_and_poison_lands_there(
    effects: AsyncEngine, database: Database, outbox: Outbox, registry: MessageRegistry, strict_broker: Any
) -> None:
    bootstrap = strict_broker.bootstrap()
    await create_topic(bootstrap, "created", partitions=3)
    assert await partitions_of(bootstrap, "created.dlq") is None
    consumer = Consumer(
        database,
        bootstrap,
        group_id="created",
        topics=["created"],
        registry=registry,
        handlers={Ping: apply_ping},
    )
    await consumer.start()
    try:
        assert await partitions_of(bootstrap, "created.dlq") == 3
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("created", b"\x00garbage", key=b"k")
        finally:
            await producer.stop()
        await send_pings(bootstrap, outbox, "created", [Ping(key="k", seq=1)])
        await wait_for(
            lambda: (consumer.stats.dead_lettered, consumer.stats.handled) == (1, 1), 60, "poison and ping"
        )
    finally:
        await consumer.stop()
    async with Collector(bootstrap, ["created.dlq"]) as dead:
        await wait_for(lambda: len(dead.records) == 1, 30, "the dead letter")
    assert dead.records[0].value == b"\x00garbage"
    assert dead.headers(0)["dlq_topic"] == "created"


async def test_on_a_broker_that_creates_topics_itself_the_dead_letter_topic_has_its_topics_partitions(
    database: Database, registry: MessageRegistry, kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    """The shared test broker auto-creates topics: asking it about the missing dead-letter topic
    by name would create it with one partition."""
    topic = await new_topic("autocreating", partitions=3)
    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=topic,
        topics=[topic],
        registry=registry,
        handlers={Ping: apply_ping},
    )
    await consumer.start()
    try:
        assert await partitions_of(kafka_bootstrap, f"{topic}.dlq") == 3
    finally:
        await consumer.stop()


async def test_a_dead_letter_topic_that_cannot_be_created_holds_only_its_partition_until_it_exists(
    effects: AsyncEngine,
    database: Database,
    outbox: Outbox,
    registry: MessageRegistry,
    strict_broker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replication factor the single broker cannot give: the broker refuses the topic."""
    bootstrap = strict_broker.bootstrap()
    await create_topic(bootstrap, "refused", partitions=2)
    scenario = Scenario(
        engine=effects,
        database=database,
        bootstrap=bootstrap,
        outbox=outbox,
        registry=registry,
        topic="refused",
        caplog=caplog,
    )
    consumer = scenario.consumer(dead_letter_replication_factor=3)

    async def create_it() -> None:
        await create_topic(bootstrap, "refused.dlq", partitions=2)

    await scenario.run(consumer, create_it)
    [refusal] = errors(caplog, "refused.dlq does not exist and could not be created")
    assert "InvalidReplicationFactor" in refusal
    assert refusal.endswith("create it")
    # The refusal at start, the poison's own line, the one that it waits: no line per try.
    assert len(errors(caplog, "refused.dlq")) == 3, errors(caplog, "refused.dlq")


async def test_broker_reachable_says_whether_the_broker_answers(
    database: Database, registry: MessageRegistry, strict_broker: Any
) -> None:
    bootstrap = strict_broker.bootstrap()
    await create_topic(bootstrap, "probed", partitions=1)
    consumer = Consumer(
        database,
        bootstrap,
        group_id="probed",
        topics=["probed"],
        registry=registry,
        handlers={Ping: apply_ping},
    )
    assert await consumer.broker_reachable() is False  # not started
    await consumer.start()
    try:
        assert await consumer.broker_reachable() is True
        await asyncio.to_thread(strict_broker.down)
        try:
            assert await consumer.broker_reachable(timeout_s=1.0) is False
        finally:
            await asyncio.to_thread(strict_broker.up)
        await wait_for(consumer.broker_reachable, 60, "the broker to answer again")
    finally:
        await consumer.stop()


def test_strict_broker_has_auto_creation_off(strict_broker: Any) -> None:
    assert "auto.create.topics.enable=false" in Path(strict_broker.config).read_text()

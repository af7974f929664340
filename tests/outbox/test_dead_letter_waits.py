"""A dead-letter topic that refuses the dead letter holds up only the poison's partition (or, in
a lane, only its key) until it takes it; nothing is lost, nothing skipped."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from outbox import Consumer, Envelope, MessageRegistry, Outbox
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, wait_for
from tests.outbox.dead_letter_scenario import (
    Scenario,
    applied,
    apply_or_refuse,
    assert_dead_letter_value,
    committed,
    errors,
)
from tests.outbox.messages import Ping
from tests.outbox.test_consumer import send_pings

TINY = "64"  # bytes: no dead letter fits
ROOMY = "1048588"


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def tiny_dead_letter_topic(admin: AIOKafkaAdminClient, topic: str) -> Callable[[], Awaitable[None]]:
    """Create `<topic>.dlq` too small for any record; returns what makes it roomy."""
    dlq = f"{topic}.dlq"
    await admin.create_topics(
        [NewTopic(dlq, num_partitions=2, replication_factor=1, topic_configs={"max.message.bytes": TINY})]
    )

    async def make_roomy() -> None:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, dlq, {"max.message.bytes": ROOMY})]
        )

    return make_roomy


async def test_a_dead_letter_topic_that_refuses_the_record_holds_only_its_partition(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
    admin: AIOKafkaAdminClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = await new_topic("refusing-dlq", partitions=2)
    make_roomy = await tiny_dead_letter_topic(admin, topic)
    try:
        scenario = Scenario(
            engine=effects,
            database=database,
            bootstrap=kafka_bootstrap,
            outbox=outbox,
            registry=registry,
            topic=topic,
            caplog=caplog,
        )
        scenario.value_may_drop = True
        await scenario.run(scenario.consumer(), make_roomy)
    finally:
        await admin.delete_topics([f"{topic}.dlq"])


async def test_in_a_lane_a_waiting_dead_letter_holds_only_its_key(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
    admin: AIOKafkaAdminClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every batch is slow, so the partition goes on in a lane: the poison's key waits for its
    dead letter, the partition's other key goes on."""
    topic = await new_topic("lane-dlq", partitions=2)
    make_roomy = await tiny_dead_letter_topic(admin, topic)

    async def slow(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        await conn.execute(text("SELECT pg_sleep(0.05)"))
        await apply_or_refuse(conn, message, envelope)

    scenario = Scenario(
        engine=effects,
        database=database,
        bootstrap=kafka_bootstrap,
        outbox=outbox,
        registry=registry,
        topic=topic,
        caplog=caplog,
    )
    consumer = scenario.consumer(slow, slow_batch_s=0.01)
    await consumer.start()
    try:
        pings = [Ping(key="a", seq=0), Ping(key="a", seq=-1), Ping(key="a", seq=1)]
        pings += [Ping(key="b", seq=s) for s in range(3)]
        await send_pings(kafka_bootstrap, outbox, topic, pings, partition=0)
        await wait_for(lambda: consumer.stats.dead_letters_waiting == 1, 60, "the dead letter to wait")
        await wait_for(
            lambda: scenario.has({("b", 0), ("b", 1), ("b", 2)}), 60, "the other key handled meanwhile"
        )
        assert await applied(effects) == {("a", 0), ("b", 0), ("b", 1), ("b", 2)}
        assert (await committed(kafka_bootstrap, scenario.group_id, topic))[0] == 1
        assert consumer.stats.slow_batches >= 1
        assert len(errors(caplog, f"cannot write to the dead-letter topic {topic}.dlq")) == 1

        await make_roomy()
        await wait_for(lambda: scenario.has({("a", 1)}), 60, "the poison's key to go on after the fix")
        await wait_for(
            lambda: _committed_all(kafka_bootstrap, scenario.group_id, topic, [6, None]), 30, "all committed"
        )
        assert (consumer.stats.dead_lettered, consumer.stats.dead_letters_waiting) == (1, 0)
        async with Collector(kafka_bootstrap, [f"{topic}.dlq"]) as dead:
            await wait_for(lambda: len(dead.records) >= 1, 30, "the dead letter")
        assert len(dead.records) == 1
        assert_dead_letter_value(dead, 0, Ping(key="a", seq=-1), may_drop=True)
    finally:
        await consumer.stop()
        await admin.delete_topics([f"{topic}.dlq"])


def assigned(consumer: Consumer) -> set[TopicPartition]:
    kafka = consumer._consumer
    return set() if kafka is None else set(kafka.assignment())


async def test_a_waiting_dead_letter_does_not_hold_up_a_rebalance(
    effects: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
    admin: AIOKafkaAdminClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second member joins while a dead letter waits: the partitions are shared out at once
    (the waiting one is given up, and its record comes again to its partition's new owner)."""
    topic = await new_topic("rebalance-dlq", partitions=2)
    make_roomy = await tiny_dead_letter_topic(admin, topic)
    scenario = Scenario(
        engine=effects,
        database=database,
        bootstrap=kafka_bootstrap,
        outbox=outbox,
        registry=registry,
        topic=topic,
        caplog=caplog,
    )
    first, second = scenario.consumer(), scenario.consumer()
    await first.start()
    try:
        pings = [Ping(key="a", seq=0), Ping(key="a", seq=-1), Ping(key="a", seq=1)]
        await send_pings(kafka_bootstrap, outbox, topic, pings, partition=0)
        await wait_for(lambda: first.stats.dead_letters_waiting == 1, 60, "the dead letter to wait")
        await second.start()
        try:
            await wait_for(
                lambda: len(assigned(first)) == len(assigned(second)) == 1, 60, "the partitions shared out"
            )
            await make_roomy()
            await send_pings(kafka_bootstrap, outbox, topic, [Ping(key="b", seq=s) for s in range(3)], 1)
            everything = {("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)}
            await wait_for(lambda: scenario.has(everything), 60, "everything handled")
            await wait_for(
                lambda: _committed_all(kafka_bootstrap, scenario.group_id, topic, [3, 3]), 30, "all committed"
            )
            async with Collector(kafka_bootstrap, [f"{topic}.dlq"]) as dead:
                await wait_for(lambda: len(dead.records) >= 1, 30, "the dead letter")
            assert {
                (dead.headers(i)["dlq_partition"], dead.headers(i)["dlq_offset"])
                for i in range(len(dead.records))
            } == {("0", "1")}
        finally:
            await second.stop()
    finally:
        await first.stop()
        await admin.delete_topics([f"{topic}.dlq"])
    async with effects.connect() as conn:
        counts = (await conn.execute(text("SELECT max(applied) FROM effects"))).scalar_one()
    assert counts == 1


async def _committed_all(bootstrap: str, group_id: str, topic: str, offsets: list[int | None]) -> bool:
    return await committed(bootstrap, group_id, topic) == offsets


async def test_while_a_dead_letter_waits_it_is_said_again_once_a_minute(
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
    admin: AIOKafkaAdminClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("outbox._dead_letters.REPEAT_S", 0.3)  # a minute, for the test
    topic = await new_topic("repeat-dlq")
    await tiny_dead_letter_topic(admin, topic)
    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"repeat-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: apply_or_refuse},
        retry_backoff_s=0.05,
        retry_max_s=0.1,
    )
    await consumer.start()
    try:
        await send_pings(kafka_bootstrap, outbox, topic, [Ping(key="a", seq=-1)])
        await wait_for(
            lambda: len(errors(caplog, "still cannot write")) >= 2, 30, "the error said again, twice"
        )
    finally:
        await consumer.stop()
        await admin.delete_topics([f"{topic}.dlq"])
    first, again = errors(caplog, "cannot write")[:2]
    assert f"{topic}[0]@0 waits for it" in first
    assert f"still cannot write to the dead-letter topic {topic}.dlq after " in again
    assert "MessageSizeTooLargeError" in again
    assert f"{topic}[0]@0 and what follows it in its partition wait" in again
    # The tries in between (every 0.1 s) were silent: the lines are at least REPEAT_S apart.
    said = [r.created for r in caplog.records if "cannot write" in r.getMessage()]
    assert all(later - earlier >= 0.25 for earlier, later in itertools.pairwise(said)), said

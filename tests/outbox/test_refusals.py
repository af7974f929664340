"""What Kafka refuses for good is set aside with its error; the rest keeps flowing."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from outbox import Consumer, Envelope, MessageRegistry, Outbox, Relay
from outbox._relay import acked_prefix
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping, Unhandled


def test_acked_prefix_keeps_each_key_in_order() -> None:
    rows = [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "c"), (6, "a")]
    assert acked_prefix(rows, failed=set()) == [1, 2, 3, 4, 5, 6]
    assert acked_prefix(rows, failed={3}) == [1, 2, 4, 5]  # 6 waits behind 3
    assert acked_prefix(rows, failed={1, 4}) == [2, 5]
    assert acked_prefix(rows, failed={1, 2, 3, 4, 5, 6}) == []


async def test_put_rejects_bad_topics_and_oversized_messages(engine: AsyncEngine, outbox: Outbox) -> None:
    async with engine.connect() as conn:
        await conn.begin()
        with pytest.raises(ValueError, match=r"'orders events!' is not a valid Kafka topic name"):
            await outbox.put(conn, Ping(key="k", seq=1), topic="orders events!", key="k")
        small = Outbox(outbox.registry, max_message_bytes=50)
        with pytest.raises(ValueError, match=r"test.unhandled is \d+ bytes, over the 50 a record may have"):
            await small.put(conn, Unhandled(note="x" * 100), topic="fine", key="k")


async def test_a_record_kafka_refuses_is_set_aside_and_the_key_goes_on(
    engine: AsyncEngine, database: Database, kafka_bootstrap: str, outbox: Outbox
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    topic = f"small-records-{uuid.uuid4().hex[:10]}"  # unique on a broker that other runs share
    await admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "2000"})]
    )
    try:
        async with engine.begin() as conn:
            await outbox.put(conn, Unhandled(note="x" * 16_000), topic=topic, key="k")
            for seq in range(3):
                await outbox.put(conn, Ping(key="k", seq=seq), topic=topic, key="k")
        relay = Relay(database, kafka_bootstrap, poll_interval_s=0.1, retry_max_s=0.5)
        await relay.start()
        try:
            async with Collector(kafka_bootstrap, [topic]) as collected:
                await wait_for(lambda: len(collected.records) >= 3, 30, "the three small records")
                await wait_for(lambda: relay.stats.published == 3, 30, "the relay to finish")
        finally:
            await relay.stop()
        async with engine.connect() as conn:
            dead = (await conn.execute(text("SELECT topic, key, error FROM outbox_dead"))).all()
            pending = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        assert pending == 0
        assert len(dead) == 1
        assert (dead[0].topic, dead[0].key) == (topic, "k")
        assert "MessageSizeTooLarge" in dead[0].error
        assert [Ping.model_validate_json(r.value).seq for r in collected.records] == [0, 1, 2]
        assert relay.stats.refused == 1
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def test_a_lost_database_connection_is_retried_not_dead_lettered(
    engine: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (seq int PRIMARY KEY)"))
    topic = await new_topic("lost-connection")
    calls = 0

    async def handler(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the server drops this connection mid-transaction
            await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        await conn.execute(text("INSERT INTO effects VALUES (:s)"), {"s": message.seq})

    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=f"lost-{topic}",
        topics=[topic],
        registry=registry,
        handlers={Ping: handler},
        max_attempts=1,
        retry_max_s=0.2,
    )
    relay = Relay(database, kafka_bootstrap, poll_interval_s=0.1)
    await relay.start()
    await consumer.start()
    try:
        async with engine.begin() as conn:
            await outbox.put(conn, Ping(key="k", seq=7), topic=topic, key="k")
        await wait_for(
            lambda: consumer.stats.handled == 1, 60, "the message to be handled after the reconnect"
        )
    finally:
        await consumer.stop()
        await relay.stop()
    assert calls == 2
    assert consumer.stats.dead_lettered == 0
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT seq FROM effects"))).scalars().all() == [7]


async def test_a_topic_the_broker_lacks_holds_up_only_its_own_rows_then_is_set_aside(
    engine: AsyncEngine, database: Database, kafka_bootstrap: str, outbox: Outbox
) -> None:
    """`x.y` cannot be created while `x_y` exists (Kafka refuses names that collide), as a
    topic never comes to be on a broker with auto-creation off."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    base = f"collide-{uuid.uuid4().hex[:8]}"
    good = f"{base}-good"
    await admin.create_topics([NewTopic(f"{base}_x", num_partitions=1, replication_factor=1)])
    try:
        async with engine.begin() as conn:
            await outbox.put(conn, Ping(key="a", seq=-1), topic=f"{base}.x", key="a")
            for seq in range(20):
                await outbox.put(conn, Ping(key="a" if seq == 0 else f"k{seq}", seq=seq), topic=good, key="a")
        relay = Relay(
            database, kafka_bootstrap, poll_interval_s=0.1, retry_max_s=0.5, unpublishable_after_s=3
        )
        await relay.start()
        try:
            async with Collector(kafka_bootstrap, [good]) as collected:
                await wait_for(lambda: len(collected.records) >= 20, 60, "every row of the good topic")

                async def set_aside() -> bool:
                    async with engine.connect() as conn:
                        return bool(
                            (await conn.execute(text("SELECT count(*) FROM outbox_dead"))).scalar_one()
                        )

                await wait_for(set_aside, 60, "the row of the missing topic to be set aside")
        finally:
            await relay.stop()
        async with engine.connect() as conn:
            dead = (await conn.execute(text("SELECT topic, key, error FROM outbox_dead"))).all()
            pending = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        assert pending == 0
        assert [(d.topic, d.key) for d in dead] == [(f"{base}.x", "a")]
        assert "did not exist on the broker" in dead[0].error
        assert sorted(Ping.model_validate_json(r.value).seq for r in collected.records) == list(range(20))
    finally:
        await admin.delete_topics([f"{base}_x", good])
        await admin.close()


async def test_put_refuses_the_topic_names_kafka_refuses(engine: AsyncEngine, outbox: Outbox) -> None:
    async with engine.begin() as conn:
        for topic in (".", "..", "x" * 250, "a/b"):
            with pytest.raises(ValueError, match="is not a valid Kafka topic name"):
                await outbox.put(conn, Ping(key="k", seq=1), topic=topic, key="k")

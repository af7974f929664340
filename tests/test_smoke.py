"""The real services answer: SQL through the async engine, records through the broker."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NewTopicFactory


async def test_postgres_round_trip(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)"))
        await conn.execute(text("INSERT INTO notes VALUES (1, 'hello')"))
    async with engine.connect() as conn:
        version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
        body = (await conn.execute(text("SELECT body FROM notes WHERE id = 1"))).scalar_one()
    assert int(version) >= 150000
    assert body == "hello"


async def test_postgres_rollback_leaves_nothing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (id int PRIMARY KEY)"))
    async with engine.connect() as conn:
        await conn.execute(text("INSERT INTO notes VALUES (1)"))
        await conn.rollback()
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 0


async def test_kafka_round_trip(kafka_bootstrap: str, new_topic: NewTopicFactory) -> None:
    topic = await new_topic("smoke", partitions=2)
    sent = {f"key-{i}": uuid.uuid4().hex for i in range(20)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value.encode(), key=key.encode(), headers=[("h", b"1")])
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"smoke-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[str, str] = {}
    try:
        while len(received) < len(sent):
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"no record within 10s; got {len(received)} of {len(sent)}"
            for records in batch.values():
                for record in records:
                    assert record.key is not None
                    assert record.value is not None
                    assert dict(record.headers) == {"h": b"1"}
                    received[record.key.decode()] = record.value.decode()
    finally:
        await consumer.stop()
    assert received == sent

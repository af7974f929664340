"""A real round trip through both services: a row in Postgres, a record through Kafka.

python -m examples.roundtrip     (DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS set)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from eventstore import create_engine


async def postgres_round_trip(url: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS demo_roundtrip (id uuid PRIMARY KEY, at timestamptz NOT NULL)"
                )
            )
            row_id = uuid.uuid4()
            await conn.execute(text("INSERT INTO demo_roundtrip VALUES (:id, now())"), {"id": row_id})
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM demo_roundtrip"))).scalar_one()
        return f"postgres: wrote row {row_id}; the table holds {count} row(s)"
    finally:
        await engine.dispose()


async def kafka_round_trip(bootstrap: str) -> str:
    topic = f"demo.roundtrip.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        started = time.perf_counter()
        try:
            meta = await producer.send_and_wait(topic, b"hello", key=b"demo")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        elapsed_ms = (time.perf_counter() - started) * 1000
        return (
            f"kafka: produced to {topic}[{meta.partition}]@{meta.offset} and consumed "
            f"{record.value!r} with key {record.key!r} in {elapsed_ms:.0f} ms"
        )
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def main() -> int:
    url, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not url or not bootstrap:
        print("DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set (make demo does it)", file=sys.stderr)
        return 2
    print(await postgres_round_trip(url))
    print(await kafka_round_trip(bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Members joining and leaving a consumer group mid-stream: every message takes effect once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from outbox import Consumer, Envelope, MessageRegistry, Outbox
from tests.conftest import NewTopicFactory
from tests.helpers import kafka_headers, wait_for
from tests.outbox.messages import Ping

MESSAGES = 600


async def test_rebalances_lose_nothing_and_apply_nothing_twice(
    engine: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    outbox: Outbox,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (seq int PRIMARY KEY, applied int NOT NULL)"))
    topic = await new_topic("rebalance", partitions=4)

    async def apply(conn: AsyncConnection, message: Ping, envelope: Envelope) -> None:
        await asyncio.sleep(0.02)  # the handler's work takes time, so members change mid-batch
        await conn.execute(
            text(
                "INSERT INTO effects VALUES (:s, 1) ON CONFLICT (seq) DO UPDATE SET applied = effects.applied + 1"
            ),
            {"s": message.seq},
        )

    def member() -> Consumer:
        return Consumer(
            database,
            kafka_bootstrap,
            group_id=f"rebalance-{topic}",
            topics=[topic],
            registry=registry,
            handlers={Ping: apply},
            max_records=20,
        )

    async def applied() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM effects"))).scalar_one())

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    first, second = member(), member()
    try:
        for seq in range(MESSAGES):
            envelope = outbox.envelope(Ping(key=f"k{seq % 50}", seq=seq))
            await producer.send(
                topic,
                Ping(key=f"k{seq % 50}", seq=seq).model_dump_json().encode(),
                key=f"k{seq % 50}".encode(),
                headers=kafka_headers(envelope),
            )
        await producer.flush()
        await first.start()
        await wait_for(lambda: _at_least(applied(), MESSAGES // 6), 60, "the first member to get going")
        await second.start()  # a member joins: partitions move while batches are in flight
        await wait_for(lambda: _at_least(applied(), MESSAGES // 2), 60, "half the messages")
        await first.stop()  # a member leaves cleanly: its partitions move again
        await wait_for(lambda: _at_least(applied(), MESSAGES), 60, "every message")
    finally:
        await first.stop()
        await second.stop()
        await producer.stop()
    async with engine.connect() as conn:
        counts: dict[int, int] = dict((await conn.execute(text("SELECT seq, applied FROM effects"))).all())
        inbox = (
            await conn.execute(
                text("SELECT count(*) FROM inbox WHERE consumer_group = :g"), {"g": f"rebalance-{topic}"}
            )
        ).scalar_one()
    assert sorted(counts) == list(range(MESSAGES))
    assert set(counts.values()) == {1}
    assert inbox == MESSAGES
    assert first.stats.handled > 0
    assert second.stats.handled > 0
    assert first.stats.dead_lettered == second.stats.dead_lettered == 0


async def _at_least(count: Awaitable[int], target: int) -> bool:
    return await count >= target

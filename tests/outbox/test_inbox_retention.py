"""Inbox rows older than the consumer group's retention are deleted; newer ones, and other
groups' rows, are kept."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import Consumer, MessageRegistry
from outbox._inbox import delete_old_rows
from tests.conftest import NewTopicFactory
from tests.helpers import wait_for
from tests.outbox.messages import Ping
from tests.outbox.test_consumer import apply_ping

HOUR_S = 3600.0


async def add_rows(engine: AsyncEngine, group: str, age: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    async with engine.begin() as conn:
        for message_id in ids:
            await conn.execute(
                text(
                    "INSERT INTO inbox (consumer_group, message_id, message_type, handled_at) "
                    "VALUES (:g, :m, 'test.ping', now() - CAST(:age AS interval))"
                ),
                {"g": group, "m": message_id, "age": age},
            )
    return ids


async def rows(engine: AsyncEngine) -> set[tuple[str, uuid.UUID]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT consumer_group, message_id FROM inbox"))
        return {(r.consumer_group, r.message_id) for r in result}


async def test_rows_older_than_the_retention_are_deleted_in_batches_and_newer_ones_kept(
    engine: AsyncEngine, database: Database
) -> None:
    await add_rows(engine, "g", "2 hours", 7)
    new = await add_rows(engine, "g", "30 minutes", 3)
    others = await add_rows(engine, "other", "2 hours", 2)

    assert await delete_old_rows(database, "g", HOUR_S, batch=3) == 7  # batches of 3, 3, 1
    assert await rows(engine) == {("g", m) for m in new} | {("other", m) for m in others}
    assert await delete_old_rows(database, "g", HOUR_S, batch=3) == 0


async def test_a_consumer_deletes_its_groups_old_inbox_rows_as_it_runs(
    engine: AsyncEngine,
    database: Database,
    kafka_bootstrap: str,
    registry: MessageRegistry,
    new_topic: NewTopicFactory,
) -> None:
    topic = await new_topic("trimmed")
    group = f"trimmed-{topic}"  # not a group that another run on the same broker has
    await add_rows(engine, group, "8 days", 4)
    kept = await add_rows(engine, group, "6 days", 2)
    consumer = Consumer(
        database,
        kafka_bootstrap,
        group_id=group,
        topics=[topic],
        registry=registry,
        handlers={Ping: apply_ping},
    )
    await consumer.start()
    try:
        await wait_for(lambda: consumer.stats.inbox_rows_deleted == 4, 30, "the week-old rows deleted")
    finally:
        await consumer.stop()
    assert await rows(engine) == {(group, m) for m in kept}


async def test_the_inbox_has_an_index_for_retention(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        definition = (
            await conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'inbox_handled_at'"))
        ).scalar_one()
    assert definition.endswith("(consumer_group, handled_at)")


@pytest.mark.parametrize("retention_s", [0.0, -1.0])
async def test_a_retention_that_is_not_positive_is_refused(
    database: Database, registry: MessageRegistry, retention_s: float
) -> None:
    with pytest.raises(ValueError, match=r"inbox_retention_s must be > 0 \(seconds\), got"):
        Consumer(
            database,
            "127.0.0.1:9",
            group_id="g",
            topics=["t"],
            registry=registry,
            handlers={Ping: apply_ping},
            inbox_retention_s=retention_s,
        )

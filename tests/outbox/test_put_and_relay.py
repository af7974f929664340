"""Outbox rows leave exactly when their transaction commits."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import Envelope, Outbox, Relay
from tests.conftest import NewTopicFactory
from tests.helpers import Collector, wait_for
from tests.outbox.messages import Ping


async def test_rollback_publishes_nothing_and_commit_publishes_once(
    engine: AsyncEngine, outbox: Outbox, relay: Relay, kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = await new_topic("commands")
    async with engine.connect() as conn:
        await conn.begin()
        await outbox.put(conn, Ping(key="k", seq=1), topic=topic, key="k")
        await conn.rollback()

    envelope = outbox.envelope(
        Ping(key="k", seq=2),
        saga_id="saga-1",
        saga_type="OrderSaga",
        step="reserve_credit",
        attempt=1,
        correlation_id="corr-1",
        causation_id="cause-1",
        reply_topic="replies.OrderSaga",
    )
    async with engine.begin() as conn:
        await outbox.put(conn, Ping(key="k", seq=2), topic=topic, key="saga-1", envelope=envelope)

    async with Collector(kafka_bootstrap, [topic]) as collected:
        await wait_for(lambda: len(collected.records) >= 1, 30, "the committed message")

        async def outbox_empty() -> bool:
            async with engine.connect() as conn:
                rows: int = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            return rows == 0

        await wait_for(outbox_empty, 10, "the relay to delete the published row")
        # A marker put after the first: once it arrived, anything before it would have too.
        async with engine.begin() as conn:
            await outbox.put(conn, Ping(key="k", seq=3), topic=topic, key="saga-1")
        await wait_for(lambda: len(collected.records) >= 2, 30, "the marker message")

    seqs = [Ping.model_validate_json(r.value).seq for r in collected.records]
    assert seqs == [2, 3]
    record = collected.records[0]
    assert record.key == b"saga-1"
    headers = collected.headers(0)
    assert Envelope.from_kafka(record.headers) == envelope
    assert headers["message_type"] == "test.ping"
    assert headers["schema_version"] == "1"
    assert headers["saga_id"] == "saga-1"
    assert headers["reply_topic"] == "replies.OrderSaga"
    assert uuid.UUID(headers["message_id"]) == envelope.message_id
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01")
    assert relay.stats.published == 2
    assert (await relay.lag()).pending == 0

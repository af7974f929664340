"""Issue 13 item 4 on the real Postgres and Kafka: sagas wait on `reserve_stock`, then a
definition with that step renamed is deployed. The reply (through Kafka, to the worker) and
the due deadline each park their saga with the reason, once: no dead letter, no traceback,
no deadline firing again. Under the definition that has the step, a resume takes it up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from examples.orders.app import app as shop
from examples.orders.messages import CreditReserved, StockReserved
from examples.orders.saga import OrderData, OrderSaga
from examples.orders.services import create_schema
from saga import Orchestrator, OrchestratorWorker, SagaError, TypedSagaState, fire_due_deadlines
from saga._operations import dead_letter_counts
from tests.helpers import kafka_headers, wait_for
from tests.saga.conftest import create_topics
from tests.saga.renamed import app as renamed_app
from tests.saga.renamed import park_reason


@pytest.fixture
def prefix() -> str:
    return f"park{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def original(database: Database, prefix: str) -> AsyncIterator[Orchestrator]:
    await create_schema(database.engine)
    orchestrator = shop.with_topic_prefix(prefix).orchestrator(database)
    try:
        yield orchestrator
    finally:
        await orchestrator.aclose()


@pytest.fixture
async def renamed(database: Database, prefix: str) -> AsyncIterator[Orchestrator]:
    orchestrator = renamed_app.with_topic_prefix(prefix).orchestrator(database)
    try:
        yield orchestrator
    finally:
        await orchestrator.aclose()


async def awaiting_stock(orchestrator: Orchestrator, n: int) -> str:
    """A saga of the original definition, its credit reserved, awaiting reserve_stock #1."""
    data = OrderData(order_id=f"o{n}", customer_id="alice", sku="widget", quantity=1, amount=Decimal(5))
    async with orchestrator.engine.begin() as conn:
        saga_id = await orchestrator.start(conn, OrderSaga, data, key=data.order_id)
    reply = CreditReserved(reservation_id=f"credit-{n}")
    envelope = orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type="OrderSaga", step="reserve_credit", phase="action", attempt=1
    )
    async with orchestrator.engine.begin() as conn:
        await orchestrator.handle_reply(conn, reply, envelope)
    state = await orchestrator.load(saga_id)
    assert state.awaiting is not None
    assert (state.awaiting.step, state.awaiting.attempt) == ("reserve_stock", 1)
    return saga_id


async def send_reply(orchestrator: Orchestrator, bootstrap: str, saga_id: str, reservation: str) -> str:
    """A participant's StockReserved to reserve_stock #1, as a Kafka record; its message id."""
    reply = StockReserved(reservation_id=reservation)
    envelope = orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type="OrderSaga", step="reserve_stock", phase="action", attempt=1
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            orchestrator.topics.replies("OrderSaga"),
            reply.model_dump_json().encode(),
            key=saga_id.encode(),
            headers=kafka_headers(envelope),
        )
    finally:
        await producer.stop()
    return str(envelope.message_id)


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def event_types(orchestrator: Orchestrator, saga_id: str) -> list[str]:
    return [e.type for e in await orchestrator.store.load(f"saga:{saga_id}")]


async def parked_cause(orchestrator: Orchestrator, saga_id: str) -> str:
    [parked] = [e.event for e in await orchestrator.store.load(f"saga:{saga_id}") if e.type == "saga.parked"]
    return str(parked.model_dump()["cause"])


def assert_parked(state: TypedSagaState[Any], saga_id: str) -> None:
    assert state.status == "parked"
    assert state.parked is not None
    assert state.parked.reason == park_reason(saga_id)
    assert state.parked.status == "running"
    assert [w.step for w in state.parked.waiting] == ["reserve_stock"]


async def test_item4_renamed_step_parks_saga_with_reason(
    original: Orchestrator,
    renamed: Orchestrator,
    engine: AsyncEngine,
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="saga")
    caplog.set_level(logging.INFO, logger="outbox")
    await create_topics(kafka_bootstrap, renamed.reply_topics())
    by_reply = await awaiting_stock(original, 1)
    by_deadline = await awaiting_stock(original, 2)
    async with engine.begin() as conn:  # no timeout before the test says so
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() + interval '1 hour'"))

    worker = OrchestratorWorker(renamed, kafka_bootstrap, deadline_interval_s=0.1, retry_backoff_s=0.05)
    await worker.start()
    try:
        # The reply path: the participant's reply reaches the worker running the new definition.
        reply_id = await send_reply(original, kafka_bootstrap, by_reply, "stock-1")

        async def parked(saga_id: str) -> bool:
            return (await renamed.load(saga_id)).status == "parked"

        await wait_for(lambda: parked(by_reply), 60, "the saga the reply reached to be parked")
        # The deadline path: its reply timeout falls due under the new definition.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE saga_deadlines SET due_at = now() - interval '1 second' WHERE saga_id = :s"),
                {"s": by_deadline},
            )
        await wait_for(lambda: parked(by_deadline), 60, "the saga whose deadline fell due to be parked")
        # Another reply to a parked saga is recorded and ignored: no second parking.
        second_id = await send_reply(original, kafka_bootstrap, by_reply, "stock-1-again")

        async def ignored() -> bool:
            return (await event_types(renamed, by_reply))[-1] == "saga.reply_ignored"

        await wait_for(ignored, 60, "the second reply to the parked saga to be recorded")
    finally:
        await worker.stop()

    for saga_id in (by_reply, by_deadline):
        assert_parked(await renamed.load(saga_id), saga_id)
        assert_parked(await renamed.wait(saga_id, timeout_s=30.0), saga_id)  # stopped for an operator
        row = await scalar(
            engine, "SELECT status || ' / ' || last_error FROM saga_instances WHERE saga_id = :s", s=saga_id
        )
        assert row == f"parked / {park_reason(saga_id)}"
        assert await scalar(engine, "SELECT count(*) FROM saga_deadlines WHERE saga_id = :s", s=saga_id) == 0
    assert (await event_types(renamed, by_reply))[-2:] == ["saga.parked", "saga.reply_ignored"]
    assert (await event_types(renamed, by_deadline))[-1] == "saga.parked"
    assert (
        await parked_cause(renamed, by_reply) == "reply inventory.stock_reserved to reserve_stock/action #1"
    )
    assert await parked_cause(renamed, by_deadline) == "reply timeout of reserve_stock/action #1"
    # Both replies were consumed (recorded in the inbox), none dead-lettered.
    for message_id in (reply_id, second_id):
        assert (
            await scalar(engine, "SELECT count(*) FROM inbox WHERE message_id::text = :m", m=message_id) == 1
        )
    counts = await dead_letter_counts(kafka_bootstrap, original.topics.prefix)
    assert counts == {f"{original.topics.replies('OrderSaga')}.dlq": 0}
    # Nothing is left to fire: no deadline loop on a parked saga.
    assert await fire_due_deadlines(renamed) == 0

    # The worker said it once per saga, with the reason; no traceback at all.
    said = [r for r in caplog.records if "parked" in r.getMessage() and r.name.startswith("saga")]
    assert sorted(r.getMessage().split()[1] for r in said) == sorted([by_reply, by_deadline])
    for record in said:
        assert record.levelno == logging.WARNING
        assert park_reason(record.getMessage().split()[1]) in record.getMessage()
    assert not [r for r in caplog.records if r.exc_info], [
        r.getMessage() for r in caplog.records if r.exc_info
    ]

    # Still missing: a resume refuses and says why; the saga stays as it is.
    version = (await renamed.load(by_reply)).version
    with pytest.raises(SagaError) as refused:
        await renamed.resume(by_reply, "try")
    assert str(refused.value) == f"saga {by_reply} stays parked: {park_reason(by_reply)}"
    assert (await renamed.load(by_reply)).version == version

    # Under the definition that has the step again, a resume sends reserve_stock again.
    for saga_id in (by_reply, by_deadline):
        resumed = await original.resume(saga_id, "reserve_stock is deployed again")
        assert resumed.status == "running"
        assert resumed.parked is None
        assert resumed.awaiting is not None
        assert (resumed.awaiting.step, resumed.awaiting.attempt) == ("reserve_stock", 2)
        assert (await event_types(original, saga_id))[-3:] == [
            "saga.unparked",
            "saga.operator_resumed",
            "saga.step_requested",
        ]
        assert await scalar(engine, "SELECT attempt FROM saga_deadlines WHERE saga_id = :s", s=saga_id) == 2
        assert await scalar(engine, "SELECT status FROM saga_instances WHERE saga_id = :s", s=saga_id) == (
            "running"
        )

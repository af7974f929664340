"""A running order system per test: relay, orchestrator worker and three participants (for
the hooks' and the many sagas' tests; the order saga's own tests use the saga.testing plugin)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database, Worker
from examples.orders.messages import messages
from examples.orders.saga import OrderData, OrderSaga
from examples.orders.services import HANDLERS, create_schema
from outbox import Relay
from saga import (
    Orchestrator,
    OrchestratorWorker,
    Participant,
    Saga,
    TypedSagaState,
)
from tests.helpers import assert_read_model_matches_events


@dataclass
class System:
    engine: AsyncEngine
    orchestrator: Orchestrator
    bootstrap: str
    prefix: str
    workers: list[Worker] = field(default_factory=list)

    async def order(self, saga: type[Saga[Any]], customer: str = "alice") -> str:
        """An order (one widget for 10) and its saga, started in the same transaction."""
        order_id = f"order-{uuid.uuid4().hex[:8]}"
        data = OrderData(
            order_id=order_id, customer_id=customer, sku="widget", quantity=1, amount=Decimal(10)
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO orders (order_id, customer_id, sku, quantity, amount) VALUES (:o, :c, :s, :q, :a)"
                ),
                {"o": order_id, "c": customer, "s": data.sku, "q": data.quantity, "a": data.amount},
            )
            return await self.orchestrator.start(conn, saga, data, key=order_id)

    async def state(self, saga_id: str) -> TypedSagaState[Any]:
        return await self.orchestrator.load(saga_id)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def assert_read_model_matches_events(self) -> int:
        return await assert_read_model_matches_events(self.engine, self.orchestrator)


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


def participants(
    database: Database, bootstrap: str, prefix: str, handlers: dict[str, dict[type, Any]]
) -> list[Worker]:
    return [
        Participant(
            database,
            bootstrap,
            service=service,
            messages=messages,
            handlers=h,
            topic_prefix=prefix,
            retry_backoff_s=0.05,
        )
        for service, h in handlers.items()
    ]


@pytest.fixture
def saga_types() -> list[type[Saga[Any]]]:
    return [OrderSaga]


@pytest.fixture
async def system(
    database: Database,
    engine: AsyncEngine,
    kafka_bootstrap: str,
    saga_types: list[type[Saga[Any]]],
) -> AsyncIterator[System]:
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO customers VALUES ('alice', 1000, 0), ('declined', 1000, 0)"))
        await conn.execute(text("INSERT INTO stock VALUES ('widget', 100)"))
    prefix = f"t{uuid.uuid4().hex[:10]}"
    orchestrator = Orchestrator(database, saga_types, messages, topic_prefix=prefix)
    await create_topics(
        kafka_bootstrap,
        [*orchestrator.reply_topics(), *(orchestrator.topics.commands(s) for s in HANDLERS)],
    )
    sys_ = System(engine, orchestrator, kafka_bootstrap, prefix)
    sys_.workers = [
        Relay(database, kafka_bootstrap, poll_interval_s=0.2),
        OrchestratorWorker(orchestrator, kafka_bootstrap, deadline_interval_s=0.1, retry_backoff_s=0.05),
        *participants(database, kafka_bootstrap, prefix, HANDLERS),
    ]
    for worker in sys_.workers:
        await worker.start()
    try:
        yield sys_
    finally:
        for worker in reversed(sys_.workers):
            await worker.stop()
        await orchestrator.aclose()

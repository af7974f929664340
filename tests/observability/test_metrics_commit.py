"""Saga metrics count only what committed: not a rolled-back start, nor one in a savepoint
rolled back inside a transaction that commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Database, after_commit
from examples.orders.messages import messages
from examples.orders.saga import OrderData, OrderSaga
from saga import Orchestrator, record_metrics


class Boom(Exception):
    pass


def started() -> float:
    return REGISTRY.get_sample_value("saga_started_total", {"saga_type": OrderSaga.name}) or 0.0


@pytest.fixture
async def orchestrator(database: Database) -> AsyncIterator[Orchestrator]:
    record_metrics()
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="metrics")
    yield orchestrator
    await orchestrator.aclose()


def order(n: int) -> OrderData:
    return OrderData(order_id=f"o{n}", customer_id="c", sku="widget", quantity=1, amount=Decimal(5))


async def start(conn: AsyncConnection, orchestrator: Orchestrator, n: int) -> None:
    await orchestrator.start(conn, OrderSaga, order(n), key=f"o{n}")


async def test_a_rolled_back_start_counts_nothing(database: Database, orchestrator: Orchestrator) -> None:
    before = started()

    async def rolled_back() -> None:
        async with database.begin() as conn:
            await start(conn, orchestrator, 1)
            raise Boom

    with pytest.raises(Boom):
        await rolled_back()
    assert started() == before
    async with database.begin() as conn:
        await start(conn, orchestrator, 2)
        assert started() == before  # not before the commit
    assert started() == before + 1


async def test_a_start_in_a_savepoint_rolled_back_counts_nothing(
    database: Database, orchestrator: Orchestrator
) -> None:
    before = started()

    async def rolled_back(conn: AsyncConnection) -> None:
        async with conn.begin_nested():
            await start(conn, orchestrator, 2)
            raise Boom

    async with database.begin() as conn:
        await start(conn, orchestrator, 1)
        with pytest.raises(Boom):
            await rolled_back(conn)
        async with conn.begin_nested():
            await start(conn, orchestrator, 3)
    assert started() == before + 2


async def test_a_savepoint_opened_before_the_first_callback_encloses_it(database: Database) -> None:
    ran: list[str] = []

    async def rolled_back(conn: AsyncConnection) -> None:
        async with conn.begin_nested():
            after_commit(conn, lambda: ran.append("rolled back"))
            raise Boom

    async with database.begin() as conn:
        with pytest.raises(Boom):
            await rolled_back(conn)
        after_commit(conn, lambda: ran.append("kept"))
    assert ran == ["kept"]


async def test_after_commit_needs_a_transaction(database: Database) -> None:
    async with database.connect() as conn:
        with pytest.raises(RuntimeError, match="inside `begin\\(\\)`"):
            after_commit(conn, lambda: None)

"""Starting a saga: in the caller's transaction, and idempotent on its key even under a race."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from examples.orders.messages import messages
from examples.orders.saga import OrderData, OrderSaga
from saga import Orchestrator
from tests.helpers import wait_for

DATA = OrderData(order_id="o-1", customer_id="alice", sku="widget", quantity=1, amount=Decimal(10))


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_two_racing_starts_with_one_key_start_one_saga(database: Database, engine: AsyncEngine) -> None:
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="start")
    try:
        async with engine.connect() as first, engine.connect() as second:
            first_id = await orchestrator.start(first, OrderSaga, DATA, key="k")
            racing = asyncio.create_task(orchestrator.start(second, OrderSaga, DATA, key="k"))

            async def waits_on_the_lock() -> bool:
                return bool(
                    await count(
                        engine,
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                )

            await wait_for(waits_on_the_lock, 10, "the second start to wait for the first")
            await first.commit()
            assert await racing == first_id
            await second.commit()
        assert await count(engine, "SELECT count(*) FROM es_events WHERE type = 'saga.started'") == 1
        assert await count(engine, "SELECT count(*) FROM outbox") == 1
        assert await count(engine, "SELECT count(*) FROM saga_instances") == 1
    finally:
        await orchestrator.aclose()


async def test_a_start_rolled_back_with_its_transaction_leaves_nothing(
    database: Database, engine: AsyncEngine
) -> None:
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="start")
    try:
        async with engine.connect() as conn:
            await orchestrator.start(conn, OrderSaga, DATA, key="k")
            await conn.rollback()
        for table in ("es_events", "outbox", "saga_instances", "saga_deadlines"):
            assert await count(engine, f"SELECT count(*) FROM {table}") == 0, table
        async with engine.begin() as conn:
            saga_id = await orchestrator.start(conn, OrderSaga, DATA, key="k")
        state = await orchestrator.load(saga_id)
        assert (state.status, state.awaiting is not None) == ("running", True)
        assert await count(engine, "SELECT count(*) FROM saga_deadlines") == 1
    finally:
        await orchestrator.aclose()


def data(order_id: str) -> OrderData:
    return DATA.model_copy(update={"order_id": order_id})


async def test_start_many_starts_each_key_once(database: Database, engine: AsyncEngine) -> None:
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="start")
    try:
        async with engine.begin() as conn:
            before = await orchestrator.start(conn, OrderSaga, data("o-0"), key="k0")
        async with engine.begin() as conn:
            ids = await orchestrator.start_many(
                conn,
                OrderSaga,
                [data("o-0"), data("o-1"), data("o-2"), data("o-1-again")],
                keys=["k0", "k1", "k2", "k1"],
            )
        assert ids[0] == before
        assert ids[3] == ids[1]
        assert len(set(ids)) == 3
        assert await count(engine, "SELECT count(*) FROM es_events WHERE type = 'saga.started'") == 3
        assert await count(engine, "SELECT count(*) FROM outbox") == 3  # one first command each
        assert (await orchestrator.load(ids[1], OrderSaga)).data.order_id == "o-1"  # the first one wins

        async with engine.begin() as conn:
            unkeyed = await orchestrator.start_many(conn, OrderSaga, [data("u-1"), data("u-2")])
        assert len(set(unkeyed)) == 2
        assert await count(engine, "SELECT count(*) FROM saga_instances WHERE status = 'running'") == 5
    finally:
        await orchestrator.aclose()


async def test_start_many_refuses_bad_arguments_before_writing(
    database: Database, engine: AsyncEngine
) -> None:
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="start")
    try:
        async with engine.begin() as conn:
            with pytest.raises(ValueError, match="start_many: 1 keys for 2 sagas"):
                await orchestrator.start_many(conn, OrderSaga, [data("a"), data("b")], keys=["k"])
            with pytest.raises(TypeError, match="saga OrderSaga takes OrderData data, got str"):
                await orchestrator.start_many(conn, OrderSaga, [data("a"), "b"])  # type: ignore[list-item]
            for key in ("", "nul\x00key", "k" * 501):
                with pytest.raises(ValueError, match="a start key is a non-empty string of at most 500"):
                    await orchestrator.start(conn, OrderSaga, data("a"), key=key)
            with pytest.raises(ValueError, match="contains a NUL character"):
                await orchestrator.start(conn, OrderSaga, data("nul\x00order"), key="fine")
        assert await count(engine, "SELECT count(*) FROM es_events") == 0
        assert await count(engine, "SELECT count(*) FROM outbox") == 0
    finally:
        await orchestrator.aclose()

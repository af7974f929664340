"""The order system's invariant checker (used by the demo, chaos and the tests) flags what
breaks them."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from examples.orders.app import app
from examples.orders.invariants import check_invariants, read_model_matches_events
from examples.orders.saga import OrderData, OrderSaga
from examples.orders.services import create_schema


async def test_the_checker_flags_each_broken_invariant(engine: AsyncEngine) -> None:
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO customers VALUES ('c1', 100, 0)"))
        await conn.execute(text("INSERT INTO stock VALUES ('widget', 10)"))
    assert all((await check_invariants(engine, [], {"widget": 10})).values())

    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO payments VALUES ('o1', 'c1', 5)"))  # paid, never completed
        await conn.execute(
            text("INSERT INTO shipments VALUES ('o1', 'widget', 1)")
        )  # shipped, never completed
        await conn.execute(text("UPDATE customers SET reserved = 5"))
        await conn.execute(text("UPDATE stock SET available = 9"))
        for _ in range(2):
            await conn.execute(
                text(
                    "INSERT INTO handled_commands (service, command, order_id, attempt) VALUES ('p', 'c', 'o1', 1)"
                )
            )
        await conn.execute(
            text(
                "INSERT INTO outbox (message_id, topic, key, value, headers) VALUES (gen_random_uuid(), 't', 'k', '', '{}')"
            )
        )
    lost = OrderData(order_id="o2", customer_id="c1", sku="lost", quantity=1, amount=Decimal(5))
    failing = {
        name for name, holds in (await check_invariants(engine, [lost], {"widget": 10})).items() if not holds
    }
    assert failing == {
        "every saga ended (none running or compensating)",  # o2 has no saga
        "credit held = completed orders, per customer",
        "stock taken = completed orders, per sku",
        "payments, approvals and reservations = completed orders",
        "one shipment and one invoice for each completed order, none for the others",
        "orders never picked were compensated",
        "no command took effect twice for one attempt",
        "outbox drained",
    }


async def test_the_checker_flags_a_read_model_row_that_is_not_the_fold_of_its_events(
    database: Database, engine: AsyncEngine
) -> None:
    await create_schema(engine)
    orchestrator = app.orchestrator(database)
    order = OrderData(order_id="o1", customer_id="c1", sku="widget", quantity=1, amount=Decimal(5))
    try:
        async with engine.begin() as conn:
            await orchestrator.start(conn, OrderSaga, order, key="o1")
    finally:
        await orchestrator.aclose()
    async with engine.connect() as conn:
        assert await read_model_matches_events(conn)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE saga_instances SET status = 'completed'"))
    async with engine.connect() as conn:
        assert not await read_model_matches_events(conn)
    failing = {name for name, holds in (await check_invariants(engine, [order], {})).items() if not holds}
    assert failing == {
        "payments, approvals and reservations = completed orders",
        "one shipment and one invoice for each completed order, none for the others",
        "each completed order took exactly one Picked signal",  # it never got to the wait
        "outbox drained",  # its first command was never relayed
        "saga_instances = the fold of each saga's events",
        "each completed saga recorded its own order's reservations, payment, shipment and invoice",
    }

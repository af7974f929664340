"""The order system's invariants, checked in its database after a run: the demo prints them,
the tests assert them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, EventStore
from examples.orders.saga import OrderData
from saga import fold, instance_row, saga_event_registry, stream_of

_INSTANCES = (
    "SELECT saga_id, saga_type, key, status, step, version, data::text, last_error FROM saga_instances"
)


def _comparable(row: Sequence[Any]) -> tuple[Any, ...]:
    *head, data, last_error = row
    return (*head, orjson.loads(data), last_error)


async def read_model_matches_events(conn: AsyncConnection) -> bool:
    """Every saga_instances row is what its saga's events fold to."""
    rows = (await conn.execute(text(_INSTANCES))).all()
    async with Database(engine=conn.engine) as database:  # the engine stays the caller's
        store = EventStore(database, saga_event_registry())
        streams = await store.load_many([stream_of(row[0]) for row in rows], conn=conn)
    for row in rows:
        events = streams[stream_of(row[0])]
        if not events or _comparable(row) != _comparable(
            instance_row(fold(row[0], (e.event for e in events)))
        ):
            return False
    return True


async def check_invariants(
    engine: AsyncEngine, orders: Sequence[OrderData], stock: Mapping[str, int]
) -> dict[str, bool]:
    """After a run of `orders` (every saga ended): each invariant's name, and whether it holds.
    `stock` is what each SKU had before the run (SKUs not in it are not checked)."""
    async with engine.connect() as conn:
        status: dict[str, str] = dict(
            (await conn.execute(text("SELECT data->>'order_id', status FROM saga_instances"))).all()
        )
        reserved: dict[str, Decimal] = dict(
            (await conn.execute(text("SELECT customer_id, reserved FROM customers"))).all()
        )
        available: dict[str, int] = dict((await conn.execute(text("SELECT sku, available FROM stock"))).all())
        paid = set((await conn.execute(text("SELECT order_id FROM payments"))).scalars())
        approved = set(
            (await conn.execute(text("SELECT order_id FROM orders WHERE status = 'approved'"))).scalars()
        )
        held_credit = set(
            (
                await conn.execute(text("SELECT order_id FROM credit_reservations WHERE NOT released"))
            ).scalars()
        )
        held_stock = set(
            (await conn.execute(text("SELECT order_id FROM stock_reservations WHERE NOT released"))).scalars()
        )
        twice = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM handled_commands GROUP BY service, command, order_id, "
                    "attempt HAVING count(*) > 1) d"
                )
            )
        ).scalar_one()
        outbox = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        read_model = await read_model_matches_events(conn)
        recorded = (
            await conn.execute(
                text(
                    "SELECT data->>'order_id', data->>'credit_reservation', data->>'stock_reservation', "
                    "data->>'payment_id' FROM saga_instances WHERE status = 'completed'"
                )
            )
        ).all()
    completed = {o for o, s in status.items() if s == "completed"}
    credit: dict[str, Decimal] = {}
    taken: dict[str, int] = {}
    for o in orders:
        if o.order_id in completed:
            credit[o.customer_id] = credit.get(o.customer_id, Decimal(0)) + o.amount
            taken[o.sku] = taken.get(o.sku, 0) + o.quantity
    return {
        "every saga ended (none running or compensating)": all(
            s in ("completed", "compensated") for s in status.values()
        )
        and len(status) == len(orders),
        "credit held = completed orders, per customer": all(
            reserved[c] == credit.get(c, Decimal(0)) for c in reserved
        ),
        "stock taken = completed orders, per sku": all(
            available[s] == stock[s] - taken.get(s, 0) for s in stock
        ),
        "payments, approvals and reservations = completed orders": paid
        == approved
        == held_credit
        == held_stock
        == completed,
        "no command took effect twice for one attempt": twice == 0,
        "outbox drained": outbox == 0,
        "saga_instances = the fold of each saga's events": read_model,
        "each completed saga recorded its own order's reservations and payment": all(
            (credit_id, stock_id, payment_id) == (f"credit-{o}", f"stock-{o}", f"pay-{o}")
            for o, credit_id, stock_id, payment_id in recorded
        ),
    }

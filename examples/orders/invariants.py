"""The order system's invariants, checked in its database after a run: the demo prints them,
the tests assert them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, EventStore
from examples.orders.saga import OrderData, OrderSaga, ReserveStockStep, WaitForPicked
from examples.orders.shop import LOST_SKUS
from saga import fold, instance_row, saga_event_registry, stream_of

_INSTANCES = (
    "SELECT saga_id, saga_type, key, status, step, version, data::text, last_error, "
    "saga_version, fingerprint, parked_version FROM saga_instances"
)


def _comparable(row: Sequence[Any]) -> tuple[Any, ...]:
    values = list(row)
    values[6] = orjson.loads(values[6])  # the data, as JSON: key order does not matter
    return tuple(values)


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


_SETS = {
    "paid": "SELECT order_id FROM payments",
    "approved": "SELECT order_id FROM orders WHERE status = 'approved'",
    "held_credit": "SELECT order_id FROM credit_reservations WHERE NOT released",
    "held_stock": "SELECT order_id FROM stock_reservations WHERE NOT released",
    "shipped": "SELECT order_id FROM shipments",
    "invoiced": "SELECT order_id FROM invoices",
}
_TWICE = (
    "SELECT count(*) FROM (SELECT 1 FROM handled_commands GROUP BY service, command, order_id, "
    "attempt HAVING count(*) > 1) d"
)
_RECORDED = (
    "SELECT data->>'order_id', data->>'credit_reservation', data->>'stock_reservation', "
    "data->>'payment_id', data->>'shipment_id', data->>'invoice_id' FROM saga_instances WHERE status = 'completed'"
)
# Per order: how many signals its saga's wait took.
_PICKS_TAKEN = (
    "SELECT i.data->>'order_id', count(e.position) FROM saga_instances i LEFT JOIN es_events e "
    "ON e.stream_id = 'saga:' || i.saga_id AND e.type = 'saga.signal_consumed' AND e.data->>'step' = :step "
    "GROUP BY 1"
)


@dataclass
class _Facts:
    """What the run left in the database, read in one go."""

    status: dict[str, str]  # order -> its saga's status
    reserved: dict[str, Decimal]
    available: dict[str, int]
    sets: dict[str, set[str]]  # _SETS' names -> order ids
    picks_taken: dict[str, int]
    twice: int
    outbox: int
    read_model: bool
    recorded: list[tuple[str, ...]]


async def _facts(conn: AsyncConnection) -> _Facts:
    async def pairs(sql: str, **params: Any) -> dict[Any, Any]:
        return dict((await conn.execute(text(sql), params)).all())

    async def scalar(sql: str) -> int:
        return int((await conn.execute(text(sql))).scalar_one())

    return _Facts(
        status=await pairs("SELECT data->>'order_id', status FROM saga_instances"),
        reserved=await pairs("SELECT customer_id, reserved FROM customers"),
        available=await pairs("SELECT sku, available FROM stock"),
        sets={name: set((await conn.execute(text(sql))).scalars()) for name, sql in _SETS.items()},
        picks_taken=await pairs(_PICKS_TAKEN, step=WaitForPicked.name),
        twice=await scalar(_TWICE),
        outbox=await scalar("SELECT count(*) FROM outbox"),
        read_model=await read_model_matches_events(conn),
        recorded=[tuple(row) for row in (await conn.execute(text(_RECORDED))).all()],
    )


async def check_invariants(
    engine: AsyncEngine, orders: Sequence[OrderData], stock: Mapping[str, int]
) -> dict[str, bool]:
    """After a run of `orders` (every saga ended): each invariant's name, and whether it holds.
    `stock` is what each SKU had before the run (SKUs not in it are not checked)."""
    async with engine.connect() as conn:
        f = await _facts(conn)
    completed = {o for o, s in f.status.items() if s == "completed"}
    credit: dict[str, Decimal] = {}
    taken: dict[str, int] = {}
    for o in orders:
        if o.order_id in completed:
            credit[o.customer_id] = credit.get(o.customer_id, Decimal(0)) + o.amount
            taken[o.sku] = taken.get(o.sku, 0) + o.quantity
    never_picked = {o.order_id for o in orders if o.sku in LOST_SKUS}
    held = ("paid", "approved", "held_credit", "held_stock")
    return {
        "every saga ended (none running or compensating)": all(
            s in ("completed", "compensated") for s in f.status.values()
        )
        and len(f.status) == len(orders),
        "credit held = completed orders, per customer": all(
            f.reserved[c] == credit.get(c, Decimal(0)) for c in f.reserved
        ),
        "stock taken = completed orders, per sku": all(
            f.available[s] == stock[s] - taken.get(s, 0) for s in stock
        ),
        "payments, approvals and reservations = completed orders": all(f.sets[n] == completed for n in held),
        "one shipment and one invoice for each completed order, none for the others": f.sets["shipped"]
        == f.sets["invoiced"]
        == completed,
        "each completed order took exactly one Picked signal": all(
            f.picks_taken.get(o, 0) == 1 for o in completed
        ),
        "orders never picked were compensated": all(
            f.status.get(o) == "compensated" and f.picks_taken.get(o, 0) == 0 for o in never_picked
        ),
        "no command took effect twice for one attempt": f.twice == 0,
        "outbox drained": f.outbox == 0,
        "saga_instances = the fold of each saga's events": f.read_model,
        "each completed saga recorded its own order's reservations, payment, shipment and invoice": all(
            tuple(ids) == (f"credit-{o}", f"stock-{o}", f"pay-{o}", f"ship-{o}", f"invoice-{o}")
            for o, *ids in f.recorded
        ),
    }


# Per saga: when (stream version) a signal first came, the saga reached the wait (its stock
# reserved), a signal was taken, and whether the wait timed out (a wait's only way to fail).
_PICKS = """
SELECT count(*) FILTER (WHERE received < reached),
       count(*) FILTER (WHERE taken IS NOT NULL AND NOT coalesce(received < reached, false)),
       count(*) FILTER (WHERE timed_out)
FROM (
    SELECT min(version) FILTER (WHERE type = 'saga.signal_received') AS received,
           min(version) FILTER (WHERE type = 'saga.step_succeeded' AND data->>'step' = :before) AS reached,
           min(version) FILTER (WHERE type = 'saga.signal_consumed' AND data->>'step' = :wait) AS taken,
           bool_or(type = 'saga.step_failed' AND data->>'step' = :wait) AS timed_out
    FROM es_events WHERE stream_id IN (SELECT 'saga:' || saga_id FROM saga_instances WHERE saga_type = :saga)
    GROUP BY stream_id
) s
"""


async def pick_counts(engine: AsyncEngine) -> dict[str, int]:
    """How the order sagas met the warehouse's Picked signal: sent before the saga reached its
    wait (kept, then taken there), taken on arrival at a waiting saga, or never (timed out)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(_PICKS),
                {"before": ReserveStockStep.name, "wait": WaitForPicked.name, "saga": OrderSaga.name},
            )
        ).one()
    return dict(zip(("before the wait", "after it", "never (timed out)"), map(int, row), strict=True))

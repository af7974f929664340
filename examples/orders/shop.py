"""The shop around the order saga: the front end that places orders and the warehouse that
picks their goods. The demo, the chaos run, the benchmark and the tests all place and pick
orders through these, so the saga meets the warehouse's signal in every way it can:

- picked at once (`picked_at_once`, about half the orders): the goods are taken off the shelf
  while the customer waits, and `place_orders` sends Picked in the transaction that starts the
  saga, before the saga reaches its wait; the saga keeps the signal and takes it there.
- picked later: `Warehouse.pick_waiting` sends Picked to the sagas that wait for it.
- never picked: goods of a SKU in `LOST_SKUS` are never found; the wait times out and the
  saga compensates (stock and credit released, nobody charged).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from examples.orders.messages import Picked
from examples.orders.saga import OrderData, OrderSaga, WaitForPicked
from saga import Orchestrator

LOST_SKUS = frozenset({"lost"})


def picked_at_once(order: OrderData) -> bool:
    """About half the orders, the same ones in every run (chosen by the order id)."""
    return order.sku not in LOST_SKUS and zlib.crc32(order.order_id.encode()) % 2 == 0


_NEW_ORDERS = text(
    "INSERT INTO orders (order_id, customer_id, sku, quantity, amount) "
    "SELECT * FROM unnest(CAST(:o AS text[]), CAST(:c AS text[]), CAST(:s AS text[]), CAST(:q AS int[]), "
    "CAST(:a AS numeric[])) ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)


async def place_orders(
    conn: AsyncConnection,
    orchestrator: Orchestrator,
    orders: Sequence[OrderData],
    *,
    pick_at_once: Callable[[OrderData], bool] = picked_at_once,
) -> list[str]:
    """The orders, their sagas (the order id is the start key) and the signals of the orders
    picked at once, in the caller's transaction: a saga runs only if its order exists. Safe to
    run again after a lost commit: an order already placed starts and signals nothing. Returns
    the sagas' ids."""
    columns = {
        "o": [o.order_id for o in orders],
        "c": [o.customer_id for o in orders],
        "s": [o.sku for o in orders],
        "q": [o.quantity for o in orders],
        "a": [o.amount for o in orders],
    }
    new = set((await conn.execute(_NEW_ORDERS, columns)).scalars())  # RETURNING: only the new ones
    ids = await orchestrator.start_many(conn, OrderSaga, list(orders), keys=[o.order_id for o in orders])
    for order in orders:
        if order.order_id in new and pick_at_once(order):
            await orchestrator.signal(conn, OrderSaga, Picked(order_id=order.order_id), key=order.order_id)
    return ids


# The read model says which sagas wait at the step; a shop's warehouse would know it from its
# own pick list. Sagas of lost goods are left waiting until their wait times out.
_WAITING = text(
    "SELECT i.saga_id, i.key FROM saga_instances i JOIN orders o ON o.order_id = i.key "
    "WHERE i.saga_type = :saga AND i.status = 'running' AND i.step = :step AND NOT o.sku = ANY(:lost)"
)


@dataclass
class Warehouse:
    """Picks the goods of orders whose saga waits for them: one Picked signal per saga."""

    orchestrator: Orchestrator
    picked: set[str] = field(default_factory=set)  # saga ids signalled (the signal may be in flight)

    async def pick_waiting(self, engine: AsyncEngine) -> int:
        """Signal every saga waiting at wait_for_picked not signalled yet, in one transaction;
        returns how many."""
        async with engine.begin() as conn:
            waiting = (
                await conn.execute(
                    _WAITING, {"saga": OrderSaga.name, "step": WaitForPicked.name, "lost": sorted(LOST_SKUS)}
                )
            ).all()
            fresh = [(saga_id, key) for saga_id, key in waiting if saga_id not in self.picked]
            for saga_id, order_id in fresh:
                await self.orchestrator.signal(conn, OrderSaga, Picked(order_id=order_id), saga_id=saga_id)
        self.picked.update(saga_id for saga_id, _ in fresh)
        return len(fresh)

    async def run(self, engine: AsyncEngine, interval_s: float = 0.2) -> None:
        """Pick until cancelled."""
        while True:
            await self.pick_waiting(engine)
            await asyncio.sleep(interval_s)

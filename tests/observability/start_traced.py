"""Places orders as a shop would, inside its own `checkout` span: a process of the trace
test (`python -m tests.observability.start_traced ORDER_ID:SKU ...`); prints the sagas' ids."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

import orjson
from opentelemetry import trace

from eventstore import Database
from examples.orders.run_app import app
from examples.orders.saga import OrderData
from examples.orders.shop import place_orders
from tests.observability.spans_to_file import setup


async def main(orders: list[OrderData]) -> list[str]:
    async with Database(os.environ["DATABASE_URL"]) as database:
        orchestrator = app.orchestrator(database)
        with trace.get_tracer("shop").start_as_current_span("checkout"):
            async with database.engine.begin() as conn:
                return await place_orders(conn, orchestrator, orders, pick_at_once=lambda _: True)


if __name__ == "__main__":
    setup()
    wanted = [arg.split(":") for arg in sys.argv[1:]]
    orders = [
        OrderData(order_id=o, customer_id="c0", sku=sku, quantity=1, amount=Decimal(5)) for o, sku in wanted
    ]
    print(orjson.dumps(asyncio.run(main(orders))).decode())

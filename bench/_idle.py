"""Idle latency: one saga at a time, each started only once the one before has ended, so
nothing queues and every trip through Kafka is as fast as the processes can make it."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.orders.cluster import Cluster
from examples.orders.demo import place
from examples.orders.saga import OrderData

# From `saga.started` to the saga's end, both stamped by Postgres (the polling below only
# decides when the next saga starts).
_END_TO_END = text(
    "SELECT extract(epoch FROM e.recorded_at - s.recorded_at) * 1000 FROM es_events s "
    "JOIN es_events e ON e.stream_id = s.stream_id AND e.type IN ('saga.completed', 'saga.compensated') "
    "WHERE s.type = 'saga.started' AND s.data->>'key' = ANY(:keys)"
)
_STATUS = text("SELECT status FROM saga_instances WHERE key = :key")


async def idle_latencies(
    server: str, bootstrap: str, orders: list[OrderData], customers: int, stock: dict[str, int]
) -> list[float]:
    """The end-to-end milliseconds of each of `orders`' sagas, run one after another."""
    cluster = Cluster(server, bootstrap)
    database = await cluster.prepare(customers, Decimal(10**9), stock)
    engine = database.engine
    orchestrator = cluster.app.orchestrator(database)
    cluster.start_all()
    try:
        warm_up = [o.model_copy(update={"order_id": f"w{o.order_id}"}) for o in orders[:5]]
        for order in [*warm_up, *orders]:
            await place(engine, orchestrator, [order], pick_at_once=lambda _: True)
            await _ended(engine, order.order_id, deadline_s=60)
        async with engine.connect() as conn:
            rows = await conn.execute(_END_TO_END, {"keys": [o.order_id for o in orders]})
            return [float(ms) for ms in rows.scalars()]
    finally:
        cluster.stop_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()


async def _ended(engine: AsyncEngine, key: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            status = (await conn.execute(_STATUS, {"key": key})).scalar()
        if status in ("completed", "compensated"):
            return
        await asyncio.sleep(0.005)
    raise SystemExit(f"saga of order {key} did not end within {deadline_s}s")

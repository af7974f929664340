"""The order demo: every service its own process, real crashes midway, invariants checked.

    python -m examples.orders.demo [--orders 500] [--no-kill] [--keep]

Needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS (`make demo` sets them). Creates a fresh
database, starts the relay, an orchestrator worker and the customers, inventory and payments
participants as separate processes, places the orders, SIGKILLs the customers participant
and the relay halfway and restarts them, waits for every saga to end, checks the invariants
and prints a summary. The last line is one JSON object. Exits 1 if an invariant fails.

The warehouse (examples/orders/shop.py) picks about half the orders as they are placed (the
signal comes before the saga waits for it) and the others once their saga waits; `--lost`
orders are never picked, and compensate when the wait times out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.orders.cluster import Cluster
from examples.orders.invariants import check_invariants, pick_counts
from examples.orders.saga import PICK_TIMEOUT_S, OrderData
from examples.orders.shop import Warehouse, picked_at_once, place_orders
from saga import Orchestrator

CUSTOMERS = 50
CREDIT = Decimal(400)
STOCK = {"widget": 1_000_000, "scarce": 0, "slow": 1_000, "lost": 1_000}


def spread(orders: int, some: int, offset: int = 0) -> set[int]:
    """`some` positions spread evenly over `orders`."""
    return {(orders * (i + 1) // (some + 1) + offset) % max(orders, 1) for i in range(some)}


def plan(orders: int, slow: int, rng: random.Random, lost: int = 0) -> list[OrderData]:
    """Mostly good orders; some refused by payments, some out of stock, `slow` of them slow,
    `lost` of them never picked by the warehouse."""
    planned = []
    slow_at, lost_at = spread(orders, slow), spread(orders, lost, offset=1)
    for n in range(orders):
        roll = rng.random()
        customer = "declined" if roll < 0.05 else f"c{rng.randrange(CUSTOMERS)}"
        special = "slow" if n in slow_at else "lost" if n in lost_at else None
        sku = special or ("scarce" if 0.05 <= roll < 0.10 else "widget")
        planned.append(
            OrderData(
                order_id=f"o{n:05d}",
                customer_id=customer,
                sku=sku,
                quantity=rng.randint(1, 3),
                amount=Decimal(rng.randint(5, 60)),
            )
        )
    return planned


async def place(
    engine: AsyncEngine,
    orchestrator: Orchestrator,
    orders: list[OrderData],
    pick_at_once: Callable[[OrderData], bool] = picked_at_once,
) -> None:
    """The orders, their sagas and the signals of those picked at once, in one transaction."""
    async with engine.begin() as conn:
        await place_orders(conn, orchestrator, orders, pick_at_once=pick_at_once)


ENDED = "SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated', 'failed', 'compensation_failed')"


async def scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar()


def progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()
    if done >= total:
        sys.stderr.write("\n")


async def wait_until(engine: AsyncEngine, sql: str, target: int, label: str, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        n = int(await scalar(engine, sql))
        progress(label, n, target)
        if n >= target:
            return True
        await asyncio.sleep(0.25)
    sys.stderr.write("\n")
    return False


async def run(args: argparse.Namespace) -> int:
    server, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not server or not bootstrap:
        print("DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set (make demo does it)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    orders = plan(args.orders, args.slow, rng, args.lost)
    cluster = Cluster(server, bootstrap)
    database = await cluster.prepare(CUSTOMERS, CREDIT, STOCK)
    engine = database.engine
    orchestrator = cluster.app.orchestrator(database)
    print(f"database {cluster.name}; processes: relay, worker, customers, inventory, payments")
    cluster.start_all()
    started = time.monotonic()
    warehouse = asyncio.create_task(Warehouse(orchestrator).run(engine))
    try:
        batch = 25
        for i in range(0, len(orders), batch):
            # Closed loop: at most `window` sagas in flight, the way a shop's front end would
            # slow down rather than pile up orders faster than the services can take them.
            while i - int(await scalar(engine, ENDED)) >= args.window:  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.02)
            await place(engine, orchestrator, orders[i : i + batch])
            progress("placed", min(i + batch, len(orders)), len(orders))
            if args.kill and i < len(orders) // 2 <= i + batch:
                sys.stderr.write("\n")
                for role in ("customers", "relay"):
                    cluster.kill(role)
                    print(f"killed {role} with SIGKILL; restarting it")
                    cluster.start(role)
        ended = await wait_until(engine, ENDED, len(orders), "finished", args.deadline)
        elapsed = time.monotonic() - started
        if warehouse.done():  # it picks until cancelled: done means it failed
            warehouse.result()
        warehouse.cancel()
        drained = "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM outbox"
        await wait_until(engine, drained, 1, "outbox", 60)
        invariants = await check_invariants(engine, orders, STOCK)
        picks = await pick_counts(engine)
        async with engine.connect() as conn:
            counts: dict[str, int] = dict(
                (await conn.execute(text("SELECT status, count(*) FROM saga_instances GROUP BY 1"))).all()
            )
            p50, p99 = (
                await conn.execute(
                    text(
                        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP "
                        "(ORDER BY ms) FROM (SELECT extract(epoch FROM updated_at - created_at) * 1000 AS ms "
                        "FROM saga_instances) t"
                    )
                )
            ).one()
    finally:
        warehouse.cancel()
        await asyncio.gather(warehouse, return_exceptions=True)
        codes = cluster.stop_all()
        await orchestrator.aclose()
        await database.aclose()
        if not args.keep:
            await cluster.drop()
    invariants["every process stopped cleanly on SIGTERM"] = all(c == 0 for c in codes.values())
    ok = ended and all(invariants.values())
    print(f"\n{len(orders)} orders in {elapsed:.1f}s")
    for name in ("completed", "compensated", "failed", "compensation_failed"):
        print(f"  {name:<20} {counts.get(name, 0)}")
    print(f"  throughput           {len(orders) / elapsed:.1f} sagas/s")
    print(f"  latency per saga     p50 {p50 or 0:.0f} ms, p99 {p99 or 0:.0f} ms")
    print("  picked               " + ", ".join(f"{n} {when}" for when, n in picks.items()))
    for name, holds in invariants.items():
        print(f"  [{'ok' if holds else 'FAILED'}] {name}")
    if args.keep:
        print(
            f"kept database {cluster.name}: ORDERS_RUN={cluster.name} saga --database-url '{cluster.url}' "
            "--app examples.orders.run_app:app ls"
        )
    summary = {
        "completed": counts.get("completed", 0),
        "compensated": counts.get("compensated", 0),
        "failed": counts.get("failed", 0) + counts.get("compensation_failed", 0),
        "invariants_ok": ok,
        "sagas_per_s": round(len(orders) / elapsed, 1),
        "p50_ms": round(float(p50 or 0), 1),
        "p99_ms": round(float(p99 or 0), 1),
    }
    print(orjson.dumps(summary).decode())
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=500, help="how many orders to place (default 500)")
    parser.add_argument("--no-kill", dest="kill", action="store_false", help="no SIGKILL midway")
    parser.add_argument(
        "--slow", type=int, default=2, help="orders the slow warehouse answers late (default 2)"
    )
    parser.add_argument(
        "--lost",
        type=int,
        default=2,
        help=f"orders the warehouse never picks: they compensate after {PICK_TIMEOUT_S:g}s (default 2)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the demo database to inspect it with the CLI"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--window", type=int, default=100, help="sagas in flight at most (default 100)")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for the sagas to end")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()

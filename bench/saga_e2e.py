"""End-to-end saga benchmark: the order saga (five remote steps, two of them a parallel group,
a wait for the warehouse's signal, sent with each order, and a local step) through
Kafka, every service its own process, against the floor: its five participant
transactions (credit, stock, charge, ship, invoice) run directly in a loop, with no saga, no
outbox and no Kafka.

    python bench/saga_e2e.py [--sagas 3000] [--orders-per-tx 25] [--tracing off|on|both] [--idle 100]
                             [--relays 1] [--workers 1] [--participants 1]
                                                (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS set)

`--relays`, `--workers`, `--participants` (per participant service) start that many processes
of each; every topic gets 4 partitions per process of the largest count, so each consumer has
work. (One relay leads; the others stand by until the relays share the outbox.)

`--idle N` adds N sagas run one at a time (bench/_idle.py): their end-to-end p50 and p99.

`--tracing both` runs the sagas with tracing off, then on (the OpenTelemetry SDK in every
worker process, spans dropped by the exporter: bench/_tracing.py), twice each, and prints the
cost. This process, which starts the sagas, does not trace (OpenTelemetry sets a tracer
provider once per process): of a saga's spans, it would make the start and the first step.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import orjson
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _cpu
from bench._idle import idle_latencies
from bench._tracing import SETUP
from examples.orders.cluster import Cluster
from examples.orders.demo import place
from examples.orders.messages import ChargePayment, IssueInvoice, ReserveCredit, ReserveStock, ShipOrder
from examples.orders.saga import OrderData
from examples.orders.services import charge, issue_invoice, reserve_credit, reserve_stock, ship_order
from outbox import Envelope
from saga._process import run

# A catalogue and a customer base, not one hot row: every reservation of one SKU updates the
# same stock row, and a participant's concurrent partitions would queue on its lock.
CUSTOMERS = 100
SKUS = 100
STOCK = {f"sku{i}": 10**9 for i in range(SKUS)}
WINDOW = 200
PLACERS = 4


def _always(order: OrderData) -> bool:
    """Every order picked as it is placed: the wait never holds a saga up here."""
    return True


def orders(n: int) -> list[OrderData]:
    return [
        OrderData(
            order_id=f"b{i:06d}",
            customer_id=f"c{i % CUSTOMERS}",
            sku=f"sku{i % SKUS}",
            quantity=1,
            amount=Decimal(10),
        )
        for i in range(n)
    ]


async def saga_run(
    server: str,
    bootstrap: str,
    n: int,
    per_tx: int,
    tracing: bool = False,
    counts: Mapping[str, int] | None = None,
) -> tuple[float, list[float], dict[str, float]]:
    """Sagas/s, each remote step's latency, and CPU ms per saga by role (`counts`: processes
    per role, one each by default)."""
    counts = counts or {}
    cluster = Cluster(server, bootstrap, partitions=max(4, 4 * max(counts.values(), default=1)))
    database = await cluster.prepare(CUSTOMERS, Decimal(10**9), STOCK)
    engine = database.engine
    orchestrator = cluster.app.orchestrator(database)
    cluster.start_all(counts, {"SAGA_TELEMETRY_SETUP": SETUP} if tracing else None)
    try:
        # Warm up: processes started, consumer groups joined, a few sagas through.
        await place(
            engine,
            orchestrator,
            [o.model_copy(update={"order_id": f"w{o.order_id}"}) for o in orders(20)],
            pick_at_once=_always,
        )
        await wait_all(engine, 20, 120)
        planned = orders(n)
        pids = {name: p.pid for name, p in cluster.processes.items()}
        await checkpoint(engine)
        cpu_before = _cpu.sample(pids)
        started = time.monotonic()
        chunks = iter(range(0, n, per_tx))
        done = 0

        async def placer() -> None:
            # Like concurrent requests, each placing its orders in a transaction of its own.
            nonlocal done
            for i in chunks:
                # Closed loop: at most WINDOW sagas in flight, so the run measures throughput,
                # not how a backlog larger than the step timeouts turns into compensations.
                # (`done` only grows: a stale count errs on the side of waiting.)
                while i + 20 - done >= WINDOW:
                    done = max(done, await ended(engine))
                    if i + 20 - done >= WINDOW:
                        await asyncio.sleep(0.05)
                await place(engine, orchestrator, planned[i : i + per_tx], pick_at_once=_always)

        await asyncio.gather(*(placer() for _ in range(PLACERS)))
        await wait_all(engine, n + 20, 600)
        elapsed = time.monotonic() - started
        cpu_after = _cpu.sample(pids)
        cpu: dict[str, float] = {}
        for name, seconds in cpu_after.items():
            role = Cluster.role_of(name)
            cpu[role] = cpu.get(role, 0.0) + seconds - cpu_before.get(name, 0.0)
        async with engine.connect() as conn:
            # Per remote step: from its request to its success (a group's two members each), both
            # stamped by Postgres.
            rows = (
                (
                    await conn.execute(
                        text(
                            "SELECT extract(epoch FROM s.recorded_at - r.recorded_at) * 1000 FROM es_events r "
                            "JOIN es_events s ON s.stream_id = r.stream_id AND s.version > r.version "
                            "AND s.type = 'saga.step_succeeded' AND s.data->>'step' = r.data->>'step' "
                            "AND s.data->'attempt' = r.data->'attempt' "
                            "WHERE r.type = 'saga.step_requested' AND r.data->>'phase' = 'action' "
                            "AND r.data->>'step' NOT IN ('approve_order', 'wait_for_picked')"
                        )
                    )
                )
                .scalars()
                .all()
            )
        cpu_ms = {role: 1000 * seconds / n for role, seconds in cpu.items()}
        return n / elapsed, [float(r) for r in rows], cpu_ms
    finally:
        cluster.stop_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()


async def ended(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')")
                )
            ).scalar_one()
        )


async def wait_all(engine: AsyncEngine, n: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            done = (
                await conn.execute(
                    text("SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')")
                )
            ).scalar_one()
        if done >= n:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"only {done} of {n} sagas ended within {deadline_s}s")


async def checkpoint(engine: AsyncEngine) -> None:
    """Write out what earlier runs left dirty, so that a checkpoint does not land mid-measurement
    (needs a superuser, as the local server's is; skipped otherwise)."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CHECKPOINT"))
    except DBAPIError:
        pass


async def floor_run(server: str, bootstrap: str, n: int) -> float:
    """The participants' five transactions per order, called directly, one after another."""
    cluster = Cluster(server, bootstrap)
    database = await cluster.prepare(CUSTOMERS, Decimal(10**9), STOCK)
    engine = database.engine
    try:
        planned = orders(n)
        await checkpoint(engine)
        started = time.monotonic()
        for o in planned:
            envelope = Envelope(message_id=uuid.uuid4(), message_type="x", schema_version=1, attempt=1)
            async with engine.begin() as conn:
                await reserve_credit(
                    conn,
                    ReserveCredit(customer_id=o.customer_id, order_id=o.order_id, amount=o.amount),
                    envelope,
                )
            async with engine.begin() as conn:
                await reserve_stock(
                    conn, ReserveStock(order_id=o.order_id, sku=o.sku, quantity=o.quantity), envelope
                )
            async with engine.begin() as conn:
                await charge(
                    conn,
                    ChargePayment(order_id=o.order_id, customer_id=o.customer_id, amount=o.amount),
                    envelope,
                )
            async with engine.begin() as conn:
                await ship_order(
                    conn, ShipOrder(order_id=o.order_id, sku=o.sku, quantity=o.quantity), envelope
                )
            async with engine.begin() as conn:
                await issue_invoice(
                    conn,
                    IssueInvoice(order_id=o.order_id, customer_id=o.customer_id, amount=o.amount),
                    envelope,
                )
        return n / (time.monotonic() - started)
    finally:
        await database.aclose()
        await cluster.drop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument(
        "--orders-per-tx",
        type=int,
        default=25,
        help="orders placed (and sagas started, with start_many) per transaction",
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=0,
        metavar="N",
        help="then N sagas one at a time (each started once the last ended): end-to-end p50 and p99",
    )
    parser.add_argument(
        "--tracing",
        choices=["off", "on", "both"],
        default="off",
        help="OpenTelemetry SDK in every process (spans dropped); both: off and on, twice each",
    )
    for flag, what in (("relays", "relay"), ("workers", "orchestrator worker"), ("participants", "")):
        parser.add_argument(
            f"--{flag}",
            type=int,
            default=1,
            metavar="N",
            help=f"{what or 'processes per participant service'}{' processes' if what else ''} (default 1)",
        )
    args = parser.parse_args()
    if min(args.relays, args.workers, args.participants) < 1:
        parser.error("--relays, --workers and --participants must be >= 1")
    counts = {"relay": args.relays, "worker": args.workers} | dict.fromkeys(
        Cluster.roles[2:], args.participants
    )
    server, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not server or not bootstrap:
        sys.exit("DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set: run `make bench`")
    floor = await floor_run(server, bootstrap, args.sagas)
    if args.tracing == "both":
        await tracing_cost(server, bootstrap, args.sagas, args.orders_per_tx, floor, counts)
        return
    rate, steps, cpu_ms = await saga_run(
        server, bootstrap, args.sagas, args.orders_per_tx, tracing=args.tracing == "on", counts=counts
    )
    more: dict[str, object] = {
        "tracing": args.tracing,
        "relays": args.relays,
        "workers": args.workers,
        "participants": args.participants,
    }
    if args.idle:
        idle = await idle_latencies(server, bootstrap, orders(args.idle), CUSTOMERS, STOCK)
        p50, p99 = statistics.median(idle), statistics.quantiles(idle, n=100)[98]
        print(f"idle: {len(idle)} sagas one at a time, end to end p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        more |= {"idle_sagas": len(idle), "idle_p50_ms": round(p50, 1), "idle_p99_ms": round(p99, 1)}
    report(args.sagas, args.orders_per_tx, floor, rate, steps, cpu_ms, more)


def report(
    n: int,
    per_tx: int,
    floor: float,
    rate: float,
    steps: list[float],
    cpu_ms: dict[str, float],
    more: dict[str, object],
) -> None:
    p50 = statistics.median(steps)
    p99 = statistics.quantiles(steps, n=100)[98]
    print(f"{'measurement':<44}{'value':>14}")
    print(f"{'sagas/s (5 remote, 2 in a group, wait, local)':<44}{rate:>14,.1f}")
    print(f"{'floor: 5 participant transactions/s':<44}{floor:>14,.1f}")
    print(f"{'ratio sagas/floor':<44}{rate / floor:>14.3f}")
    print(f"{'remote step latency p50 (ms)':<44}{p50:>14.1f}")
    print(f"{'remote step latency p99 (ms)':<44}{p99:>14.1f}")
    for flag in ("relays", "workers", "participants"):
        what = f"processes: {flag}" + (" (per service)" if flag == "participants" else "")
        print(f"{what:<44}{more[flag]:>14}")
    for role, ms in sorted(cpu_ms.items(), key=lambda item: -item[1]):
        print(f"{'CPU ms per saga: ' + role:<44}{ms:>14.2f}")
    if cpu_ms:
        print(f"{'CPU ms per saga: all of the above':<44}{sum(cpu_ms.values()):>14.2f}")
    print(
        orjson.dumps(
            {
                "sagas_per_s": round(rate, 1),
                "floor_per_s": round(floor, 1),
                "floor_ratio": round(rate / floor, 3),
                "step_p50_ms": round(p50, 1),
                "step_p99_ms": round(p99, 1),
                "sagas": n,
                "orders_per_tx": per_tx,
                "cpu_ms_per_saga": round(sum(cpu_ms.values()), 2),
                **more,
            }
        ).decode()
    )


async def tracing_cost(
    server: str, bootstrap: str, n: int, per_tx: int, floor: float, counts: Mapping[str, int]
) -> None:
    """Off, on, off, on: throughput and CPU per saga with and without tracing, and the cost."""
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for tracing in (False, True, False, True):
        rate, _, cpu_ms = await saga_run(server, bootstrap, n, per_tx, tracing=tracing, counts=counts)
        runs[tracing].append((rate, sum(cpu_ms.values())))
        print(
            f"tracing {'on ' if tracing else 'off'}: {rate:,.1f} sagas/s, {sum(cpu_ms.values()):.2f} CPU ms per saga"
        )
    off_rate = statistics.mean(r for r, _ in runs[False])
    on_rate = statistics.mean(r for r, _ in runs[True])
    off_cpu = statistics.mean(c for _, c in runs[False])
    on_cpu = statistics.mean(c for _, c in runs[True])
    print(f"{'measurement':<44}{'off':>12}{'on':>12}{'cost':>10}")
    print(f"{'sagas/s':<44}{off_rate:>12,.1f}{on_rate:>12,.1f}{1 - on_rate / off_rate:>10.1%}")
    print(
        f"{'CPU ms per saga (all processes)':<44}{off_cpu:>12.2f}{on_cpu:>12.2f}{on_cpu / off_cpu - 1:>10.1%}"
    )
    print(f"{'floor: 5 participant transactions/s':<44}{floor:>12,.1f}")
    print(
        orjson.dumps(
            {
                "sagas": n,
                "sagas_per_s_off": round(off_rate, 1),
                "sagas_per_s_on": round(on_rate, 1),
                "throughput_cost": round(1 - on_rate / off_rate, 3),
                "cpu_ms_per_saga_off": round(off_cpu, 2),
                "cpu_ms_per_saga_on": round(on_cpu, 2),
                "cpu_cost": round(on_cpu / off_cpu - 1, 3),
                "relays": counts["relay"],
                "workers": counts["worker"],
                "participants": counts[Cluster.roles[2]],
            }
        ).decode()
    )


if __name__ == "__main__":
    run(main())  # on the event loop the workers use

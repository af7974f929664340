"""One chaos run: private servers, the order system's processes, orders placed at a steady
pace while the faults go in, then wait for every saga to end and look at what happened."""

from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import orjson
import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chaos import checks
from chaos.faults import Injector, run_schedule
from chaos.plan import CREDIT, STOCK, PlannedFault, customers_for, plan_faults, plan_orders
from chaos.processes import Supervisor
from chaos.records import RecordFaults
from chaos.report import Report
from chaos.services import ROOT, Broker, PrivatePostgres, private_broker
from eventstore import Database
from examples.orders.cluster import Cluster
from examples.orders.invariants import check_invariants
from examples.orders.saga import OrderData
from examples.orders.shop import Warehouse, place_orders
from saga import Orchestrator

T = TypeVar("T")
BATCH = 25
OUTAGE_PATIENCE_S = 300.0  # the harness's own queries wait this long for Postgres to come back
TRANSIENT = (sa_exc.SQLAlchemyError, psycopg.Error, OSError)
ENDED = "SELECT count(*) FROM saga_instances WHERE status IN ('completed', 'compensated')"


@dataclass(frozen=True)
class Options:
    sagas: int = 3000
    faults: dict[str, int] = field(default_factory=dict)
    duration_s: float = 240.0
    seed: int = 2026
    outage_s: float = 8.0
    slow: int = 3
    lost: int = 3
    window: int = 400
    state_dir: Path | None = None
    keep: bool = False
    auto_create_topics: bool = False
    stall_s: float = 180.0
    drain_deadline_s: float = 900.0
    # The relay sets aside rows of a topic the broker lacks after this long (its default is
    # 5 minutes, longer than a run): the bad-reply-topic fault's replies end there.
    unpublishable_after_s: float = 30.0


async def _retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Our own queries ride out the outages we cause."""
    deadline = time.monotonic() + OUTAGE_PATIENCE_S
    while True:
        try:
            return await attempt()
        except TRANSIENT as exc:
            if time.monotonic() > deadline:
                print(
                    f"chaos: {what}: Postgres unusable for {OUTAGE_PATIENCE_S:.0f}s: {exc}", file=sys.stderr
                )
                raise
            await asyncio.sleep(0.25)


async def _ended(engine: AsyncEngine) -> int:
    async def count() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text(ENDED))).scalar_one())

    return await _retrying("count ended sagas", count)


async def _place(engine: AsyncEngine, orchestrator: Orchestrator, orders: list[OrderData]) -> None:
    """Orders, their sagas and the signals of those picked at once, in one transaction; again
    after a lost connection, safely (an order already there starts and signals nothing)."""

    async def once() -> None:
        async with engine.begin() as conn:
            await place_orders(conn, orchestrator, orders)

    await _retrying("place orders", once)


async def _pick(engine: AsyncEngine, orchestrator: Orchestrator) -> None:
    """The warehouse, until cancelled: Picked for the sagas that wait for it."""
    warehouse = Warehouse(orchestrator)
    while True:
        await _retrying("pick orders", lambda: warehouse.pick_waiting(engine))
        await asyncio.sleep(0.2)


@dataclass
class Placing:
    """Orders placed so far; `gave_up` when the window stayed full with no saga ending."""

    placed: int = 0
    gave_up: str | None = None


async def place_all(
    engine: AsyncEngine,
    orchestrator: Orchestrator,
    orders: list[OrderData],
    options: Options,
    faults_done: Callable[[], float],
    placing: Placing,
) -> None:
    """At an even pace over 80% of the duration, with at most `window` sagas in flight, and
    never ahead of the faults: before the k-th of n faults, at most k/(n+1) of the orders (so
    that every fault meets sagas in flight, however long the ones before it took)."""
    started = last_end = time.monotonic()
    ended = 0
    while placing.placed < len(orders):
        share = min((time.monotonic() - started) / (0.8 * options.duration_s), faults_done())
        due = min(len(orders), math.ceil(len(orders) * share))
        now_ended = await _ended(engine)
        if now_ended != ended:
            ended, last_end = now_ended, time.monotonic()
        if placing.placed - ended >= options.window and time.monotonic() - last_end > options.stall_s:
            placing.gave_up = (
                f"placing stopped after {placing.placed} of {len(orders)} orders: {options.window} sagas "
                f"in flight and none ended for {options.stall_s:.0f}s"
            )
            print(f"!! {placing.gave_up}", file=sys.stderr)
            return
        if due <= placing.placed or placing.placed - ended >= options.window:
            await asyncio.sleep(0.1)
            continue
        chunk = orders[placing.placed : min(due, placing.placed + BATCH)]
        await _place(engine, orchestrator, chunk)
        placing.placed += len(chunk)


async def wait_all_ended(engine: AsyncEngine, total: int, stall_s: float, deadline_s: float) -> float:
    """Until every saga ended; gives up when none ended for `stall_s` or after `deadline_s`.
    Returns how long it waited."""
    started = last_change = time.monotonic()
    ended = -1
    while time.monotonic() - started < deadline_s and time.monotonic() - last_change < stall_s:
        now_ended = await _ended(engine)
        if now_ended >= total:
            break
        if now_ended != ended:
            ended, last_change = now_ended, time.monotonic()
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def _drained(engine: AsyncEngine, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            if not (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one():
                return
        await asyncio.sleep(0.25)


async def _progress(engine: AsyncEngine, total: int, started: float) -> None:
    while True:
        await asyncio.sleep(10)
        try:
            ended = await _ended(engine)
        except TRANSIENT:
            continue
        print(f".. {time.monotonic() - started:7.1f}s {ended}/{total} sagas ended", file=sys.stderr)


async def rebuild_differences(env: dict[str, str]) -> int | None:
    """`saga rebuild --verify`: the differences it finds (None when it could not run)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "saga", "--json", "rebuild", "--verify",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    try:
        return len(orjson.loads(out)["differences"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        print(f"saga rebuild --verify failed ({process.returncode}): {err.decode()[-2000:]}", file=sys.stderr)
        return None


def state_dir(options: Options) -> Path:
    if options.state_dir is not None:
        return options.state_dir.resolve()
    return ROOT / ".cache" / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{options.seed}-{os.getpid()}"


async def run(options: Options) -> Report:
    rng = random.Random(options.seed)
    orders = plan_orders(options.sagas, options.slow, rng, options.lost)
    planned = plan_faults(options.faults, options.duration_s, options.outage_s, rng)
    state = state_dir(options)
    if state.exists() and any(state.iterdir()):
        raise SystemExit(f"chaos: the state folder {state} is not empty; name a new one (or remove it)")
    postgres = PrivatePostgres(state / "postgres")
    broker = private_broker(state / "kafka", auto_create_topics=options.auto_create_topics)
    print(
        f"chaos: seed {options.seed}, {len(orders)} sagas, {len(planned)} faults; state in {state}",
        file=sys.stderr,
    )
    try:
        await asyncio.to_thread(postgres.create)
        bootstrap = await asyncio.to_thread(broker.up)
        return await _run_on(options, state, postgres, broker, bootstrap, orders, planned)
    finally:
        await _tear_down(broker, postgres, state, options.keep)


async def _tear_down(broker: Broker, postgres: PrivatePostgres, state: Path, keep: bool) -> None:
    """Best effort: a server that will not stop is said, and never hides the run's outcome."""
    for what, step in (("stopping kafka", broker.down), ("stopping postgres", postgres.destroy)):
        try:
            await asyncio.to_thread(step)
        except Exception as exc:
            print(f"chaos: {what} failed: {exc}", file=sys.stderr)
    if keep:
        print(f"chaos: kept {state} (logs in {state / 'logs'})", file=sys.stderr)
    else:
        shutil.rmtree(state, ignore_errors=True)


async def _run_on(
    options: Options,
    state: Path,
    postgres: PrivatePostgres,
    broker: Broker,
    bootstrap: str,
    orders: list[OrderData],
    planned: list[PlannedFault],
) -> Report:
    cluster = Cluster(postgres.url, bootstrap, name=f"chaos_{options.seed}", log_dir=state / "logs")
    await (await cluster.prepare(customers_for(len(orders)), CREDIT, STOCK)).aclose()
    records = RecordFaults(bootstrap, cluster.name)
    database = Database(cluster.url, pool_size=5, pool_pre_ping=True)
    engine = database.engine
    orchestrator = cluster.app.orchestrator(database)
    env = {**cluster.env(), "SAGA_RELAY_UNPUBLISHABLE_AFTER_S": str(options.unpublishable_after_s)}
    supervisor = Supervisor(env, state / "logs")
    injector = Injector(supervisor, postgres, broker, bootstrap, records, time.monotonic())
    placing = Placing()
    try:
        waited = await _drive(options, engine, orchestrator, injector, orders, planned, placing)
        elapsed = time.monotonic() - injector.started_at
        placed = orders[: placing.placed]
        return Report(
            options.seed, len(orders), len(placed), placing.gave_up, planned, injector.done,
            await checks.outcome(engine, placed, injector.done),
            await check_invariants(engine, placed, STOCK),
            await rebuild_differences(cluster.env()),
            supervisor.deaths, supervisor.unclean_stops, await records.dead_letters(), supervisor.log_lines(),
            elapsed, waited,
        )  # fmt: skip
    finally:
        if supervisor.running():
            await supervisor.terminate_all()
        await orchestrator.aclose()
        await database.aclose()


async def _drive(
    options: Options,
    engine: AsyncEngine,
    orchestrator: Orchestrator,
    injector: Injector,
    orders: list[OrderData],
    planned: list[PlannedFault],
    placing: Placing,
) -> float:
    """Start the processes, place the orders while the faults go in, wait for the sagas to
    end, stop the processes; returns how long the last sagas took to end."""
    supervisor = injector.supervisor
    supervisor.start_all()
    injector.started_at = supervisor.started_at = time.monotonic()
    stop = asyncio.Event()
    watch = asyncio.create_task(supervisor.watch(stop))
    progress = asyncio.create_task(_progress(engine, len(orders), injector.started_at))
    picking = asyncio.create_task(_pick(engine, orchestrator))
    try:
        await asyncio.gather(
            place_all(
                engine,
                orchestrator,
                orders,
                options,
                lambda: (len(injector.done) + 1) / (len(planned) + 1),
                placing,
            ),
            run_schedule(injector, planned),
        )
        waited = await wait_all_ended(engine, placing.placed, options.stall_s, options.drain_deadline_s)
        await _drained(engine, options.unpublishable_after_s + 30)
        return waited
    finally:
        stop.set()
        progress.cancel()
        picking.cancel()
        await asyncio.gather(watch, progress, picking, return_exceptions=True)
        supervisor.check()
        await supervisor.terminate_all()

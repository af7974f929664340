"""The two saga runs of bench/peers.py: ours (relay, worker and the three participants, each its
own process, through Kafka) and DBOS's (bench/_peers_dbos.py in a process of its own). Each
creates its databases on the same server, warms up, runs the orders with at most `window`
sagas in flight, checks the results and drops what it made."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import TextClause, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import _peers_orders as orders
from bench._peers_app import PeerOrder, PeerOrderSaga, peers_app
from bench._peers_cpu import CpuMeter, spent
from eventstore import Database, create_engine, libpq_url, upgrade
from examples.orders.cluster import ROLES, Cluster
from saga import App, Orchestrator, Topics, all_migrations

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 20
PLACERS = 4
_ENDED = text(
    "SELECT status, count(*) FROM saga_instances "
    "WHERE status IN ('completed', 'compensated', 'failed', 'compensation_failed') GROUP BY status"
)


@dataclass
class Result:
    sagas_per_s: float
    cpu_ms: dict[str, float]  # per saga, by process group
    duration_p50_ms: float  # of one saga, from its start to its end, under the run's load


# From a measured saga's start to its end, both stamped by Postgres (warm-up orders start with "w").
_OURS_P50 = text(
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.recorded_at - s.recorded_at)) "
    "* 1000 FROM es_events s JOIN es_events e ON e.stream_id = s.stream_id "
    "AND e.type IN ('saga.completed', 'saga.compensated') "
    "WHERE s.type = 'saga.started' AND s.data->>'key' NOT LIKE 'w%'"
)
# DBOS stamps a workflow's row when it creates it and when the workflow ends (epoch ms).
_DBOS_P50 = text(
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY updated_at - created_at) "
    "FROM dbos.workflow_status WHERE workflow_uuid NOT LIKE 'w%'"
)


async def _scalar(engine: AsyncEngine, query: TextClause) -> float:
    async with engine.connect() as conn:
        return float((await conn.execute(query)).scalar_one())


class PeersCluster(Cluster):
    """The order cluster's process handling, for the peers app (same roles)."""

    roles = ROLES

    @property
    def app(self) -> App:
        return peers_app.with_topic_prefix(self.name)

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "SAGA_APP": "bench._peers_app:app",
            "BENCH_RUN": self.name,
            "PYTHONPATH": str(ROOT),
        }

    def topic_names(self) -> list[str]:
        topics = Topics(self.name)
        return [topics.replies(PeerOrderSaga.name)] + [topics.commands(p) for p in self.roles[2:]]

    async def create(self) -> Database:
        """A fresh database (migrated, the order tables) and the run's topics. The caller closes it."""
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        database = Database(self.url, pool_size=20)
        await upgrade(database.engine, all_migrations())
        await orders.create_tables(database.engine)
        await self.create_topics()
        return database


async def _ended(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(_ENDED)).all()
    names = {"completed": "approved"}
    return Counter({names.get(status, status): int(n) for status, n in rows})


async def _start(engine: AsyncEngine, orchestrator: Orchestrator, batch: list[orders.Order]) -> None:
    data = [PeerOrder(**vars(o)) for o in batch]
    async with engine.begin() as conn:
        await orchestrator.start_many(conn, PeerOrderSaga, data, keys=[o.order_id for o in batch])


async def _wait_ended(engine: AsyncEngine, n: int, deadline_s: float) -> Counter[str]:
    deadline = time.monotonic() + deadline_s
    while (ended := await _ended(engine)).total() < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"ours: only {ended.total()} of {n} sagas ended within {deadline_s:.0f}s")
        await asyncio.sleep(0.05)
    return ended


async def _place(
    engine: AsyncEngine, orchestrator: Orchestrator, planned: list[orders.Order], per_tx: int, window: int
) -> None:
    """Starts the sagas from PLACERS tasks, `per_tx` per transaction, keeping at most about
    `window` in flight (their ends are counted by polling, every 50 ms)."""
    base = (await _ended(engine)).total()
    chunks = iter(range(0, len(planned), per_tx))
    done = 0
    placed = asyncio.Event()
    counted = asyncio.Condition()

    async def counter() -> None:
        nonlocal done
        while not placed.is_set():
            done = (await _ended(engine)).total() - base
            async with counted:
                counted.notify_all()
            await asyncio.sleep(0.05)

    async def placer() -> None:
        for i in chunks:
            async with counted:
                await counted.wait_for(lambda: i + per_tx - done <= window)  # noqa: B023 (awaited here)
            await _start(engine, orchestrator, planned[i : i + per_tx])

    counting = asyncio.create_task(counter())
    try:
        await asyncio.gather(*(placer() for _ in range(PLACERS)))
    finally:
        placed.set()
        await counting


async def ours(server: str, bootstrap: str, n: int, per_tx: int, window: int) -> Result:
    cluster = PeersCluster(server, bootstrap, log_dir=Path(".cache/peers"))
    database = await cluster.create()
    engine = database.engine
    orchestrator = cluster.app.orchestrator(database)
    meter = CpuMeter(server, [cluster.name], kafka=True)
    try:
        cluster.start_all()
        warm_up = orders.orders(WARM_UP, prefix="w")
        for order in warm_up:
            await _start(engine, orchestrator, [order])
        warmed = await _wait_ended(engine, WARM_UP, 120)
        before = await orders.totals(engine)
        planned = orders.orders(n)
        pids = {role: p.pid for role, p in cluster.processes.items()} | {"bench": os.getpid()}
        cpu_before = meter.sample(pids)
        started = time.monotonic()
        await _place(engine, orchestrator, planned, per_tx, window)
        ended = await _wait_ended(engine, n + WARM_UP, 600)
        elapsed = time.monotonic() - started
        cpu = spent(cpu_before, meter.sample(pids))
        await orders.check("ours", engine, before, planned, ended - warmed)
        p50 = await _scalar(engine, _OURS_P50)
        return Result(n / elapsed, {role: 1000 * s / n for role, s in cpu.items()}, p50)
    finally:
        cluster.stop_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()


def _database_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


async def dbos(server: str, n: int, window: int, api: str) -> Result:
    run = uuid.uuid4().hex[:8]
    app_db, system_db = f"peers_dbos_app_{run}", f"peers_dbos_sys_{run}"
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        for name in (app_db, system_db):
            conn.execute(f"CREATE DATABASE {name}")
    app_url, system_url = _database_url(server, app_db), _database_url(server, system_db)
    engine = create_engine(app_url)
    try:
        await orders.create_tables(engine)
        args = [app_url, system_url, "--sagas", str(n), "--window", str(window), "--api", api]
        meter = CpuMeter(server, [app_db, system_db], kafka=False)
        figures, cpu, before = await _dbos_process(engine, args, meter)
        await orders.check("DBOS", engine, before, orders.orders(n), Counter(figures["ended"]))
        p50 = await _check_workflows(system_url, n + WARM_UP)
        return Result(n / figures["elapsed_s"], {role: 1000 * s / n for role, s in cpu.items()}, p50)
    finally:
        await engine.dispose()
        with psycopg.connect(libpq_url(server), autocommit=True) as conn:
            for name in (app_db, system_db):
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _dbos_process(
    engine: AsyncEngine, args: list[str], meter: CpuMeter
) -> tuple[dict[str, Any], dict[str, float], orders.Totals]:
    """Runs bench/_peers_dbos.py with `args`: its figures, the CPU seconds it and Postgres
    spent on them, and the app's totals before its measured workflows."""
    script = str(ROOT / "bench" / "_peers_dbos.py")
    child = await asyncio.create_subprocess_exec(
        sys.executable, script, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        if (await child.stdout.readline()).strip() != b"ready":
            raise SystemExit(f"DBOS: {script} did not start (its errors are above)")
        totals = await orders.totals(engine)
        before = meter.sample({"dbos": child.pid})
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        line = await child.stdout.readline()
        cpu = spent(before, meter.sample({"dbos": child.pid}))
        child.stdin.write(b"stop\n")
        await child.stdin.drain()
    finally:
        child.stdin.close()
        code = await asyncio.wait_for(child.wait(), timeout=60)
    if code != 0 or not line:
        raise SystemExit(f"DBOS: {script} exited with {code} without its figures (its errors are above)")
    figures: dict[str, Any] = orjson.loads(line)
    return figures, cpu, totals


async def _check_workflows(system_url: str, want: int) -> float:
    """Checks that DBOS recorded every workflow as a success; returns their duration p50."""
    engine = create_engine(system_url)
    try:
        done = await _scalar(
            engine, text("SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'")
        )
        if done != want:
            raise SystemExit(f"DBOS: {done:.0f} workflows succeeded, expected {want}: no figures printed")
        return await _scalar(engine, _DBOS_P50)
    finally:
        await engine.dispose()

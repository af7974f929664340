"""A parallel group against the same steps in sequence: three remote steps whose participants
answer after 100, 200 and 300 ms, run one after another by one saga and as one group by
another. The group should end in about the time of its slowest member, the sequence in about
the sum. Every service its own process, through Kafka.

    python bench/parallel.py [--sagas 40]     (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS set)

Sagas are started one at a time, each once the one before ended, alternating the two forms:
this measures latency, not throughput. A saga's time is from its first event to its last
(`saga.started` to `saga.completed`), both stamped by Postgres. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.parallel_app import WAIT_MS, BenchData, ParallelSaga, SequenceSaga, bench_app
from eventstore import Database, libpq_url, upgrade
from examples.orders.cluster import Cluster
from saga import App, Orchestrator, Saga, Topics, all_migrations, stream_of
from saga._process import run

ROOT = Path(__file__).resolve().parent.parent
FORMS: dict[str, type[Saga[Any]]] = {"sequence": SequenceSaga, "parallel": ParallelSaga}
PARTICIPANTS = tuple(WAIT_MS)
WARM_UP = 3
SAGA_DEADLINE_S = 60.0

ELAPSED_MS = text(
    "SELECT extract(epoch FROM max(recorded_at) - min(recorded_at)) * 1000 FROM es_events "
    "WHERE stream_id = :stream AND type IN ('saga.started', 'saga.completed')"
)
STATUS = text("SELECT status FROM saga_instances WHERE saga_id = :id")


class BenchCluster(Cluster):
    """The order cluster's process handling, for the bench app: relay, worker, and one
    participant process per service (so the group's three commands are worked on at once)."""

    roles = ("relay", "worker", *PARTICIPANTS)

    @property
    def app(self) -> App:
        return bench_app.with_topic_prefix(self.name)

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "SAGA_APP": "bench.parallel_app:app",
            "BENCH_RUN": self.name,
            "PYTHONPATH": str(ROOT),
        }

    async def create(self) -> Database:
        """A fresh, migrated database and the run's topics. The caller closes it."""
        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        database = Database(self.url)
        await upgrade(database.engine, all_migrations())
        await self.create_topics()
        return database

    def topic_names(self) -> list[str]:
        topics = Topics(self.name)
        return [topics.replies(s.name) for s in FORMS.values()] + [topics.commands(p) for p in PARTICIPANTS]


async def one_saga(engine: AsyncEngine, orchestrator: Orchestrator, saga: type[Saga[Any]], ref: str) -> float:
    """Start one saga, wait until it completed; its time in ms, from its events."""
    async with engine.begin() as conn:
        saga_id = await orchestrator.start(conn, saga, BenchData(run=ref), key=ref)
    deadline = time.monotonic() + SAGA_DEADLINE_S
    status = None
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            status = (await conn.execute(STATUS, {"id": saga_id})).scalar()
            if status == "completed":
                return float((await conn.execute(ELAPSED_MS, {"stream": stream_of(saga_id)})).scalar_one())
        if status not in (None, "running"):
            raise SystemExit(
                f"{saga.name} {saga_id} ended {status}, not completed: see `saga show {saga_id}`"
            )
        await asyncio.sleep(0.01)  # pacing the next start only: the time measured is Postgres's
    raise SystemExit(f"{saga.name} {saga_id} did not complete within {SAGA_DEADLINE_S}s (status {status})")


async def measure(server: str, bootstrap: str, n: int) -> dict[str, list[float]]:
    cluster = BenchCluster(server, bootstrap, name=f"parallel_{os.getpid()}_{int(time.time())}")
    database = await cluster.create()
    orchestrator = cluster.app.orchestrator(database)
    cluster.start_all()
    try:
        times: dict[str, list[float]] = {form: [] for form in FORMS}
        for i in range(-WARM_UP, n):
            # Alternate which form goes first, so neither always follows the other.
            order = list(FORMS) if i % 2 == 0 else list(FORMS)[::-1]
            for form in order:
                elapsed = await one_saga(database.engine, orchestrator, FORMS[form], f"{form}-{i}")
                if i >= 0:
                    times[form].append(elapsed)
        return times
    finally:
        cluster.stop_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sagas", type=int, default=40, help="sagas of each form (at least 2)")
    args = parser.parse_args()
    if args.sagas < 2:
        parser.error("--sagas must be at least 2 (a p95 needs two values)")
    server, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not server or not bootstrap:
        sys.exit("DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set: run `make bench-parallel`")
    times = await measure(server, bootstrap, args.sagas)
    p50 = {form: statistics.median(values) for form, values in times.items()}
    p95s = {form: p95(values) for form, values in times.items()}
    waits = " + ".join(f"{ms}" for ms in WAIT_MS.values())
    print(f"{args.sagas} sagas of each form, one at a time; participants answer after {waits} ms")
    print(f"{'form':<40}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'sequence: three steps one after another':<40}{p50['sequence']:>10.1f}{p95s['sequence']:>10.1f}")
    print(f"{'parallel: the three steps in one group':<40}{p50['parallel']:>10.1f}{p95s['parallel']:>10.1f}")
    print(f"{'ratio parallel / sequence':<40}{p50['parallel'] / p50['sequence']:>10.3f}")
    print(
        f"{'floor: slowest step / sum of the steps':<40}{max(WAIT_MS.values()):>10}{sum(WAIT_MS.values()):>10}"
    )
    print(
        orjson.dumps(
            {
                "sagas_per_form": args.sagas,
                "step_waits_ms": list(WAIT_MS.values()),
                "sequence_p50_ms": round(p50["sequence"], 1),
                "sequence_p95_ms": round(p95s["sequence"], 1),
                "parallel_p50_ms": round(p50["parallel"], 1),
                "parallel_p95_ms": round(p95s["parallel"], 1),
                "p50_ratio": round(p50["parallel"] / p50["sequence"], 3),
            }
        ).decode()
    )


if __name__ == "__main__":
    run(main())  # on the event loop the workers use

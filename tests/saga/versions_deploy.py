"""A deployment of the Transfer saga's versions for the tests of issue 15 on the real services:
workers of one app version or another on one test's topics, started and stopped at will, and
sagas of version 1 brought to the `hold` step with no worker left running.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from eventstore import Database, Worker
from outbox import Relay
from saga import (
    App,
    Orchestrator,
    OrchestratorWorker,
    Saga,
    stream_of,
)
from tests.helpers import wait_for
from tests.saga.conftest import create_topics
from tests.saga.versions_app import (
    TransferData,
    TransferV1,
    app_v1,
)

SERVICES = ("ledger", "risk", "payee")
APP_V2 = "tests.saga.versions_app:app_v2"


@dataclass
class Deployment:
    """Workers of one app version or another, on one test's topics, started and stopped at will."""

    database: Database
    bootstrap: str
    prefix: str
    running: list[Worker] = field(default_factory=list)

    def orchestrator(self, app: App) -> Orchestrator:
        return app.with_topic_prefix(self.prefix).orchestrator(self.database)

    async def start(self, *workers: Worker) -> list[Worker]:
        for worker in workers:
            await worker.start()
            self.running.append(worker)
        return list(workers)

    async def stop(self, workers: Sequence[Worker]) -> None:
        for worker in reversed(workers):
            await worker.stop()
            self.running.remove(worker)

    def relay(self) -> Relay:
        return Relay(self.database, self.bootstrap, poll_interval_s=0.2)

    def orchestrator_worker(self, orchestrator: Orchestrator) -> OrchestratorWorker:
        return OrchestratorWorker(orchestrator, self.bootstrap, deadline_interval_s=0.1, retry_backoff_s=0.05)

    def participants(self, app: App, *services: str) -> list[Worker]:
        app = app.with_topic_prefix(self.prefix)
        return [app.participant(self.database, self.bootstrap, s, retry_backoff_s=0.05) for s in services]

    async def sql(self, query: str, **params: Any) -> list[Any]:
        async with self.database.engine.connect() as conn:
            return list((await conn.execute(text(query), params)).all())

    async def execute(self, statement: str, **params: Any) -> None:
        async with self.database.engine.begin() as conn:
            await conn.execute(text(statement), params)

    async def events(self, orchestrator: Orchestrator, saga_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, e.event.model_dump()) for e in await orchestrator.store.load(stream_of(saga_id))]


@asynccontextmanager
async def deployed(database: Database, kafka_bootstrap: str) -> AsyncIterator[Deployment]:
    """A deployment on topics of its own; its workers still running are stopped at the end."""
    prefix = f"v{uuid.uuid4().hex[:10]}"
    topics = app_v1.with_topic_prefix(prefix).orchestrator(database).topics
    await create_topics(
        kafka_bootstrap, [topics.replies("Transfer"), *(topics.commands(s) for s in SERVICES)]
    )
    here = Deployment(database, kafka_bootstrap, prefix)
    try:
        yield here
    finally:
        await here.stop(list(here.running))


async def start(orchestrator: Orchestrator, saga: type[Saga[Any]], n: int) -> list[str]:
    data = [
        TransferData(transfer_id=f"t-{uuid.uuid4().hex[:8]}", amount=10 + i, account="acc") for i in range(n)
    ]
    async with orchestrator.engine.begin() as conn:
        return await orchestrator.start_many(conn, saga, data)


async def v1_sagas_awaiting_hold(here: Deployment, n: int) -> tuple[Orchestrator, list[str]]:
    """`n` sagas of version 1 that debited and await `hold`, its command sent; no worker left."""
    v1 = here.orchestrator(app_v1)
    workers = await here.start(
        here.relay(), here.orchestrator_worker(v1), *here.participants(app_v1, "ledger")
    )
    saga_ids = await start(v1, TransferV1, n)

    async def all_await_hold() -> bool:
        rows = await here.sql(
            "SELECT count(*) FROM saga_instances i WHERE saga_id = ANY(:ids) AND step = 'hold' AND status = 'running' "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = i.saga_id)",
            ids=saga_ids,
        )
        return bool(rows[0][0] == n)

    await wait_for(all_await_hold, 60, f"{n} v1 sagas to await hold, its command published")
    await here.stop(workers)
    return v1, saga_ids


async def wait_completed(here: Deployment, saga_ids: list[str]) -> None:
    async def completed() -> bool:
        rows = await here.sql(
            "SELECT count(*) FROM saga_instances WHERE saga_id = ANY(:ids) AND status = 'completed'",
            ids=saga_ids,
        )
        return bool(rows[0][0] == len(saga_ids))

    await wait_for(completed, 60, f"{len(saga_ids)} sagas to complete")


def requested(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e["step"] for t, e in events if t == "saga.step_requested" and e["phase"] == "action"]

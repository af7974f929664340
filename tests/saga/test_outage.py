"""Time in which the orchestrator could not reach Postgres is not charged to a participant's
reply timeout: when the worker gets through again, the pending reply deadlines move later by
the outage, before any of them fires."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import MessageRegistry
from saga import Orchestrator, OrchestratorWorker, RemoteStep, Saga
from tests.helpers import wait_for
from tests.proxy import PostgresProxy

messages = MessageRegistry()


@messages.message("outage.ask")
class Ask(BaseModel):
    n: int


@messages.message("outage.answer")
class Answer(BaseModel):
    n: int


class Data(BaseModel):
    n: int


class AskStep(RemoteStep[Data]):
    participant = "somebody"
    timeout_s = 2.0

    def command(self, data: Data) -> Ask:
        return Ask(n=data.n)

    def on_reply(self, data: Data, reply: Answer) -> Data:
        return data

    def compensation(self, data: Data) -> Ask:
        return Ask(n=-data.n)

    compensation_reply = Answer


class AskSaga(Saga[Data]):
    steps = (AskStep,)


async def due_at(engine: AsyncEngine, saga_id: str) -> datetime:
    async with engine.connect() as conn:
        value: datetime = (
            await conn.execute(text("SELECT due_at FROM saga_deadlines WHERE saga_id = :s"), {"s": saga_id})
        ).scalar_one()
        return value


async def db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        value: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
        return value


async def test_a_postgres_outage_of_the_worker_is_not_charged_to_the_reply_timeout(
    database: Database,
    engine: AsyncEngine,
    database_url: str,
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="saga")
    prefix = f"outage{uuid.uuid4().hex[:8]}"
    direct = Orchestrator(database, [AskSaga], messages, topic_prefix=prefix)
    proxy = PostgresProxy(database_url)
    await proxy.start()
    proxied = Database(proxy.url, pool_pre_ping=True)
    worker = OrchestratorWorker(
        Orchestrator(proxied, [AskSaga], messages, topic_prefix=prefix),
        kafka_bootstrap,
        deadline_interval_s=0.1,
    )
    await worker.start()
    try:
        async with engine.begin() as conn:
            saga_id = await direct.start(conn, AskSaga, Data(n=1))
        first_due = await due_at(engine, saga_id)

        await proxy.cut()
        await wait_for(
            lambda: "waiting for it to come back" in caplog.text, 30, "the worker to see the outage"
        )
        # The outage outlasts the participant's whole timeout.
        await wait_for(
            lambda: _later_than(db_now(engine), first_due, 1.0), 30, "the timeout to pass during the outage"
        )
        await proxy.restore()
        await wait_for(lambda: "working again" in caplog.text, 30, "the worker to get through again")

        moved = await due_at(engine, saga_id)
        assert (moved - first_due).total_seconds() >= 2.0  # at least the part after the old due time
        state = await direct.load(saga_id)
        assert state.status == "running"
        assert [type(e.event).__name__ for e in await direct.store.load(f"saga:{saga_id}")] == [
            "SagaStarted",
            "StepRequested",
        ]
        assert "reply deadline(s) moved" in caplog.text
        # One line when the outage began, one when it ended, one for the credit: no tracebacks
        # every 0.1 s while Postgres was away.
        lines = [r for r in caplog.records if r.name == "saga._worker"]
        assert len(lines) <= 4, [r.getMessage() for r in lines]
        assert not any(r.exc_info for r in lines)
    finally:
        await worker.stop()
        await proxied.aclose()
        await proxy.cut()
        await direct.aclose()


async def _later_than(now: object, when: datetime, by_s: float) -> bool:
    current = await now  # type: ignore[misc]
    assert isinstance(current, datetime)
    return (current - when).total_seconds() > by_s


async def test_a_kafka_outage_of_the_worker_is_not_charged_to_the_reply_timeout(
    database: Database, engine: AsyncEngine, private_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's broker goes down for longer than the step's timeout: no deadline fires
    meanwhile, and when the broker is back the reply deadline has moved later by the outage."""
    caplog.set_level(logging.WARNING, logger="saga")
    bootstrap = private_broker.bootstrap()
    prefix = f"koutage{uuid.uuid4().hex[:8]}"
    orchestrator = Orchestrator(database, [AskSaga], messages, topic_prefix=prefix)
    worker = OrchestratorWorker(orchestrator, bootstrap, deadline_interval_s=0.1)
    await worker.start()
    try:
        async with engine.begin() as conn:
            saga_id = await orchestrator.start(conn, AskSaga, Data(n=2))
            await conn.execute(text("DELETE FROM outbox"))  # as the relay would: the command went out
        first_due = await due_at(engine, saga_id)

        await asyncio.to_thread(private_broker.down)
        try:
            await wait_for(
                lambda: "no Kafka broker answers" in caplog.text, 30, "the worker to see Kafka gone"
            )
            await wait_for(
                lambda: _later_than(db_now(engine), first_due, 1.0),
                30,
                "the timeout to pass during the outage",
            )
            state = await orchestrator.load(saga_id)
            assert state.version == 2  # nothing fired while the worker could not reach Kafka
        finally:
            await asyncio.to_thread(private_broker.up)
        await wait_for(lambda: "reply deadline(s) moved" in caplog.text, 60, "the outage to be credited")
        moved = await due_at(engine, saga_id)
        assert (moved - first_due).total_seconds() >= 2.0
        assert (await orchestrator.load(saga_id)).status == "running"
    finally:
        await worker.stop()

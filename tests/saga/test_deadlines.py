"""Deadlines whose decisions keep failing back off, are counted, and end parked with their
reason: they never starve the deadlines of healthy sagas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import MessageRegistry
from saga import Orchestrator, RemoteStep, RetryPolicy, Saga, fire_due_deadlines
from saga._operations import list_sagas
from tests.helpers import wait_for

messages = MessageRegistry()


@messages.message("deadlines.poke")
class Poke(BaseModel):
    n: int


@messages.message("deadlines.poked")
class Poked(BaseModel):
    n: int


class Data(BaseModel):
    n: int


class Fragile(RemoteStep[Data]):
    """Its command cannot be built once `broken` is set: every re-send fails."""

    participant = "fragile"
    timeout_s = 0.2
    retry = RetryPolicy(attempts=5)
    reply = Poked
    compensation_reply = Poked
    broken: ClassVar[bool] = False

    def command(self, data: Data) -> Poke:
        if type(self).broken:
            raise RuntimeError("the command cannot be built")
        return Poke(n=data.n)

    def compensation(self, data: Data) -> Poke:
        return Poke(n=-data.n)


class FragileSaga(Saga[Data]):
    steps = (Fragile,)


class Calm(Fragile):
    name = "calm"
    participant = "calm"


class CalmSaga(Saga[Data]):
    steps = (Calm,)


@pytest.fixture
async def orchestrator(database: Database) -> AsyncIterator[Orchestrator]:
    Fragile.broken = False
    orch = Orchestrator(database, [FragileSaga, CalmSaga], messages, topic_prefix="deadlines")
    try:
        yield orch
    finally:
        Fragile.broken = False
        await orch.aclose()


async def test_failing_deadlines_back_off_and_park_without_starving_a_healthy_one(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        fragile = await orchestrator.start_many(conn, FragileSaga, [Data(n=i) for i in range(120)])
    async with engine.begin() as conn:
        # Older than every other deadline: they come first in the due queue.
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 hour'"))
        calm = await orchestrator.start(conn, CalmSaga, Data(n=1))
        await conn.execute(text("DELETE FROM outbox"))  # as the relay would: the commands went out
    Fragile.broken = True
    Calm.broken = False

    async def calm_timed_out() -> bool:
        await fire_due_deadlines(orchestrator, limit=100, backoff_s=60)
        state = await orchestrator.load(calm)
        return state.awaiting is not None and state.awaiting.attempt == 2

    await wait_for(calm_timed_out, 30, "the healthy saga's timeout to fire beside 120 failing deadlines")
    async with engine.connect() as conn:
        failures = (
            (await conn.execute(text("SELECT failures FROM saga_deadlines WHERE saga_type = 'FragileSaga'")))
            .scalars()
            .all()
        )
    assert sorted(set(failures)) == [1]  # each failed once, then backed off a minute

    # With no backoff and three tries allowed, they end parked, with the reason.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 second'"))
    for _ in range(3):
        await fire_due_deadlines(orchestrator, limit=200, max_failures=3, backoff_s=0)
    async with engine.connect() as conn:
        parked = (
            await conn.execute(text("SELECT count(*) FROM saga_deadlines WHERE parked_at IS NOT NULL"))
        ).scalar()
        due = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM saga_deadlines WHERE due_at <= now() AND parked_at IS NULL AND saga_type = 'FragileSaga'"
                )
            )
        ).scalar()
    assert parked == 120
    assert due == 0
    assert await fire_due_deadlines(orchestrator, limit=200, max_failures=3, backoff_s=0) == 0
    stuck = await list_sagas(engine, stuck_after_s=3600, limit=500)
    assert {r["saga_id"] for r in stuck} == set(fragile)
    assert all(r["last_error"].startswith("parked: RuntimeError: the command cannot be built") for r in stuck)

    # An operator's resume, once the code is fixed, takes a parked saga up again.
    Fragile.broken = False
    resumed = await orchestrator.resume(fragile[0], "command fixed")
    assert resumed.awaiting is not None
    assert resumed.awaiting.kind == "reply"
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT failures, parked_at FROM saga_deadlines WHERE saga_id = :s"), {"s": fragile[0]}
            )
        ).one()
    assert tuple(row) == (0, None)


async def test_a_reply_timeout_starts_when_the_command_is_published(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    """No relay runs: the command waits in the outbox, so the participant cannot have been
    silent; its timeout starts over each time it comes due, and runs once it was published."""
    async with engine.begin() as conn:
        saga_id = await orchestrator.start(conn, CalmSaga, Data(n=7))
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 second'"))
    assert await fire_due_deadlines(orchestrator) == 0
    state = await orchestrator.load(saga_id)
    assert state.awaiting is not None
    assert (state.awaiting.attempt, state.version) == (1, 2)  # no timeout recorded
    async with engine.connect() as conn:
        left = (
            await conn.execute(text("SELECT extract(epoch FROM due_at - now()) FROM saga_deadlines"))
        ).scalar_one()
    assert 0 < left <= Calm.timeout_s  # due again a whole timeout from now

    # The relay publishes it (and deletes the row); the next time it comes due, it fires.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM outbox"))
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 second'"))
    assert await fire_due_deadlines(orchestrator) == 1
    state = await orchestrator.load(saga_id)
    assert state.awaiting is not None
    assert state.awaiting.attempt == 2  # timed out, sent again

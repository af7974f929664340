"""saga_deadlines holds one row per (saga, step): the members of a parallel group, a timer and a
wait each keep their own deadline, set, cleared and fired independently of the others."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, driver_connection, upgrade
from outbox import MessageRegistry
from saga import (
    Delay,
    Orchestrator,
    Parallel,
    RemoteStep,
    RetryPolicy,
    Saga,
    all_migrations,
    fire_due_deadlines,
)
from saga import _repository as repo
from saga._decision import Deadline, DeadlineDue
from saga._state import Awaiting, SagaState, Status
from tests.cli.test_cli import Cli

messages = MessageRegistry()


@messages.message("rows.ask")
class Ask(BaseModel):
    n: int


@messages.message("rows.answer")
class Answer(BaseModel):
    n: int


class Data(BaseModel):
    n: int


class Left(RemoteStep[Data]):
    participant = "left"
    timeout_s = 30.0
    reply = Answer
    compensation_reply = Answer

    def command(self, data: Data) -> Ask:
        return Ask(n=data.n)

    def compensation(self, data: Data) -> Ask:
        return Ask(n=-data.n)


class Right(Left):
    name = "right"
    participant = "right"


class TwoSteps(Saga[Data]):
    """The rows hold step names only: what shape of saga set them does not matter to the table
    (a parallel group's members, a timer after a step...)."""

    steps = (Left, Right)


class Twice(Left):
    name = "twice"
    participant = "twice"
    retry = RetryPolicy(attempts=2)


class AlsoTwice(Twice):
    name = "also_twice"
    participant = "also_twice"


class GroupSaga(Saga[Data]):
    steps = (Parallel(Twice, AlsoTwice, Delay(60)),)


class Recording(Orchestrator):
    """Records the deadlines the worker's loop hands it (the decider is not under test here)."""

    fired: list[tuple[str, DeadlineDue]]

    async def on_deadline(self, conn: AsyncConnection, saga_id: str, due: DeadlineDue) -> None:
        self.fired.append((saga_id, due))


@pytest.fixture
async def orchestrator(database: Database) -> AsyncIterator[Recording]:
    orch = Recording(database, [TwoSteps], messages, topic_prefix=f"rows{uuid.uuid4().hex[:8]}")
    orch.fired = []
    try:
        yield orch
    finally:
        await orch.aclose()


def group_state(saga_id: str, status: Status = "running", waiting: list[Awaiting] | None = None) -> SagaState:
    """A saga with both members of its group in flight (as the decider leaves it)."""
    if waiting is None:
        waiting = [
            Awaiting(step="left", phase="action", attempt=1),
            Awaiting(step="right", phase="action", attempt=1),
        ]
    return SagaState(
        saga_id=saga_id, saga_type=TwoSteps.name, status=status, data={"n": 1}, waiting=waiting, version=2
    )


def reply(step: str, due_at: datetime, attempt: int = 1) -> Deadline:
    return Deadline(step, "action", attempt, "reply", due_at)


async def write(engine: AsyncEngine, *decisions: tuple[SagaState, list[Deadline], list[str]]) -> None:
    """What the orchestrator's flush does with decisions: one SagaWrites, one pipeline."""
    writes = repo.SagaWrites.empty()
    for state, deadlines, cleared in decisions:
        writes.add(state, deadlines, cleared)
    async with engine.begin() as conn:
        driver = await driver_connection(conn)
        async with driver.pipeline():
            await writes.execute(driver)


async def rows(engine: AsyncEngine, saga_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return await repo.deadline_rows(await driver_connection(conn), saga_id)


async def db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        return await repo.database_now(await driver_connection(conn))


async def test_two_steps_keep_two_deadlines_that_fire_one_by_one(
    orchestrator: Recording, engine: AsyncEngine
) -> None:
    now = await db_now(engine)
    saga_id = "group-1"
    await write(
        engine,
        (
            group_state(saga_id),
            [reply("left", now - timedelta(seconds=1)), reply("right", now + timedelta(hours=1))],
            [],
        ),
    )
    assert [(r["step"], r["kind"], r["attempt"]) for r in await rows(engine, saga_id)] == [
        ("left", "reply", 1),
        ("right", "reply", 1),
    ]  # soonest first

    assert await fire_due_deadlines(orchestrator) == 1
    assert orchestrator.fired == [(saga_id, DeadlineDue("left", "action", 1, "reply"))]
    assert [r["step"] for r in await rows(engine, saga_id)] == ["right"]  # the fired row went, alone

    async with engine.begin() as conn:
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 second'"))
    assert await fire_due_deadlines(orchestrator) == 1
    assert orchestrator.fired[1:] == [(saga_id, DeadlineDue("right", "action", 1, "reply"))]
    assert await rows(engine, saga_id) == []
    assert await fire_due_deadlines(orchestrator) == 0


async def test_a_group_member_times_out_and_a_timer_fires_each_on_its_own_row(
    database: Database, engine: AsyncEngine
) -> None:
    """The real decider: a group of two remote steps and a timer starts three rows; each
    firing changes its own step's row only."""
    orchestrator = Orchestrator(database, [GroupSaga], messages, topic_prefix=f"rows{uuid.uuid4().hex[:8]}")
    async with engine.begin() as conn:
        saga_id = await orchestrator.start(conn, GroupSaga, Data(n=3))
        await conn.execute(text("DELETE FROM outbox"))  # as the relay would: the commands went out
    started = {r["step"]: r for r in await rows(engine, saga_id)}
    assert {s: (r["kind"], r["attempt"]) for s, r in started.items()} == {
        "twice": ("reply", 1),
        "also_twice": ("reply", 1),
        "delay_60s": ("timer", 1),
    }

    async def make_due(step: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE saga_deadlines SET due_at = now() - interval '1 second' WHERE step = :s"),
                {"s": step},
            )

    await make_due("twice")
    assert await fire_due_deadlines(orchestrator) == 1  # timed out: sent again, attempt 2
    after = {r["step"]: r for r in await rows(engine, saga_id)}
    assert after["twice"]["attempt"] == 2
    assert after["also_twice"] == started["also_twice"]
    assert after["delay_60s"] == started["delay_60s"]

    await make_due("delay_60s")
    assert await fire_due_deadlines(orchestrator) == 1  # the timer is done: its row goes
    assert {r["step"]: r for r in await rows(engine, saga_id)} == {
        "twice": after["twice"],
        "also_twice": started["also_twice"],
    }
    state = await orchestrator.load(saga_id)
    assert {(w.step, w.attempt) for w in state.waiting} == {("twice", 2), ("also_twice", 1)}


async def test_a_step_is_set_replaced_and_cleared_without_touching_the_others(engine: AsyncEngine) -> None:
    now = await db_now(engine)
    soon, later = now + timedelta(minutes=1), now + timedelta(minutes=2)
    state = group_state("group-2")
    other = group_state("other")
    await write(
        engine,
        (state, [reply("left", soon), reply("right", later)], []),
        (other, [reply("left", soon)], []),
    )
    async with engine.begin() as conn:  # a failed firing counted on `right`: a fresh row forgets it
        due = repo.DueDeadline("group-2", "right", "action", 1, "reply")
        await repo.deadline_failed(await driver_connection(conn), due, "boom", 0, 1)

    # `left` answered and is retried later, `right` times out: one decision sets and clears.
    await write(engine, (state, [Deadline("left", "action", 2, "retry", later)], ["right"]))
    assert [(r["step"], r["attempt"], r["kind"], r["due_at"]) for r in await rows(engine, "group-2")] == [
        ("left", 2, "retry", later)
    ]
    await write(engine, (state, [reply("right", soon, attempt=2)], []))
    assert [
        (r["step"], r["attempt"], r["failures"], r["parked_at"]) for r in await rows(engine, "group-2")
    ] == [
        ("right", 2, 0, None),
        ("left", 2, 0, None),
    ]
    # A step both set and cleared in one decision keeps its new deadline.
    await write(engine, (state, [reply("left", soon, attempt=3)], ["left", "right"]))
    assert [(r["step"], r["attempt"]) for r in await rows(engine, "group-2")] == [("left", 3)]
    assert [r["step"] for r in await rows(engine, "other")] == ["left"]  # another saga's rows stay


@pytest.mark.parametrize("status", ["completed", "compensated", "failed", "compensation_failed", "parked"])
async def test_a_saga_that_ended_loses_all_its_rows(engine: AsyncEngine, status: Status) -> None:
    now = await db_now(engine)
    await write(engine, (group_state("ending"), [reply("left", now), reply("right", now)], []))
    await write(engine, (group_state("ending", status, []), [], []))  # its decision named no step
    assert await rows(engine, "ending") == []


async def test_a_stopped_saga_with_a_member_still_in_flight_keeps_that_row(engine: AsyncEngine) -> None:
    now = await db_now(engine)
    await write(engine, (group_state("stopping"), [reply("left", now), reply("right", now)], []))
    still = [Awaiting(step="right", phase="action", attempt=1)]
    await write(engine, (group_state("stopping", "compensation_failed", still), [], ["left"]))
    assert [r["step"] for r in await rows(engine, "stopping")] == ["right"]


async def test_the_outage_credit_moves_reply_deadlines_but_not_timers(engine: AsyncEngine) -> None:
    now = await db_now(engine)
    due = now + timedelta(minutes=5)
    waiting = [
        Awaiting(step="left", phase="action", attempt=1),
        Awaiting(step="delay_60s", phase="action", attempt=1, kind="timer", due_at=due),
    ]
    await write(
        engine,
        (
            group_state("credited", waiting=waiting),
            [reply("left", due), Deadline("delay_60s", "action", 1, "timer", due)],
            [],
        ),
    )
    async with engine.begin() as conn:
        moved, credited = await repo.credit_outage(await driver_connection(conn), 10.0)
    assert (moved, credited) == (1, 10.0)
    assert {r["step"]: (r["kind"], r["due_at"]) for r in await rows(engine, "credited")} == {
        "left": ("reply", due + timedelta(seconds=10)),
        "delay_60s": ("timer", due),  # a wall-clock time: an outage does not move it
    }


async def test_ls_stuck_shows_a_saga_with_two_parked_deadlines_once(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> None:
    now = await db_now(engine)
    await write(engine, (group_state("parked-twice"), [reply("left", now), reply("right", now)], []))
    async with engine.begin() as conn:
        driver = await driver_connection(conn)
        for step in ("left", "right"):
            due = repo.DueDeadline("parked-twice", step, "action", 1, "reply")
            assert await repo.deadline_failed(driver, due, f"{step} broke", 0, 1) == (1, True)

    listed = await Cli(database_url, kafka_bootstrap, "rows")("--json", "ls", "--stuck")
    assert listed.code == 0, listed.describe()
    stuck = listed.json()
    assert [r["saga_id"] for r in stuck] == ["parked-twice"]
    assert stuck[0]["last_error"] in ("parked: left broke", "parked: right broke")


async def test_the_migration_keeps_the_single_rows_of_a_database_before_it(
    engine: AsyncEngine, database_url: str
) -> None:
    """A schema migrated up to saga 0003 (one row per saga) holds rows; saga 0004 keeps them
    as they are and then takes a second step of the same saga."""
    before = [m for m in all_migrations() if not (m.component == "saga" and m.version >= 4)]
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA old"))
    async with Database(database_url, connect_args={"options": "-c search_path=old"}) as old:
        await upgrade(old.engine, before)
        async with old.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO saga_deadlines (saga_id, saga_type, step, phase, attempt, kind, due_at, "
                    "failures, last_error, parked_at) VALUES "
                    "('a', 'GroupSaga', 'left', 'action', 1, 'reply', now(), 0, NULL, NULL), "
                    "('b', 'GroupSaga', 'right', 'compensation', 2, 'retry', now(), 3, 'boom', now())"
                )
            )
            kept = (await conn.execute(text("SELECT * FROM saga_deadlines ORDER BY saga_id"))).all()

        applied = await upgrade(
            old.engine, [m for m in all_migrations() if m.component != "saga" or m.version <= 4]
        )
        assert [(m.component, m.version, m.name) for m in applied] == [("saga", 4, "deadline_per_step")]
        async with old.engine.begin() as conn:
            assert (await conn.execute(text("SELECT * FROM saga_deadlines ORDER BY saga_id"))).all() == kept
            key = (
                await conn.execute(
                    text(
                        "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i "
                        "CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
                        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                        "WHERE i.indrelid = 'old.saga_deadlines'::regclass AND i.indisprimary"
                    )
                )
            ).scalar_one()
            assert key == ["saga_id", "step"]
            indexes = (
                (
                    await conn.execute(
                        text(
                            "SELECT indexname FROM pg_indexes WHERE schemaname = 'old' AND tablename = 'saga_deadlines'"
                        )
                    )
                )
                .scalars()
                .all()
            )
            assert sorted(indexes) == ["saga_deadlines_due", "saga_deadlines_pkey"]
            await conn.execute(
                text(
                    "INSERT INTO saga_deadlines (saga_id, saga_type, step, phase, attempt, kind, due_at) "
                    "VALUES ('a', 'GroupSaga', 'right', 'action', 1, 'reply', now())"
                )
            )
            count = (
                await conn.execute(text("SELECT count(*) FROM saga_deadlines WHERE saga_id = 'a'"))
            ).scalar_one()
            assert count == 2

"""Local steps run in the orchestrator's transaction: a failing one leaves none of its writes,
and never takes another saga's writes with it, also when many sagas are decided together."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from examples.orders.messages import CreditReserved, messages
from examples.orders.saga import OrderData, ReserveCreditStep
from outbox import Delivery
from saga import LocalStep, Orchestrator, Refused, Saga, StepKind, UnknownSagaError, saga_id_for


class Note(LocalStep[OrderData]):
    """Writes a row, then refuses for the customer named 'bad'."""

    name = "note"
    kind = StepKind.COMPENSATABLE

    async def action(self, conn: AsyncConnection, data: OrderData) -> None:
        await conn.execute(text("INSERT INTO notes VALUES (:o)"), {"o": data.order_id})
        if data.customer_id == "bad":
            raise Refused("bad customer")

    async def compensate(self, conn: AsyncConnection, data: OrderData) -> None:
        await conn.execute(text("DELETE FROM notes WHERE order_id = :o"), {"o": data.order_id})


class NoteFirst(Saga[OrderData]):
    steps = (Note, ReserveCreditStep)


class NoteAfterCredit(Saga[OrderData]):
    steps = (ReserveCreditStep, Note)


def order(order_id: str, customer: str) -> OrderData:
    return OrderData(order_id=order_id, customer_id=customer, sku="widget", quantity=1, amount=Decimal(1))


async def notes(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT order_id FROM notes ORDER BY 1"))).scalars())


async def test_failing_local_steps_undo_only_their_own_writes(
    database: Database, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (order_id text PRIMARY KEY)"))
    orchestrator = Orchestrator(database, [NoteFirst, NoteAfterCredit], messages, topic_prefix="local")
    try:
        # Three starts in one transaction, each running its local step at once.
        async with engine.begin() as conn:
            first = [
                await orchestrator.start(conn, NoteFirst, order(f"s{i}", c), key=f"s{i}")
                for i, c in enumerate(["ok", "bad", "ok"])
            ]
        assert await notes(engine) == ["s0", "s2"]
        assert [(await orchestrator.load(s)).status for s in first] == ["running", "compensated", "running"]

        # Replies for four sagas decided together: their local steps share one transaction.
        async with engine.begin() as conn:
            later = [
                await orchestrator.start(conn, NoteAfterCredit, order(f"r{i}", c), key=f"r{i}")
                for i, c in enumerate(["ok", "bad", "bad", "ok"])
            ]
        async with engine.begin() as conn:
            deliveries = [
                Delivery(
                    orchestrator.handle_reply,
                    CreditReserved(reservation_id=f"credit-r{i}"),
                    orchestrator.outbox.envelope(
                        CreditReserved(reservation_id=f"credit-r{i}"),
                        saga_id=saga_id,
                        saga_type="NoteAfterCredit",
                        step="reserve_credit",
                        phase="action",
                        attempt=1,
                    ),
                )
                for i, saga_id in enumerate(later)
            ]
            await orchestrator.handle_replies(conn, deliveries)
        assert await notes(engine) == ["r0", "r3", "s0", "s2"]
        states = [await orchestrator.load(s) for s in later]
        assert [s.status for s in states] == ["completed", "compensating", "compensating", "completed"]
        assert states[1].last_error == "note failed: bad customer"
    finally:
        await orchestrator.aclose()


class HoldsRow(LocalStep[OrderData]):
    """Waits at most 50 ms for a row another transaction may hold: a lock timeout (55P03)."""

    name = "hold_row"
    kind = StepKind.COMPENSATABLE

    async def action(self, conn: AsyncConnection, data: OrderData) -> None:
        await conn.execute(text("SET LOCAL lock_timeout = '50ms'"))
        await conn.execute(text("SELECT 1 FROM notes WHERE order_id = 'held' FOR UPDATE"))
        await conn.execute(text("SET LOCAL lock_timeout = 0"))

    async def compensate(self, conn: AsyncConnection, data: OrderData) -> None:
        return None


class HoldFirst(Saga[OrderData]):
    steps = (HoldsRow, ReserveCreditStep)


async def test_contention_in_a_local_step_reruns_the_work_and_is_no_failure(
    database: Database, engine: AsyncEngine
) -> None:
    """A lock timeout inside a local step is a collision, not the step's failure: the whole
    transaction fails (its caller reruns it) and the saga is not compensated."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (order_id text PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO notes VALUES ('held')"))
    orchestrator = Orchestrator(database, [HoldFirst], messages, topic_prefix="contention")
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT 1 FROM notes WHERE order_id = 'held' FOR UPDATE"))
            with pytest.raises(DBAPIError) as caught:
                async with engine.begin() as conn:
                    await orchestrator.start(conn, HoldFirst, order("c1", "ok"), key="c1")
            assert isinstance(caught.value.orig, psycopg.errors.LockNotAvailable)
            await holder.rollback()
        with pytest.raises(UnknownSagaError):
            await orchestrator.load(saga_id_for("HoldFirst", "c1"))  # nothing of it was written

        async with engine.begin() as conn:
            saga_id = await orchestrator.start(conn, HoldFirst, order("c1", "ok"), key="c1")
        state = await orchestrator.load(saga_id)
        assert state.status == "running"
        assert state.done == ["hold_row"]
        assert state.awaiting is not None
        assert state.awaiting.step == "reserve_credit"
    finally:
        await orchestrator.aclose()

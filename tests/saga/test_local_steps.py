"""Local steps run in the orchestrator's transaction: a failing one leaves none of its writes,
and never takes another saga's writes with it, also when many sagas are decided together."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from examples.orders.messages import CreditReserved, messages
from examples.orders.saga import OrderData, ReserveCreditStep
from outbox import Delivery
from saga import LocalStep, Orchestrator, Refused, Saga, StepKind


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

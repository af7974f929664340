"""A participant's batch of commands: a refused command's writes are undone and it gets a
refusal; the commands before and after it in the same transaction keep their writes and get
their replies, in order."""

from __future__ import annotations

import uuid
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from examples.orders.messages import ReserveCredit, messages
from examples.orders.services import create_schema, reserve_credit
from outbox import Delivery, Envelope, Outbox
from saga import Participant


def command(customer: str, order: str, amount: int) -> Delivery:
    envelope = Envelope(
        message_id=uuid.uuid4(),
        message_type="customers.reserve_credit",
        schema_version=1,
        saga_id=f"saga-{order}",
        saga_type="OrderSaga",
        step="reserve_credit",
        phase="action",
        attempt=1,
        reply_topic="batch.OrderSaga.replies",
    )
    message = ReserveCredit(customer_id=customer, order_id=order, amount=Decimal(amount))
    return Delivery(_unused, message, envelope)


async def _unused(conn: AsyncConnection, message: BaseModel, envelope: Envelope) -> None:
    raise AssertionError("the participant's own handlers run, not the delivery's")


async def test_a_refusal_in_a_batch_undoes_only_its_own_writes(
    database: Database, engine: AsyncEngine
) -> None:
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO customers VALUES ('alice', 100, 0), ('bob', 5, 0)"))
    participant = Participant(
        database,
        "127.0.0.1:1",  # never reached: the batch handler is called directly
        service="customers",
        messages=messages,
        handlers={ReserveCredit: reserve_credit},
        topic_prefix="batch",
    )
    batch = [command("alice", "o1", 10), command("bob", "o2", 50), command("alice", "o3", 20)]
    async with engine.begin() as conn:
        await participant._reply_all(conn, batch)

    async with engine.connect() as conn:
        reservations = (
            await conn.execute(text("SELECT order_id FROM credit_reservations ORDER BY 1"))
        ).scalars()
        assert list(reservations) == ["o1", "o3"]  # o2's row was undone with its refusal
        rows = (await conn.execute(text("SELECT customer_id, reserved FROM customers"))).all()
        reserved: dict[str, Decimal] = {row[0]: row[1] for row in rows}
        assert reserved == {"alice": 30, "bob": 0}
        handled = (await conn.execute(text("SELECT order_id FROM handled_commands ORDER BY 1"))).scalars()
        assert list(handled) == ["o1", "o3"]
    pending = [
        m.message_type for o in ("o1", "o2", "o3") for m in await Outbox.pending(database, f"saga-{o}")
    ]
    assert pending == ["customers.credit_reserved", "saga.step_refused", "customers.credit_reserved"]

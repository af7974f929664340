"""A reply moves a saga only when it is the reply the awaited step expects: its type is
checked as well as its (step, phase, attempt)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from examples.orders.messages import CreditReleased, CreditReserved, StockReserved, messages
from examples.orders.saga import OrderData, OrderSaga
from examples.orders.services import create_schema
from saga import Orchestrator, StepRefused, TypedSagaState


async def answer(
    orchestrator: Orchestrator, saga_id: str, reply: BaseModel, step: str, phase: str = "action"
) -> TypedSagaState[OrderData]:
    envelope = orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type="OrderSaga", step=step, phase=phase, attempt=1
    )
    async with orchestrator.engine.begin() as conn:
        await orchestrator.handle_reply(conn, reply, envelope)
    return await orchestrator.load(saga_id, OrderSaga)


async def test_a_reply_of_the_wrong_type_is_ignored_in_both_phases(
    database: Database, engine: AsyncEngine
) -> None:
    await create_schema(engine)
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="replies")
    data = OrderData(order_id="o1", customer_id="alice", sku="widget", quantity=1, amount=Decimal(3))
    try:
        async with engine.begin() as conn:
            saga_id = await orchestrator.start(conn, OrderSaga, data, key="o1")
        await answer(orchestrator, saga_id, CreditReserved(reservation_id="credit-1"), "reserve_credit")

        # Right step, phase and attempt, wrong type: a CreditReserved is no StockReserved.
        forged = await answer(orchestrator, saga_id, CreditReserved(reservation_id="forged"), "reserve_stock")
        assert forged.status == "running"
        assert forged.data.stock_reservation is None
        assert forged.awaiting is not None
        assert forged.awaiting.step == "reserve_stock"
        events = [e.event for e in await orchestrator.store.load(f"saga:{saga_id}")]
        assert type(events[-1]).__name__ == "ReplyIgnored"
        assert "is not the reply reserve_stock/action expects (StockReserved)" in events[-1].reason  # type: ignore[attr-defined]

        # A refusal compensates reserve_credit; only a CreditReleased counts as undone.
        compensating = await answer(orchestrator, saga_id, StepRefused(reason="no stock"), "reserve_stock")
        assert compensating.status == "compensating"
        stray = await answer(
            orchestrator, saga_id, StockReserved(reservation_id="x"), "reserve_credit", "compensation"
        )
        assert stray.status == "compensating"
        done = await answer(
            orchestrator, saga_id, CreditReleased(released=True), "reserve_credit", "compensation"
        )
        assert done.status == "compensated"
    finally:
        await orchestrator.aclose()

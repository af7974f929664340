"""The orchestrator holds the saga streams it read and reads only what is new: what another
worker decided meanwhile is read and folded in; a decision rolled back leaves nothing held."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, RecordedEvent
from examples.orders.messages import CreditReserved, Picked, StockReserved, messages
from examples.orders.saga import OrderData, OrderSaga
from examples.orders.services import create_schema
from saga import Orchestrator
from saga._signal import SIGNAL_PHASE
from saga._state import fold
from tests.saga.test_replies import answer


class Reads:
    """What an orchestrator's event store is asked to load: the `after` of each call."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.after: list[dict[str, int]] = []
        load_many = orchestrator.store.load_many

        async def counted(
            stream_ids: Sequence[str],
            *,
            conn: AsyncConnection | None = None,
            after: Mapping[str, int] | None = None,
        ) -> dict[str, list[RecordedEvent]]:
            self.after.append(dict(after or {}))
            return await load_many(stream_ids, conn=conn, after=after)

        orchestrator.store.load_many = counted  # type: ignore[method-assign]


async def test_a_decision_reads_only_the_events_after_those_held_and_folds_in_another_workers(
    database: Database, engine: AsyncEngine
) -> None:
    await create_schema(engine)
    one = Orchestrator(database, [OrderSaga], messages, topic_prefix="cache")
    other = Orchestrator(database, [OrderSaga], messages, topic_prefix="cache")
    reads = Reads(one)
    data = OrderData(order_id="o1", customer_id="alice", sku="widget", quantity=1, amount=Decimal(3))
    async with engine.begin() as conn:
        saga_id = await one.start(conn, OrderSaga, data, key="o1")
    stream = f"saga:{saga_id}"

    await answer(one, saga_id, CreditReserved(reservation_id="credit-1"), "reserve_credit")
    assert reads.after == [{}]  # nothing held yet: the whole stream
    held = one.streams._held[saga_id][0][-1].version

    # The next step's reply goes to another worker (a rebalance): its events are new to `one`.
    await answer(other, saga_id, StockReserved(reservation_id="stock-1"), "reserve_stock")
    whole = await one.store.load(stream)
    assert whole[-1].version > held

    # The warehouse's signal, decided by `one`: it goes on only if it knows the stock reserved.
    picked = Picked(order_id="o1")
    envelope = one.outbox.envelope(picked, saga_id=saga_id, saga_type="OrderSaga", phase=SIGNAL_PHASE)
    async with engine.begin() as conn:
        await one.handle_reply(conn, picked, envelope)
    assert reads.after[-1] == {stream: held}
    events, state = one.streams._held[saga_id]
    assert [e.version for e in events] == [e.version for e in whole]
    assert state == fold(saga_id, (e.event for e in whole))
    now = await one.load(saga_id, OrderSaga)
    assert now.data.stock_reservation == "stock-1"
    assert now.awaiting is not None
    assert now.awaiting.step == "charge_payment"


async def test_a_decision_rolled_back_leaves_nothing_of_its_own_held(
    database: Database, engine: AsyncEngine
) -> None:
    await create_schema(engine)
    orchestrator = Orchestrator(database, [OrderSaga], messages, topic_prefix="cache")
    data = OrderData(order_id="o2", customer_id="alice", sku="widget", quantity=1, amount=Decimal(3))
    async with engine.begin() as conn:
        saga_id = await orchestrator.start(conn, OrderSaga, data, key="o2")
    reply = CreditReserved(reservation_id="credit-2")
    envelope = orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type="OrderSaga", step="reserve_credit", phase="action", attempt=1
    )
    async with engine.connect() as conn:
        await conn.begin()
        await orchestrator.handle_reply(conn, reply, envelope)
        await conn.rollback()
    stored = await orchestrator.store.load(f"saga:{saga_id}")
    assert orchestrator.streams._held[saga_id][0][-1].version == stored[-1].version

    after = await answer(orchestrator, saga_id, reply, "reserve_credit")
    assert after.data.credit_reservation == "credit-2"
    assert after.awaiting is not None
    assert after.awaiting.step == "reserve_stock"

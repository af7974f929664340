"""Issue 13 item 7: `orchestrator.load` gives the saga's data as its pydantic model, and
`orchestrator.wait` waits for a saga to end or stop and gives the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from examples.orders.messages import (
    CreditReserved,
    InvoiceIssued,
    OrderShipped,
    PaymentCharged,
    Picked,
    StockReserved,
    messages,
)
from examples.orders.saga import OrderData, OrderSaga
from examples.orders.services import create_schema
from saga import Orchestrator, Saga, SagaDataError, StepRefused, TypedSagaState, UnknownSagaError
from saga._operations import replay, show


class OrderDataV2(OrderData):
    loyalty_id: str  # added without a default: sagas started before cannot have it


class OrderSagaV2(Saga[OrderDataV2]):
    name = "OrderSaga"
    steps = OrderSaga.steps


class OtherSaga(Saga[OrderData]):
    steps = OrderSaga.steps


@pytest.fixture
async def orchestrator(database: Database, engine: AsyncEngine) -> AsyncIterator[Orchestrator]:
    await create_schema(engine)
    orch = Orchestrator(database, [OrderSaga], messages, topic_prefix="typed")
    try:
        yield orch
    finally:
        await orch.aclose()


async def start(orchestrator: Orchestrator, order_id: str, customer: str = "alice") -> str:
    data = OrderData(
        order_id=order_id, customer_id=customer, sku="widget", quantity=2, amount=Decimal("7.50")
    )
    async with orchestrator.engine.begin() as conn:
        return await orchestrator.start(conn, OrderSaga, data, key=order_id)


async def answer(orchestrator: Orchestrator, saga_id: str, reply: BaseModel, step: str) -> None:
    envelope = orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type="OrderSaga", step=step, phase="action", attempt=1
    )
    async with orchestrator.engine.begin() as conn:
        await orchestrator.handle_reply(conn, reply, envelope)


async def pick(orchestrator: Orchestrator, saga_id: str, order_id: str) -> None:
    """The warehouse's signal, as the reply consumer hands it over."""
    signal = Picked(order_id=order_id)
    envelope = orchestrator.outbox.envelope(signal, saga_id=saga_id, saga_type="OrderSaga", phase="signal")
    async with orchestrator.engine.begin() as conn:
        await orchestrator.handle_reply(conn, signal, envelope)


async def test_item7_load_returns_the_saga_data_model(orchestrator: Orchestrator) -> None:
    saga_id = await start(orchestrator, "o-1")
    await answer(orchestrator, saga_id, CreditReserved(reservation_id="credit-o-1"), "reserve_credit")

    state = await orchestrator.load(saga_id, OrderSaga)  # TypedSagaState[OrderData] to mypy
    assert isinstance(state, TypedSagaState)
    assert isinstance(state.data, OrderData)
    assert state.data.credit_reservation == "credit-o-1"
    assert state.data.amount == Decimal("7.50")
    assert (state.saga_id, state.saga_type, state.key, state.status) == (
        saga_id,
        "OrderSaga",
        "o-1",
        "running",
    )
    assert state.done == ["reserve_credit"]

    untyped_call = await orchestrator.load(saga_id)  # the class found from the saga's type
    assert untyped_call == state
    assert isinstance(untyped_call.data, OrderData)

    # The same state as the fold's, the data as stored: what `saga show` prints.
    raw = await orchestrator.load_raw(saga_id)
    assert isinstance(raw.data, dict)
    assert state.model_dump(mode="json") == raw.model_dump(mode="json")


async def test_item7_a_saga_of_a_type_the_orchestrator_lacks_is_a_clear_error(
    orchestrator: Orchestrator, database: Database
) -> None:
    saga_id = await start(orchestrator, "o-1")
    other = Orchestrator(database, [OtherSaga], messages, topic_prefix="typed")
    with pytest.raises(UnknownSagaError) as caught:
        await other.load(saga_id)
    assert str(caught.value) == (
        f"saga {saga_id} is a 'OrderSaga', which this orchestrator does not know (it has: OtherSaga); "
        "add its class to the app's sagas"
    )
    with pytest.raises(UnknownSagaError, match="which this orchestrator does not know"):
        await other.wait(saga_id, timeout_s=5)  # at once, not after the timeout
    with pytest.raises(TypeError, match=f"saga {saga_id} is a OrderSaga, not a OtherSaga"):
        await orchestrator.load(saga_id, OtherSaga)
    with pytest.raises(TypeError, match=f"saga {saga_id} is a OrderSaga, not a OtherSaga"):
        await orchestrator.wait(saga_id, OtherSaga, timeout_s=5)  # at once
    with pytest.raises(UnknownSagaError, match="no saga with id 'nope'"):
        await orchestrator.load("nope")


async def test_item7_stored_data_that_no_longer_fits_names_the_saga_the_field_and_the_fix(
    orchestrator: Orchestrator, database: Database
) -> None:
    saga_id = await start(orchestrator, "o-1")
    upgraded = Orchestrator(database, [OrderSagaV2], messages, topic_prefix="typed")
    with pytest.raises(SagaDataError) as caught:
        await upgraded.load(saga_id)
    message = str(caught.value)
    assert message == (
        f"saga {saga_id} (OrderSaga): its stored data no longer fits OrderDataV2: field 'loyalty_id' is "
        "missing (added to the model without a default?). Give a field added since the saga started a "
        "default (`name: str | None = None`) so that older sagas still load; "
        f"`saga show {saga_id}` prints the data as stored"
    )
    assert caught.value.__cause__ is None  # no pydantic dump chained to it

    # What operators read folds the events and never needs the model: it keeps working.
    details = await show(upgraded, saga_id)
    assert details.state.data["order_id"] == "o-1"
    assert (await replay(upgraded, saga_id, at_version=1)).data["order_id"] == "o-1"


async def test_item7_wait_returns_the_typed_state_once_the_saga_ended_or_stopped(
    orchestrator: Orchestrator,
) -> None:
    saga_id = await start(orchestrator, "o-1")
    waiting = asyncio.create_task(orchestrator.wait(saga_id, OrderSaga, timeout_s=60))
    await answer(orchestrator, saga_id, CreditReserved(reservation_id="c"), "reserve_credit")
    await answer(orchestrator, saga_id, StockReserved(reservation_id="s"), "reserve_stock")
    await pick(orchestrator, saga_id, "o-1")
    await answer(orchestrator, saga_id, PaymentCharged(payment_id="p"), "charge_payment")
    await answer(orchestrator, saga_id, OrderShipped(shipment_id="sh"), "ship_order")
    assert not waiting.done()
    await answer(orchestrator, saga_id, InvoiceIssued(invoice_id="i"), "issue_invoice")
    state = await waiting
    assert state.status == "completed"
    assert state.data.payment_id == "p"

    refused = await start(orchestrator, "o-2")
    await answer(orchestrator, refused, StepRefused(reason="no credit"), "reserve_credit")
    state = await orchestrator.wait(refused, timeout_s=60)
    assert (state.status, state.data.order_id) == ("compensated", "o-2")


async def test_item7_wait_times_out_naming_the_saga_and_its_status(orchestrator: Orchestrator) -> None:
    saga_id = await start(orchestrator, "o-1")
    with pytest.raises(TimeoutError) as caught:
        await orchestrator.wait(saga_id, timeout_s=0.2)
    assert str(caught.value) == (
        f"saga {saga_id} (OrderSaga) has not ended within 0.2s: it is running, waiting on "
        f"reserve_credit/action #1 (reply); `saga show {saga_id}` shows where it is"
    )

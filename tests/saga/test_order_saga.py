"""The order saga end to end, on the testing kit: the example's app running in-process (its
participants as Kafka consumers, real Postgres and Kafka) on a virtual clock."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from examples.orders.app import app
from examples.orders.messages import Picked, ReleaseCredit, ReserveStock, StockReserved
from examples.orders.saga import (
    PICK_TIMEOUT_S,
    IssueInvoiceStep,
    OrderData,
    OrderSaga,
    ReserveCreditStep,
    ReserveStockStep,
    ShipOrderStep,
    WaitForPicked,
)
from examples.orders.services import create_tables, release_credit
from examples.orders.shop import Warehouse
from outbox import Envelope
from saga import App, Refused, saga_event_registry, stream_of
from saga.testing import System
from tests.helpers import Collector, assert_read_model_matches_events, kafka_headers, wait_for


async def shop_tables(conn: AsyncConnection) -> None:
    """The example's tables and the rows every test starts with: bob's credit limit is 15, the
    card of 'declined' is refused."""
    await create_tables(conn)
    await conn.execute(
        text("INSERT INTO customers VALUES ('alice', 1000, 0), ('bob', 15, 0), ('declined', 1000, 0)")
    )
    await conn.execute(text("INSERT INTO stock VALUES ('widget', 100)"))


saga_app = app
saga_schema = shop_tables

NEW_ORDER = text(
    "INSERT INTO orders (order_id, customer_id, sku, quantity, amount) VALUES (:o, :c, :s, :q, :a)"
)


async def place(
    system: System,
    customer: str = "alice",
    sku: str = "widget",
    quantity: int = 1,
    amount: str = "10",
    *,
    key: str | None = None,
    picked: bool = True,
) -> str:
    """An order and its saga in one transaction; `picked`: the warehouse's Picked signal goes
    in it too (kept until the saga reaches its wait)."""
    order_id = f"order-{uuid.uuid4().hex[:8]}"
    data = OrderData(
        order_id=order_id, customer_id=customer, sku=sku, quantity=quantity, amount=Decimal(amount)
    )
    async with system.connect() as conn:
        await conn.execute(
            NEW_ORDER, {"o": order_id, "c": customer, "s": sku, "q": quantity, "a": data.amount}
        )
        saga_id = await system.orchestrator.start(conn, OrderSaga, data, key=key or order_id)
        if picked:
            await system.orchestrator.signal(conn, OrderSaga, Picked(order_id=order_id), saga_id=saga_id)
    return saga_id


async def events_of(system: System, saga_id: str) -> list[Any]:
    return [e.event for e in await system.orchestrator.store.load(stream_of(saga_id))]


def step_log(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.step, e.phase) for e in events if type(e).__name__ == "StepRequested"]


async def test_happy_path_picked_before_the_wait_then_ship_and_invoice_together(saga_system: System) -> None:
    system = saga_system
    saga_id = await place(system, customer="alice", sku="widget", quantity=2, amount="30")  # picked at once
    state = await system.wait(saga_id, "completed")
    data = OrderData.model_validate(state.data)
    assert data.credit_reservation == f"credit-{data.order_id}"
    assert data.stock_reservation == f"stock-{data.order_id}"
    assert data.payment_id == f"pay-{data.order_id}"
    assert (data.shipment_id, data.invoice_id) == (f"ship-{data.order_id}", f"invoice-{data.order_id}")
    assert state.done[:4] == ["reserve_credit", "reserve_stock", "wait_for_picked", "charge_payment"]
    assert sorted(state.done[4:6]) == ["issue_invoice", "ship_order"]
    assert state.done[6:] == ["approve_order"]
    events = await events_of(system, saga_id)
    names = [type(e).__name__ for e in events]
    # The signal came before the saga reached the wait: kept, then taken there.
    assert names.index("SignalReceived") < names.index("SignalConsumed")
    assert [e.step for e in events if type(e).__name__ == "StepSucceeded"][:3] == [
        "reserve_credit",
        "reserve_stock",
        "wait_for_picked",
    ]
    assert names.index("SignalReceived") < _succeeded_at(events, "reserve_credit")
    requested = step_log(events)
    assert requested[:3] == [
        ("reserve_credit", "action"),
        ("reserve_stock", "action"),
        ("wait_for_picked", "action"),
    ]
    assert requested[3] == ("charge_payment", "action")
    assert sorted(requested[4:6]) == [("issue_invoice", "action"), ("ship_order", "action")]
    assert requested[6:] == [("approve_order", "action")]
    # Both members of the group were sent by one decision: no reply came between them.
    group = [i for i, e in enumerate(events) if type(e).__name__ == "StepRequested" and e.step in GROUP]
    assert group[1] - group[0] == 1
    assert await system.scalar("SELECT status FROM orders WHERE order_id = :o", o=data.order_id) == "approved"
    assert await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'alice'") == Decimal(30)
    assert await system.scalar("SELECT available FROM stock WHERE sku = 'widget'") == 98
    assert await system.scalar("SELECT count(*) FROM handled_commands") == 5
    assert await system.scalar("SELECT count(*) FROM shipments WHERE order_id = :o", o=data.order_id) == 1
    assert await system.scalar("SELECT count(*) FROM invoices WHERE order_id = :o", o=data.order_id) == 1
    assert await assert_read_model_matches_events(system.engine, system.orchestrator) == 1


GROUP = (ShipOrderStep.name, IssueInvoiceStep.name)


def _succeeded_at(events: list[Any], step: str) -> int:
    return next(i for i, e in enumerate(events) if type(e).__name__ == "StepSucceeded" and e.step == step)


async def test_a_pick_after_the_wait_began_moves_the_saga_on(saga_system: System) -> None:
    system = saga_system
    saga_id = await place(system, customer="alice", amount="12", picked=False)
    await system.wait(saga_id, step=WaitForPicked.name)
    warehouse = Warehouse(system.orchestrator)
    assert await warehouse.pick_waiting(system.engine) == 1
    assert await warehouse.pick_waiting(system.engine) == 0  # one signal per saga
    await system.wait(saga_id, "completed")
    events = await events_of(system, saga_id)
    consumed = [e for e in events if type(e).__name__ == "SignalConsumed"]
    assert [(e.step, e.message_type) for e in consumed] == [(WaitForPicked.name, "warehouse.picked")]
    assert await assert_read_model_matches_events(system.engine, system.orchestrator) == 1


async def test_goods_never_picked_time_the_wait_out_and_release_stock_and_credit(saga_system: System) -> None:
    system = saga_system
    saga_id = await place(system, customer="alice", sku="widget", quantity=3, amount="40", picked=False)
    await system.wait(saga_id, step=WaitForPicked.name)
    await system.clock.advance(PICK_TIMEOUT_S)
    state = await system.wait(saga_id, "compensated")
    events = await events_of(system, saga_id)
    failed = [(e.step, e.reason) for e in events if type(e).__name__ == "StepFailed"]
    assert failed == [(WaitForPicked.name, "no signal within 30.0s")]  # a wait fails by its timeout
    assert step_log(events)[-2:] == [("reserve_stock", "compensation"), ("reserve_credit", "compensation")]
    assert state.last_error == "wait_for_picked failed: no signal within 30.0s"
    assert await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'alice'") == 0
    assert await system.scalar("SELECT available FROM stock WHERE sku = 'widget'") == 100
    assert await system.scalar("SELECT count(*) FROM payments") == 0
    assert await system.scalar("SELECT count(*) FROM shipments") == 0
    assert await assert_read_model_matches_events(system.engine, system.orchestrator) == 1


async def test_failure_at_the_third_step_compensates_the_second_then_the_first(saga_system: System) -> None:
    system = saga_system
    saga_id = await place(system, customer="declined", sku="widget", quantity=3, amount="50")
    state = await system.wait(saga_id, "compensated")
    assert step_log(await events_of(system, saga_id)) == [
        ("reserve_credit", "action"),
        ("reserve_stock", "action"),
        ("wait_for_picked", "action"),
        ("charge_payment", "action"),
        ("reserve_stock", "compensation"),
        ("reserve_credit", "compensation"),
    ]
    assert state.last_error == "charge_payment failed: card declined for customer declined"
    assert await system.scalar("SELECT count(*) FROM shipments") == 0
    assert await system.scalar("SELECT count(*) FROM invoices") == 0
    assert await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'declined'") == 0
    assert await system.scalar("SELECT available FROM stock WHERE sku = 'widget'") == 100
    assert await system.scalar("SELECT count(*) FROM payments") == 0
    order_status = await system.scalar("SELECT status FROM orders WHERE saga_id IS NULL LIMIT 1")
    assert order_status == "pending"
    assert await assert_read_model_matches_events(system.engine, system.orchestrator) == 1


async def test_a_refusal_at_the_first_step_compensates_nothing(saga_system: System) -> None:
    system = saga_system
    saga_id = await place(system, customer="bob", amount="20")  # bob's limit is 15
    state = await system.wait(saga_id, "compensated")
    assert step_log(await events_of(system, saga_id)) == [("reserve_credit", "action")]
    assert state.last_error == "reserve_credit failed: insufficient credit for customer bob"
    # The refusal undid the handler's writes (its reservation row) and kept the reply.
    assert await system.scalar("SELECT count(*) FROM credit_reservations") == 0
    assert await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'bob'") == 0


async def test_a_timeout_compensates_and_the_late_reply_changes_nothing(saga_system: System) -> None:
    system = saga_system
    async with system.paused("participant:inventory"):  # the warehouse answers late
        saga_id = await place(system, customer="alice", sku="widget", amount="40")
        await system.wait(saga_id, step=ReserveStockStep.name)
        await system.clock.advance(ReserveStockStep.timeout_s)
        await system.wait(saga_id, "compensating", step=ReserveStockStep.name)
    await system.wait(saga_id, "compensated")

    async def late_reply_recorded() -> bool:
        return any(type(e).__name__ == "ReplyIgnored" for e in await events_of(system, saga_id))

    await wait_for(late_reply_recorded, 30, "the late reply to be recorded as ignored")
    events = await events_of(system, saga_id)
    started = [e for e in events if type(e).__name__ == "CompensationStarted"]
    assert [(e.steps, e.reason) for e in started] == [
        (["reserve_stock", "reserve_credit"], "reserve_stock timed out after 1 attempt(s)")
    ]
    log = step_log(events)
    assert log[:3] == [
        ("reserve_credit", "action"),
        ("reserve_stock", "action"),
        ("reserve_stock", "compensation"),
    ]
    # The release waits behind the late reservation (on the virtual clock it does not time
    # out: nothing moves the clock); the credit is released only after the stock.
    assert log[-1] == ("reserve_credit", "compensation")
    assert set(log[2:-1]) == {("reserve_stock", "compensation")}
    final = await system.state(saga_id)
    assert final.status == "compensated"
    # Whatever the late service did, its effect was undone: no stock or credit stays reserved.
    await wait_for(lambda: _all_released(system), 30, "the reservations to be released")
    assert await assert_read_model_matches_events(system.engine, system.orchestrator) == 1


async def _all_released(system: System) -> bool:
    stock = await system.scalar("SELECT available FROM stock WHERE sku = 'widget'")
    credit = await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'alice'")
    return bool(stock == 100 and credit == 0)


FAULTS = {"release_credit": False}


async def flaky_release_credit(conn: AsyncConnection, cmd: ReleaseCredit, envelope: Envelope) -> Any:
    if FAULTS["release_credit"]:
        raise Refused("credit service cannot release right now")
    return await release_credit(conn, cmd, envelope)


# The example's app, its credit service's release replaced by one a test can break.
FLAKY_CREDIT = dataclasses.replace(
    app,
    participants={
        **app.participants,
        "customers": {**app.participants["customers"], ReleaseCredit: flaky_release_credit},
    },
)


class TestWithAFlakyCreditService:
    @pytest.fixture
    def saga_app(self) -> App:
        return FLAKY_CREDIT

    async def test_compensation_that_keeps_failing_stops_visibly_and_resumes(
        self, saga_system: System
    ) -> None:
        system = saga_system
        FAULTS["release_credit"] = True
        try:
            saga_id = await place(system, customer="declined", amount="25")
            # Between the release's attempts the saga waits for its retry timer: skipped.
            state = await system.wait(saga_id, "compensation_failed", skip_time=True)
            assert state.last_error == "reserve_credit: credit service cannot release right now"
            assert state.to_compensate == ["reserve_credit"]
            assert await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'declined'") == 25
            assert await system.scalar("SELECT status FROM saga_instances WHERE saga_id = :s", s=saga_id) == (
                "compensation_failed"
            )
        finally:
            FAULTS["release_credit"] = False
        resumed = await system.orchestrator.resume(saga_id, "credit service fixed (ticket OPS-1)")
        assert resumed.status == "compensating"
        state = await system.wait(saga_id, "compensated")
        assert await system.scalar("SELECT reserved FROM customers WHERE customer_id = 'declined'") == 0
        attempts = [
            e.attempt
            for e in await events_of(system, saga_id)
            if type(e).__name__ == "StepRequested"
            and e.step == "reserve_credit"
            and e.phase == "compensation"
        ]
        # Each attempt of the step's policy, then one more after the resume.
        assert ReserveCreditStep.compensation_retry.attempts == 5
        assert attempts == [1, 2, 3, 4, 5, 6]
        assert await assert_read_model_matches_events(system.engine, system.orchestrator) == 1


async def test_duplicate_replies_and_double_starts_move_nothing_twice(saga_system: System) -> None:
    system = saga_system
    first = await place(system, customer="alice", amount="5", key="order-key-1")
    again = await place(system, customer="alice", amount="5", key="order-key-1", picked=False)
    assert again == first
    state = await system.wait(first, "completed")
    assert await system.scalar("SELECT count(*) FROM saga_instances") == 1

    # A participant answering the same attempt twice (a new message id): recorded, ignored.
    envelope = system.orchestrator.outbox.envelope(
        StockReserved(reservation_id="again"),
        saga_id=first,
        saga_type="OrderSaga",
        step="reserve_stock",
        phase="action",
        attempt=1,
    )
    producer = AIOKafkaProducer(bootstrap_servers=system.config.services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for _ in range(2):  # and the very same record twice: the inbox drops the second
            await producer.send_and_wait(
                system.orchestrator.topics.replies("OrderSaga"),
                StockReserved(reservation_id="again").model_dump_json().encode(),
                key=first.encode(),
                headers=kafka_headers(envelope),
            )
    finally:
        await producer.stop()

    async def ignored() -> list[Any]:
        return [e for e in await events_of(system, first) if type(e).__name__ == "ReplyIgnored"]

    await wait_for(lambda: _nonempty(ignored()), 30, "the duplicate reply to be recorded")
    after = await system.state(first)
    assert len(await ignored()) == 1
    assert after.status == "completed"
    assert after.data == state.data
    assert after.version == state.version + 1
    assert await system.scalar("SELECT count(*) FROM handled_commands WHERE command = 'reserve_stock'") == 1


async def _nonempty(items: Any) -> bool:
    return bool(await items)


def test_event_types_have_stable_names() -> None:
    registry = saga_event_registry()
    assert "saga.started" in registry
    assert "saga.reply_ignored" in registry


async def test_a_participant_answers_only_to_reply_topics_it_trusts(saga_system: System) -> None:
    """Commands that ask for replies on a topic that is not a reply topic under the prefix, or
    name no saga, are dead-lettered with the reason; the participant goes on."""
    system = saga_system
    bootstrap = system.config.services.kafka_bootstrap
    topic = system.orchestrator.topics.commands("inventory")
    command = ReserveStock(order_id="o-stray", sku="widget", quantity=1)
    asks = {
        ".": "is not a reply topic",
        "..": "is not a reply topic",
        "elsewhere.OrderSaga.replies": "is not a reply topic",
        system.orchestrator.topics.commands("customers"): "is not a reply topic",
        system.orchestrator.topics.replies(".."): "is not a reply topic",
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for reply_topic in [*asks, None]:
            envelope = system.orchestrator.outbox.envelope(
                command,
                saga_id=None if reply_topic is None else "stray-saga",
                saga_type="OrderSaga",
                step="reserve_stock",
                phase="action",
                attempt=1,
                reply_topic=reply_topic or system.orchestrator.topics.replies("OrderSaga"),
            )
            await producer.send_and_wait(
                topic, command.model_dump_json().encode(), key=b"stray", headers=kafka_headers(envelope)
            )
    finally:
        await producer.stop()
    async with Collector(bootstrap, [f"{topic}.dlq"]) as dead:
        await wait_for(lambda: len(dead.records) >= len(asks) + 1, 60, "every stray command dead-lettered")
        reasons = [dead.headers(i)["dlq_reason"] for i in range(len(dead.records))]
    assert sum("is not a reply topic under the prefix" in r for r in reasons) == len(asks)
    assert sum("names no saga" in r for r in reasons) == 1
    saga_id = await place(system, customer="alice", amount="5")
    await system.wait(saga_id, "completed")

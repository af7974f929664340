"""Issue 13 item 8: a saga's end hooks run the user's code in the transaction of the decision
that ends the saga: once, with the typed data and the reason, or, when they raise, not at all
and the ending is tried again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database
from examples.orders.messages import CreditReleased, CreditReserved, messages
from examples.orders.saga import OrderData, ReserveCreditStep
from saga import (
    DefinitionError,
    HookFailed,
    LocalStep,
    Orchestrator,
    Refused,
    RetryPolicy,
    Saga,
    SagaState,
    Step,
    StepKind,
    StepRefused,
    UnknownSagaError,
    fire_due_deadlines,
    saga_id_for,
    stream_of,
)
from saga._operations import list_sagas, rebuild, replay
from tests.helpers import Collector, kafka_headers, wait_for
from tests.saga.conftest import System


class ReserveCreditOnce(ReserveCreditStep):
    """Its compensation is tried once: a refused release stops the saga in compensation_failed."""

    name = "reserve_credit"
    compensation_retry = RetryPolicy(attempts=1)


class Pivot(LocalStep[OrderData]):
    kind = StepKind.PIVOT

    async def action(self, conn: AsyncConnection, data: OrderData) -> None:
        if data.customer_id.startswith("refuse"):
            raise Refused("the pivot refuses")


class Confirm(LocalStep[OrderData]):
    kind = StepKind.RETRIABLE
    retry = RetryPolicy(attempts=1)

    async def action(self, conn: AsyncConnection, data: OrderData) -> None:
        if data.customer_id == "unconfirmed":
            raise Refused("cannot confirm")


class Booked(Saga[OrderData]):
    """Writes the user's own `bookings` row when it ends; the next `failing` hooks raise after
    writing it."""

    steps: ClassVar[Sequence[type[Step[Any]]]] = (ReserveCreditOnce, Pivot, Confirm)
    failing: ClassVar[int] = 0

    async def on_completed(self, conn: AsyncConnection, data: OrderData) -> None:
        await _book(conn, data, "completed", "")

    async def on_compensated(self, conn: AsyncConnection, data: OrderData, reason: str) -> None:
        await _book(conn, data, "compensated", reason)

    async def on_failed(self, conn: AsyncConnection, data: OrderData, reason: str) -> None:
        await _book(conn, data, "failed", reason)


class Instant(Booked):
    """Only local steps: it ends in the transaction that starts it."""

    steps = (Pivot, Confirm)


class Patient(Booked):
    """Its compensation is tried again (ReserveCreditStep's policy)."""

    steps = (ReserveCreditStep, Pivot, Confirm)


async def _book(conn: AsyncConnection, data: OrderData, outcome: str, reason: str) -> None:
    assert isinstance(data, OrderData)
    await conn.execute(
        text("INSERT INTO bookings (order_id, outcome, reason) VALUES (:o, :s, :r)"),
        {"o": data.order_id, "s": outcome, "r": reason},
    )
    if Booked.failing > 0:
        Booked.failing -= 1
        raise RuntimeError("the bookings ledger is closed")


@pytest.fixture(autouse=True)
def hooks_work() -> Iterator[None]:
    Booked.failing = 0
    yield
    Booked.failing = 0


@pytest.fixture
async def orchestrator(database: Database, engine: AsyncEngine) -> AsyncIterator[Orchestrator]:
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS bookings (order_id text, outcome text, reason text)")
        )
    orch = Orchestrator(database, [Booked, Instant, Patient], messages, topic_prefix="hooks")
    try:
        yield orch
    finally:
        await orch.aclose()


def order(order_id: str, customer: str = "alice") -> OrderData:
    return OrderData(order_id=order_id, customer_id=customer, sku="widget", quantity=1, amount=Decimal(5))


async def start(orchestrator: Orchestrator, order_id: str, customer: str = "alice") -> str:
    async with orchestrator.engine.begin() as conn:
        return await orchestrator.start(conn, Booked, order(order_id, customer), key=order_id)


async def answer(
    orchestrator: Orchestrator,
    saga_id: str,
    reply: BaseModel,
    phase: str = "action",
    conn: AsyncConnection | None = None,
    *,
    attempt: int = 1,
    saga_type: str = "Booked",
) -> SagaState:
    """Hand the orchestrator a reply to reserve_credit, as the reply consumer does."""
    envelope = orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type=saga_type, step="reserve_credit", phase=phase, attempt=attempt
    )
    if conn is None:
        async with orchestrator.engine.begin() as own:
            await orchestrator.handle_reply(own, reply, envelope)
    else:
        await orchestrator.handle_reply(conn, reply, envelope)
    return await orchestrator.load_raw(saga_id, conn)


async def bookings(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT order_id, outcome, reason FROM bookings ORDER BY 1, 2"))
        return [tuple(r) for r in rows]


RESERVED = CreditReserved(reservation_id="credit")


def test_item8_end_hooks_are_checked_when_the_saga_class_is_created() -> None:
    with pytest.raises(
        DefinitionError,
        match=r"saga NotAsync: hook on_completed must be `async def on_completed\(self, conn, data\) -> None`",
    ):

        class NotAsync(Saga[OrderData]):
            steps = (ReserveCreditStep,)

            def on_completed(self, conn: AsyncConnection, data: OrderData) -> None:  # type: ignore[override]
                pass

    with pytest.raises(DefinitionError, match=r"saga NoReason: hook on_compensated must be .*reason"):

        class NoReason(Saga[OrderData]):
            steps = (ReserveCreditStep,)

            async def on_compensated(self, conn: AsyncConnection, data: OrderData) -> None:  # type: ignore[override]
                pass

    with pytest.raises(DefinitionError, match=r"saga OneMore: hook on_failed must be"):

        class OneMore(Saga[OrderData]):
            steps = (ReserveCreditStep,)

            async def on_failed(  # type: ignore[override]
                self, conn: AsyncConnection, data: OrderData, reason: str, extra: int
            ) -> None:
                pass

    class OtherNames(Saga[OrderData]):  # the parameters' names are the user's
        steps = (ReserveCreditStep,)

        async def on_failed(self, connection: AsyncConnection, order: OrderData, why: str) -> None:
            pass


async def test_item8_each_end_hook_runs_once_with_the_typed_data_and_the_reason(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    completed = await start(orchestrator, "o-completed")
    assert (await answer(orchestrator, completed, RESERVED)).status == "completed"  # pivot, confirm: local

    failed = await start(orchestrator, "o-failed", "unconfirmed")
    assert (await answer(orchestrator, failed, RESERVED)).status == "failed"

    compensated = await start(orchestrator, "o-compensated", "refuse-pivot")
    assert (await answer(orchestrator, compensated, RESERVED)).status == "compensating"
    assert await bookings(engine) == [
        ("o-completed", "completed", ""),
        ("o-failed", "failed", "confirm: cannot confirm"),
    ]
    released = CreditReleased(released=True)
    assert (await answer(orchestrator, compensated, released, "compensation")).status == "compensated"

    stopped = await start(orchestrator, "o-stopped", "refuse-too")
    await answer(orchestrator, stopped, RESERVED)
    refused = StepRefused(reason="the ledger refuses")
    assert (await answer(orchestrator, stopped, refused, "compensation")).status == "compensation_failed"

    # The very same replies again (a redelivery the inbox did not catch): ignored, no hook.
    for saga_id, reply, phase in [
        (completed, RESERVED, "action"),
        (compensated, released, "compensation"),
        (stopped, refused, "compensation"),
    ]:
        again = await answer(orchestrator, saga_id, reply, phase)
        events = await orchestrator.store.load(stream_of(saga_id))
        assert events[-1].type == "saga.reply_ignored"
        assert again.version == len(events)

    # Replays and rebuilds fold events; they never run a hook.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM saga_instances"))
    assert await rebuild(orchestrator) == []
    for saga_id in (completed, failed, compensated, stopped):
        await replay(orchestrator, saga_id)
    assert await bookings(engine) == [
        ("o-compensated", "compensated", "pivot failed: the pivot refuses"),
        ("o-completed", "completed", ""),
        ("o-failed", "failed", "confirm: cannot confirm"),
        ("o-stopped", "failed", "reserve_credit: the ledger refuses"),
    ]


async def test_item8_on_compensated_gets_why_compensation_began_not_a_later_compensation_error(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        saga_id = await orchestrator.start(conn, Patient, order("o-1", "refuse-pivot"), key="o-1")
    await answer(orchestrator, saga_id, RESERVED, saga_type="Patient")
    refused = StepRefused(reason="ledger busy")
    state = await answer(orchestrator, saga_id, refused, "compensation", saga_type="Patient")
    assert (state.status, state.last_error) == ("compensating", "reserve_credit: ledger busy")
    async with engine.begin() as conn:  # the retry of the release falls due now
        await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 second'"))
    assert await fire_due_deadlines(orchestrator) == 1
    released = CreditReleased(released=True)
    state = await answer(orchestrator, saga_id, released, "compensation", attempt=2, saga_type="Patient")
    assert state.status == "compensated"
    assert await bookings(engine) == [("o-1", "compensated", "pivot failed: the pivot refuses")]


async def test_item8_the_hook_row_commits_with_the_ending_event_or_not_at_all(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    saga_id = await start(orchestrator, "o-1")
    async with engine.connect() as conn:  # begins a transaction at its first statement
        inside = await answer(orchestrator, saga_id, RESERVED, conn=conn)
        assert inside.status == "completed"
        rows = await conn.execute(text("SELECT outcome FROM bookings"))
        assert rows.scalars().all() == ["completed"]  # the hook wrote in this transaction
        await conn.rollback()
    assert (await orchestrator.load_raw(saga_id)).status == "running"
    assert await bookings(engine) == []

    assert (await answer(orchestrator, saga_id, RESERVED)).status == "completed"
    assert await bookings(engine) == [("o-1", "completed", "")]


async def test_item8_a_raising_hook_leaves_the_saga_not_ended_and_succeeds_once_fixed(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    saga_id = await start(orchestrator, "o-1")
    Booked.failing = 2
    for _ in range(2):
        with pytest.raises(HookFailed) as caught:
            await answer(orchestrator, saga_id, RESERVED)
        assert str(caught.value) == (
            f"saga {saga_id} (Booked): on_completed raised RuntimeError: the bookings ledger is closed; "
            "the saga stays running until the hook succeeds (what ended it is tried again)"
        )
        assert caught.value.retriable  # the consumer retries it, then dead-letters it
        state = await orchestrator.load_raw(saga_id)
        assert (state.status, state.version) == ("running", 2)  # started, reserve_credit requested
        assert await bookings(engine) == []  # the row the hook wrote before raising is gone too

    assert (await answer(orchestrator, saga_id, RESERVED)).status == "completed"
    assert await bookings(engine) == [("o-1", "completed", "")]


async def test_item8_a_raising_hook_on_a_deadline_backs_off_then_parks_and_resumes_once_fixed(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    """reserve_credit times out (compensation begins: its outcome is unknown), then so does
    its compensation: the saga stops in compensation_failed, in the deadline's transaction,
    and its on_failed hook raises there."""
    saga_id = await start(orchestrator, "o-late")

    async def fire() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM outbox"))  # as the relay does once it published
            await conn.execute(text("UPDATE saga_deadlines SET due_at = now() - interval '1 second'"))
        await fire_due_deadlines(orchestrator, max_failures=3, backoff_s=0)

    await fire()
    assert (await orchestrator.load_raw(saga_id)).status == "compensating"
    Booked.failing = 1000
    for _ in range(3):
        await fire()
    stuck = await list_sagas(engine, stuck_after_s=3600)
    assert [(r["saga_id"], r["status"]) for r in stuck] == [(saga_id, "compensating")]
    assert stuck[0]["last_error"].startswith(f"parked: HookFailed: saga {saga_id} (Booked): on_failed raised")
    version = (await orchestrator.load_raw(saga_id)).version
    await fire()  # parked: not fired again
    assert (await orchestrator.load_raw(saga_id)).version == version
    assert await bookings(engine) == []

    Booked.failing = 0
    await orchestrator.resume(saga_id, "bookings ledger open again")  # sends the release again
    await fire()
    assert (await orchestrator.load_raw(saga_id)).status == "compensation_failed"
    assert await bookings(engine) == [("o-late", "failed", "reserve_credit: no reply within 30.0s")]


async def test_item8_a_raising_hook_in_a_start_fails_the_callers_transaction_and_writes_nothing(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    """The local steps run in the start's transaction, so the ending, and its hook, do too."""

    async def place() -> str:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO bookings VALUES ('o-1', 'placed', '')"))
            return await orchestrator.start(conn, Instant, order("o-1"), key="o-1")

    Booked.failing = 1
    with pytest.raises(HookFailed, match=r"\(Instant\): on_completed raised RuntimeError"):
        await place()
    assert await bookings(engine) == []  # the caller's own row went with it
    with pytest.raises(UnknownSagaError):
        await orchestrator.load_raw(saga_id_for("Instant", "o-1"))

    saga_id = await place()
    assert (await orchestrator.load(saga_id, Instant)).status == "completed"
    assert await bookings(engine) == [("o-1", "completed", ""), ("o-1", "placed", "")]


# --- through the running system: consumer retries, redelivery, dead letters ------------------


@pytest.fixture
def saga_types() -> list[type[Saga[Any]]]:
    return [Booked]


@pytest.fixture
async def booked_system(system: System) -> System:
    async with system.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE bookings (order_id text, outcome text, reason text)"))
    return system


async def test_item8_through_the_consumer_a_failing_hook_is_retried_and_runs_once_and_a_redelivery_runs_nothing(
    booked_system: System,
) -> None:
    system = booked_system
    Booked.failing = 2  # the consumer's retries get past it
    saga_id = await system.order(customer="alice", saga=Booked)
    state = await system.orchestrator.wait(saga_id, Booked)
    assert state.status == "completed"
    assert state.data.credit_reservation == f"credit-{state.data.order_id}"
    assert await bookings(system.engine) == [(state.data.order_id, "completed", "")]

    # The same reply record again, past the inbox (a new message id): recorded, ignored, no hook.
    reply = CreditReserved(reservation_id="again")
    envelope = system.orchestrator.outbox.envelope(
        reply, saga_id=saga_id, saga_type="Booked", step="reserve_credit", phase="action", attempt=1
    )
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            system.orchestrator.topics.replies("Booked"),
            reply.model_dump_json().encode(),
            key=saga_id.encode(),
            headers=kafka_headers(envelope),
        )
    finally:
        await producer.stop()

    async def ignored() -> bool:
        return (await system.state(saga_id)).version == state.version + 1

    await wait_for(ignored, 30, "the redelivered reply to be recorded")
    assert await bookings(system.engine) == [(state.data.order_id, "completed", "")]


async def test_item8_a_hook_that_keeps_failing_dead_letters_the_reply_with_its_reason(
    booked_system: System,
) -> None:
    system = booked_system
    Booked.failing = 1_000_000
    dead_letters = system.orchestrator.topics.replies("Booked") + ".dlq"
    saga_id = await system.order(customer="alice", saga=Booked)
    async with Collector(system.bootstrap, [dead_letters]) as collector:

        async def dead_lettered() -> bool:
            return bool(collector.records)

        await wait_for(dead_lettered, 60, "the reply to be dead-lettered")
        headers = collector.headers(0)
    assert headers["dlq_error_type"] == "HookFailed"
    assert headers["dlq_reason"].startswith("handler failed after 5 attempt(s): HookFailed(")
    assert f"saga {saga_id} (Booked): on_completed raised RuntimeError: the bookings" in headers["dlq_reason"]
    state = await system.state(saga_id)
    assert (state.status, state.awaiting and state.awaiting.step) == ("running", "reserve_credit")
    assert await bookings(system.engine) == []

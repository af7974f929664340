"""Signals and waits on the real services (issue 14, must-show 1): a signal sent before the
saga reaches its wait, two signals racing into a WaitForAny, a wait that times out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from eventstore import Database
from outbox import DeadLetter, DeadLetterError, DeadLetterReader
from saga import Topics
from saga._events import (
    SagaCompensated,
    SignalConsumed,
    SignalIgnored,
    SignalReceived,
    StepCompensated,
    StepFailed,
    StepSucceeded,
    StepTimedOut,
)
from tests.helpers import wait_for
from tests.saga.language_app import (
    Approved,
    ImpatientTrip,
    Picked,
    PickedTrip,
    Rejected,
    Trips,
    VerdictTrip,
    running,
)


@pytest.fixture
async def trips(database: Database, kafka_bootstrap: str) -> AsyncIterator[Trips]:
    async with running(database, kafka_bootstrap) as system:
        yield system


async def test_b_a_signal_sent_with_the_start_is_kept_until_the_wait_takes_it(trips: Trips) -> None:
    """Sent in the transaction that starts the saga, while its first step is still out: kept;
    taken when the saga gets to the wait; the saga completes with the signal's data."""
    flight = trips.controls.held["flight"] = asyncio.Event()
    saga_id = await trips.start(PickedTrip, "early-pick", Picked(by="ann"))

    (received,) = await trips.wait_event(saga_id, SignalReceived)
    kept = await trips.orchestrator.load_raw(saga_id)
    assert (kept.status, [w.step for w in kept.waiting]) == ("running", ["reserve_flight"])
    assert [(s.message_type, s.data) for s in kept.signals] == [("lang.picked", {"by": "ann"})]

    flight.set()
    final = await trips.wait_status(saga_id, "completed", "compensated", "failed")
    assert final.status == "completed"
    assert final.data.picked_by == "ann"
    raw = await trips.orchestrator.load_raw(saga_id)
    assert raw.signals == []
    events = [e.event for e in await trips.events(saga_id)]
    (consumed,) = [e for e in events if isinstance(e, SignalConsumed)]
    assert (consumed.step, consumed.message_id) == ("wait_picked", received.message_id)
    assert events.index(received) < events.index(consumed)


async def test_c_two_signals_racing_into_wait_for_any_one_is_taken_the_other_ignored(trips: Trips) -> None:
    """Approved and Rejected, sent in two transactions that commit together: the wait takes
    one, the other is recorded ignored, and the saga moves past the wait once."""
    hotel = trips.controls.held["hotel"] = asyncio.Event()  # the saga stays running past the wait
    trip = "race"
    saga_id = await trips.start(VerdictTrip, trip)
    both_put = asyncio.Barrier(2)

    async def send(signal: BaseModel) -> None:
        async with trips.engine.begin() as conn:
            await trips.app.signal(conn, VerdictTrip, signal, key=trip)
            await both_put.wait()  # neither commits before the other has its row in

    await asyncio.gather(send(Approved(by="ann")), send(Rejected(by="bob")))

    async def both_seen() -> bool:
        events = [e.event for e in await trips.events(saga_id)]
        return sum(isinstance(e, SignalConsumed | SignalIgnored) for e in events) >= 2

    await wait_for(both_seen, 60, "both signals to be taken or ignored")
    hotel.set()
    final = await trips.wait_status(saga_id, "completed", "compensated", "failed")
    assert final.status == "completed"
    events = [e.event for e in await trips.events(saga_id)]
    consumed = [e for e in events if isinstance(e, SignalConsumed)]
    ignored = [e for e in events if isinstance(e, SignalIgnored)]
    assert len(consumed) == 1
    assert len(ignored) == 1
    assert {consumed[0].message_type, ignored[0].message_type} == {"lang.approved", "lang.rejected"}
    assert consumed[0].message_id != ignored[0].message_id
    taken = "approved by ann" if consumed[0].message_type == "lang.approved" else "rejected by bob"
    assert final.data.decision == taken
    assert [e.step for e in events if isinstance(e, StepSucceeded)] == ["wait_verdict", "reserve_hotel"]
    assert [(s, a) for s, a, _ in await trips.effects(trip)] == [("hotel", "reserve")]


async def test_d_a_wait_that_times_out_fails_like_a_step_and_the_saga_is_compensated(trips: Trips) -> None:
    trip = "nobody-picks"
    saga_id = await trips.start(ImpatientTrip, trip)
    final = await trips.wait_status(saga_id, "compensated", "completed", "failed", "compensation_failed")
    assert final.status == "compensated"
    events = [e.event for e in await trips.events(saga_id)]
    assert any(isinstance(e, StepTimedOut | StepFailed) and e.step == "wait_briefly" for e in events)
    assert [e.step for e in events if isinstance(e, StepCompensated)] == ["reserve_flight"]
    assert sum(isinstance(e, SagaCompensated) for e in events) == 1
    assert [(s, a) for s, a, _ in await trips.effects(trip)] == [("flight", "reserve"), ("flight", "cancel")]


async def test_a_signal_to_a_saga_that_does_not_exist_is_dead_lettered_with_the_reason(trips: Trips) -> None:
    """A key nobody started: the reply consumer cannot decide on it, so the signal goes to the
    reply topic's dead-letter topic, saying so (README: start the saga first, or redrive)."""
    async with trips.engine.begin() as conn:
        saga_id = await trips.app.signal(conn, PickedTrip, Picked(by="bob"), key="never-started")
    topics = Topics(trips.app.topic_prefix)
    topic = topics.dead_letter(topics.replies(PickedTrip.name))

    async def letters() -> list[DeadLetter]:
        async with DeadLetterReader(trips.bootstrap) as reader:
            try:
                return await reader.read(topic, limit=None)
            except DeadLetterError:
                return []  # the dead-letter topic is made with the first dead letter

    async def arrived() -> bool:
        return bool(await letters())

    await wait_for(arrived, 60, f"the signal's dead letter on {topic}")
    [letter] = await letters()
    assert letter.saga_id == saga_id
    assert letter.message_type == "lang.picked"
    assert f"no saga with id {saga_id!r}" in (letter.reason or "")

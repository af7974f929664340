"""Parallel groups on the real services (issue 14, must-show 1): a failure in a group while a
sibling is still in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from eventstore import Database
from saga._events import SagaCompensated, StepCompensated
from tests.helpers import wait_for
from tests.saga.language_app import ParallelTrip, Trips, running


@pytest.fixture
async def trips(database: Database, kafka_bootstrap: str) -> AsyncIterator[Trips]:
    async with running(database, kafka_bootstrap) as system:
        yield system


async def test_a_refusal_in_a_group_compensates_the_answered_sibling_then_the_late_one_then_the_earlier_step(
    trips: Trips,
) -> None:
    """The tour refuses while the car's answer is held: the hotel (answered) is cancelled at
    once; the car, once it answers; the flight (before the group) last."""
    car = trips.controls.held["car"] = asyncio.Event()
    trip = "group-refuse-tour"
    saga_id = await trips.start(ParallelTrip, trip)

    async def hotel_compensated() -> bool:
        events = await trips.events(saga_id)
        return any(isinstance(e.event, StepCompensated) and e.event.step == "reserve_hotel" for e in events)

    await wait_for(hotel_compensated, 60, "the hotel, answered before the refusal, to be compensated")
    state = await trips.orchestrator.load_raw(saga_id)
    assert state.status == "compensating"
    assert [w.step for w in state.waiting] == ["reserve_car"]  # the car's request is still out
    assert [(s, a) for s, a, _ in await trips.effects(trip)] == [
        ("flight", "reserve"),
        ("hotel", "reserve"),
        ("hotel", "cancel"),
    ]

    car.set()
    final = await trips.wait_status(saga_id, "compensated", "compensation_failed", "failed")
    assert final.status == "compensated"
    assert [(s, a) for s, a, _ in await trips.effects(trip)] == [
        ("flight", "reserve"),
        ("hotel", "reserve"),
        ("hotel", "cancel"),
        ("car", "reserve"),
        ("car", "cancel"),
        ("flight", "cancel"),
    ]
    events = [e.event for e in await trips.events(saga_id)]
    compensated = [e.step for e in events if isinstance(e, StepCompensated)]
    assert compensated == ["reserve_hotel", "reserve_car", "reserve_flight"]
    assert sum(isinstance(e, SagaCompensated) for e in events) == 1

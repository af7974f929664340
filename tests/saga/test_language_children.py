"""Child sagas on the real services (issue 14, must-show 1): a completed child's data moves
the parent on; the parent failing later has the completed child undo itself; a child that
compensates fails the parent's step."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from eventstore import Database
from saga import child_id_for, saga_id_for, stream_of
from saga._events import (
    CompensationRequested,
    SagaCompensated,
    SagaCompleted,
    StepCompensated,
    StepFailed,
)
from tests.helpers import Collector, wait_for
from tests.saga.language_app import HotelFirstTrip, HotelTrip, ParentTrip, TripData, Trips, build_app, running

ENDED = ("completed", "compensated", "failed", "compensation_failed")


@pytest.fixture
async def trips(database: Database, kafka_bootstrap: str) -> AsyncIterator[Trips]:
    async with running(database, kafka_bootstrap) as system:
        yield system


async def test_f_a_completed_child_moves_the_parent_on_with_its_data(trips: Trips) -> None:
    trip = "family"
    parent_id = await trips.start(ParentTrip, trip)
    final = await trips.wait_status(parent_id, *ENDED)
    assert final.status == "completed"
    child_id = child_id_for(parent_id, "book_hotel", 1)
    child = await trips.wait_status(child_id, *ENDED)
    assert child.status == "completed"
    assert final.data.refs == {"flight": "flight-family", "hotel": "hotel-family", "tour": "tour-family"}
    # The tour's command was made from the data the child gave back.
    assert await trips.effects(trip) == [
        ("flight", "reserve", ""),
        ("hotel", "reserve", ""),
        ("tour", "reserve", "flight=flight-family,hotel=hotel-family"),
    ]
    raw = await trips.orchestrator.load_raw(child_id)
    assert (raw.saga_type, raw.parent and (raw.parent.saga_id, raw.parent.step)) == (
        HotelTrip.name,
        (parent_id, "book_hotel"),
    )
    assert (await trips.orchestrator.load_raw(parent_id)).children == {"book_hotel": child_id}


async def test_f_the_parent_failing_later_has_its_completed_child_undo_itself_first(trips: Trips) -> None:
    trip = "family-refuse-tour"
    parent_id = await trips.start(ParentTrip, trip)
    final = await trips.wait_status(parent_id, *ENDED)
    assert final.status == "compensated"
    child_id = child_id_for(parent_id, "book_hotel", 1)
    child = await trips.orchestrator.load_raw(child_id)
    assert child.status == "compensated"
    # The child ran its own compensation (the hotel cancelled) before the parent's flight was.
    assert [(s, a) for s, a, _ in await trips.effects(trip)] == [
        ("flight", "reserve"),
        ("hotel", "reserve"),
        ("hotel", "cancel"),
        ("flight", "cancel"),
    ]
    child_events = [e.event for e in await trips.events(child_id)]
    assert sum(isinstance(e, SagaCompleted) for e in child_events) == 1  # it had completed first
    (asked,) = [e for e in child_events if isinstance(e, CompensationRequested)]
    assert asked.step == "book_hotel"
    assert [e.step for e in child_events if isinstance(e, StepCompensated)] == ["reserve_hotel"]
    parent_events = [e.event for e in await trips.events(parent_id)]
    assert [e.step for e in parent_events if isinstance(e, StepCompensated)] == [
        "book_hotel",
        "reserve_flight",
    ]
    assert sum(isinstance(e, SagaCompensated) for e in parent_events) == 1
    assert await between_the_sagas(trips, parent_id, child_id) == [
        ("HotelTrip", child_id, "saga.compensate", child_id, "HotelTrip", "book_hotel", "compensation"),
        ("ParentTrip", parent_id, "saga.child_ended", parent_id, "ParentTrip", "book_hotel", "action"),
        ("ParentTrip", parent_id, "saga.child_ended", parent_id, "ParentTrip", "book_hotel", "compensation"),
    ]


async def between_the_sagas(trips: Trips, parent_id: str, child_id: str) -> list[tuple[str | None, ...]]:
    """The messages the two sagas sent each other, as published: (reply topic's saga, record
    key, type, envelope saga id, saga type, step, phase). Each goes to the reply topic of the
    saga it is for, keyed and addressed to that saga, answering the parent's step request."""
    topics = trips.orchestrator.topics
    names = {topics.replies(s.name): s.name for s in (ParentTrip, HotelTrip)}
    fields = ("message_type", "saga_id", "saga_type", "step", "phase")
    async with Collector(trips.bootstrap, list(names)) as seen:

        def found() -> list[tuple[str | None, ...]]:
            rows = []
            for record in seen.records:
                headers = {k: v.decode() for k, v in record.headers}
                if headers["message_type"] in ("saga.compensate", "saga.child_ended"):
                    key = record.key.decode()
                    rows.append((names[record.topic], key, *(headers.get(f) for f in fields)))
            return sorted(rows, key=lambda row: tuple(str(v) for v in row))

        await wait_for(lambda: len(found()) >= 3, 60, "the three messages between parent and child")
        return found()


async def test_f_a_child_that_compensates_fails_the_parents_step(trips: Trips) -> None:
    trip = "family-refuse-hotel"
    parent_id = await trips.start(ParentTrip, trip)
    final = await trips.wait_status(parent_id, *ENDED)
    assert final.status == "compensated"
    child = await trips.orchestrator.load_raw(child_id_for(parent_id, "book_hotel", 1))
    assert child.status == "compensated"
    parent_events = [e.event for e in await trips.events(parent_id)]
    assert [e.step for e in parent_events if isinstance(e, StepFailed)] == ["book_hotel"]
    assert [e.step for e in parent_events if isinstance(e, StepCompensated)] == ["reserve_flight"]
    assert [(s, a) for s, a, _ in await trips.effects(trip)] == [("flight", "reserve"), ("flight", "cancel")]


async def test_f_a_child_starts_in_the_transaction_that_starts_its_parent(database: Database) -> None:
    """No worker runs: what the start committed is all there is. Rolled back, neither exists."""
    orchestrator = build_app(prefix="kin").orchestrator(database)
    async with database.begin() as conn:
        await orchestrator.start(conn, HotelFirstTrip, TripData(trip="gone"), key="gone")
        await conn.rollback()
    async with database.begin() as conn:
        parent_id = await orchestrator.start(conn, HotelFirstTrip, TripData(trip="kin"), key="kin")
    child_id = child_id_for(parent_id, "book_hotel", 1)
    parent = await orchestrator.load_raw(parent_id)
    child = await orchestrator.load_raw(child_id)
    assert (parent.status, parent.children) == ("running", {"book_hotel": child_id})
    assert (child.saga_type, child.status, child.data) == (
        "HotelTrip",
        "running",
        {"trip": "kin", "refs": {}, "picked_by": None, "decision": None},
    )
    assert child.parent is not None
    assert (child.parent.saga_id, child.parent.saga_type, child.parent.step) == (
        parent_id,
        "HotelFirstTrip",
        "book_hotel",
    )
    async with database.connect() as conn:
        rows = (await conn.execute(text("SELECT topic, key FROM outbox ORDER BY id"))).all()
        instances = (
            await conn.execute(text("SELECT saga_id, saga_type FROM saga_instances ORDER BY saga_type"))
        ).all()
    assert [tuple(r) for r in rows] == [("kin.hotel.commands", child_id)]
    assert [tuple(r) for r in instances] == [(parent_id, "HotelFirstTrip"), (child_id, "HotelTrip")]
    gone = child_id_for(saga_id_for("HotelFirstTrip", "gone"), "book_hotel", 1)
    async with database.connect() as conn:
        assert await orchestrator.store.stream_versions([stream_of(gone)], conn=conn) == {stream_of(gone): 0}

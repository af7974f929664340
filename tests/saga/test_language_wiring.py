"""Wiring checks of the saga language (issue 14), at App and Orchestrator creation, and the
checks of `App.signal`: group members checked like other steps, every signal a wait takes
registered, every child saga one of the app's; a signal that could never be taken refused
in the caller's transaction."""

from __future__ import annotations

import types

import orjson
import pytest
from pydantic import BaseModel
from sqlalchemy import text

from eventstore import Database
from outbox import Envelope, MessageTypeError
from saga import (
    App,
    ChildSaga,
    DefinitionError,
    Orchestrator,
    Parallel,
    Saga,
    StepKind,
    UnknownSagaError,
    WaitFor,
    saga_id_for,
)
from tests.saga.travel import (
    HANDLERS,
    ChargeStep,
    FlightReserved,
    ReserveFlightStep,
    ReserveHotel,
    ReserveHotelStep,
    TravelSaga,
    TripData,
    messages,
)
from tests.saga.wiring import NOWHERE, HotelTypo, app_error, registry_without

# --- at creation ----------------------------------------------------


class Unregistered(BaseModel):
    trip: str


class NotInTheApp(Saga[TripData]):
    steps = (ReserveHotelStep,)


class BookElsewhere(ChildSaga[TripData]):
    saga = NotInTheApp

    def start(self, data: TripData) -> TripData:
        return data


def language_saga() -> type[Saga[TripData]]:
    """A typo'd participant inside a group, a wait for an unregistered signal, a child saga the
    app does not have."""
    steps = (ReserveFlightStep, Parallel(HotelTypo, BookElsewhere), WaitFor(Unregistered), ChargeStep)
    return types.new_class(
        "LanguageSaga", (Saga[TripData],), exec_body=lambda ns: ns.update(steps=steps, name="LanguageSaga")
    )


@pytest.mark.pure
def test_issue14_group_members_waits_and_children_are_checked_all_at_once() -> None:
    error = app_error(sagas=[language_saga()])
    assert error.startswith("App: 3 problems:\n")
    assert "LanguageSaga step reserve_hotel: participant 'hotel' is not in the app" in error
    assert (
        "LanguageSaga step wait_for_unregistered: the signal it waits for, Unregistered is not registered "
        "in the app's MessageRegistry"
    ) in error
    assert (
        "LanguageSaga step book_elsewhere: its child saga NotInTheApp is not one of the app's sagas "
        "(it has: LanguageSaga); add it to App(sagas=[...])"
    ) in error


@pytest.mark.pure
def test_issue14_a_group_members_unregistered_command_is_refused() -> None:
    grouped = types.new_class(
        "GroupSaga",
        (Saga[TripData],),
        exec_body=lambda ns: ns.update(steps=(Parallel(ReserveFlightStep, ReserveHotelStep), ChargeStep)),
    )
    error = app_error(sagas=[grouped], messages=registry_without(ReserveHotel))
    assert error.startswith("App: 2 problems:\n")  # the other: the hotels participant's handler key
    assert (
        "GroupSaga step reserve_hotel: its command ReserveHotel is not registered in the app's MessageRegistry"
    ) in error


@pytest.mark.pure
def test_issue14_a_child_saga_in_the_app_is_accepted() -> None:
    class BookTravel(ChildSaga[TripData]):
        saga = TravelSaga
        kind = StepKind.PIVOT  # the child has a pivot: once it completed it cannot be undone

        def start(self, data: TripData) -> TripData:
            return data

    parent = types.new_class("Parent", (Saga[TripData],), exec_body=lambda ns: ns.update(steps=(BookTravel,)))
    app = App(sagas=[TravelSaga, parent], messages=messages, participants=HANDLERS)
    assert [s.name for s in app.sagas] == ["TravelSaga", "Parent"]
    assert "its child saga TravelSaga is not one of the app's sagas" in app_error(sagas=[parent])


@pytest.mark.pure
async def test_issue14_the_orchestrator_refuses_a_child_it_does_not_have_and_an_unregistered_signal() -> None:
    async with Database(NOWHERE) as database:
        with pytest.raises(DefinitionError) as raised:
            Orchestrator(database, [language_saga()], messages)
    assert str(raised.value).startswith("Orchestrator: 2 problems:\n")
    assert "step wait_for_unregistered: the signal it waits for, Unregistered is not registered" in str(
        raised.value
    )
    assert "step book_elsewhere: its child saga NotInTheApp is not one of the app's sagas" in str(
        raised.value
    )


# --- issue 14: App.signal ---------------------------------------------------------------------


@messages.message("trips.approved")
class TripApproved(BaseModel):
    by: str


class ApprovedTrip(Saga[TripData]):
    steps = (ReserveFlightStep, WaitFor(TripApproved), ChargeStep)


def signal_app() -> App:
    return App(sagas=[ApprovedTrip], messages=messages, participants=HANDLERS, topic_prefix="trips")


async def test_issue14_a_signal_is_one_outbox_row_to_the_sagas_reply_topic(database: Database) -> None:
    app = signal_app()
    async with database.begin() as conn:
        by_key = await app.signal(conn, ApprovedTrip, TripApproved(by="ann"), key="t-1")
        by_id = await app.orchestrator(database).signal(
            conn, ApprovedTrip, TripApproved(by="bob"), saga_id=by_key
        )
    assert by_key == by_id == saga_id_for("ApprovedTrip", "t-1")
    async with database.connect() as conn:
        rows = (await conn.execute(text("SELECT topic, key, value, headers FROM outbox ORDER BY id"))).all()
    assert [(topic, key, orjson.loads(value)) for topic, key, value, _ in rows] == [
        ("trips.ApprovedTrip.replies", by_key, {"by": "ann"}),
        ("trips.ApprovedTrip.replies", by_key, {"by": "bob"}),
    ]
    envelope = Envelope.model_validate(rows[0][3])
    assert (envelope.message_type, envelope.saga_id, envelope.saga_type, envelope.phase) == (
        "trips.approved",
        by_key,
        "ApprovedTrip",
        "signal",
    )
    assert (envelope.step, envelope.attempt) == (None, None)


async def test_issue14_a_signal_that_cannot_arrive_is_refused_in_the_callers_transaction(
    database: Database,
) -> None:
    app = signal_app()
    approved = TripApproved(by="ann")
    async with database.begin() as conn:
        with pytest.raises(ValueError, match=r"pass exactly one of saga_id= .* or key="):
            await app.signal(conn, ApprovedTrip, approved)
        with pytest.raises(ValueError, match="pass exactly one of saga_id="):
            await app.signal(conn, ApprovedTrip, approved, saga_id="x", key="y")
        with pytest.raises(
            MessageTypeError,
            match=r"signal to ApprovedTrip: Unregistered is not registered in the App's MessageRegistry",
        ):
            await app.signal(conn, ApprovedTrip, Unregistered(trip="t"), key="t-1")
        with pytest.raises(
            UnknownSagaError, match=r"TravelSaga'> is not one of the App's sagas \(it has: ApprovedTrip\)"
        ):
            await app.signal(conn, TravelSaga, approved, key="t-1")
        with pytest.raises(
            MessageTypeError, match=r"no step of it waits for FlightReserved \(it waits for: TripApproved\)"
        ):
            await app.signal(conn, ApprovedTrip, FlightReserved(trip="t"), key="t-1")
        with pytest.raises(ValueError, match="a key is a non-empty string"):
            await app.signal(conn, ApprovedTrip, approved, key="")
        rows = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar()
    assert rows == 0

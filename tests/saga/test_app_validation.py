"""Wiring mistakes stop the app when it is created (issue 13, items 2 and 3): a participant the
app does not have, a message type nobody registered, a topic prefix set in two places that
disagree. Most need no services; the CLI ones run `saga` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from eventstore import Database
from saga import App, AppLoadError, DefinitionError, Orchestrator, RemoteStep, Saga
from tests.saga.travel import (
    HANDLERS,
    CancelFlight,
    CancelHotel,
    Charge,
    Charged,
    ChargeStep,
    FlightCancelled,
    FlightReserved,
    HotelCancelled,
    HotelReserved,
    ReserveFlight,
    ReserveFlightStep,
    ReserveHotel,
    ReserveHotelStep,
    TravelSaga,
    TripData,
    answer,
    messages,
)
from tests.saga.wiring import NOWHERE, HotelTypo, app_error, registry_without

ROOT = Path(__file__).resolve().parents[2]


def travel(*steps: type[RemoteStep[Any]], name: str = "TravelSaga") -> type[Saga[TripData]]:
    return types.new_class(name, (Saga[TripData],), exec_body=lambda ns: ns.update(steps=steps, name=name))


# --- item 2: participants ------------------------------------------------------------------


@pytest.mark.pure
def test_the_travel_app_as_wired_is_accepted() -> None:
    app = App(sagas=[TravelSaga], messages=messages, participants=HANDLERS, topic_prefix="travel")
    assert app.topic_prefix == "travel"
    assert App(sagas=[TravelSaga], messages=messages, participants=HANDLERS).topic_prefix == "saga"


@pytest.mark.pure
def test_item2_misspelled_participant_fails_at_app_creation() -> None:
    error = app_error(sagas=[travel(ReserveFlightStep, HotelTypo)])
    assert error == (
        "TravelSaga step reserve_hotel: participant 'hotel' is not in the app (it has: flights, hotels, "
        "payments); did you mean 'hotels'? A participant served by another deployment goes in "
        "App(external_participants=[...])"
    )


@pytest.mark.pure
def test_item2_external_participant_is_accepted() -> None:
    class PayByBank(ReserveHotelStep):
        name = "pay"
        participant = "bank"

    saga = travel(ReserveFlightStep, PayByBank)
    assert "participant 'bank' is not in the app" in app_error(sagas=[saga])
    app = App(sagas=[saga], messages=messages, participants=HANDLERS, external_participants=["bank"])
    assert list(app.external_participants) == ["bank"]
    assert "must be a list of names, got the string 'bank'" in app_error(
        sagas=[saga], external_participants="bank"
    )


@pytest.mark.pure
def test_item2_a_participant_without_a_handler_for_the_steps_command_fails() -> None:
    handlers = {**HANDLERS, "flights": {ReserveFlight: HANDLERS["flights"][ReserveFlight]}}
    error = app_error(participants=handlers)
    assert (
        "TravelSaga step reserve_flight: participant 'flights' has no handler for its compensation" in error
    )
    assert "CancelFlight (it handles: ReserveFlight)" in error


@pytest.mark.pure
def test_item2_every_problem_is_reported_at_once() -> None:
    class FlightTypo(ReserveFlightStep):
        name = "reserve_flight"
        participant = "flight"

    error = app_error(sagas=[travel(FlightTypo, HotelTypo, ChargeStep)], messages=registry_without(Charged))
    assert error.startswith("App: 3 problems:\n")
    assert "step reserve_flight: participant 'flight' is not in the app" in error
    assert "did you mean 'flights'?" in error
    assert "step reserve_hotel: participant 'hotel' is not in the app" in error
    assert "step charge: the reply to its command Charged is not registered" in error


@pytest.mark.pure
def test_item2_unknown_participant_service_names_the_closest() -> None:
    app = App(sagas=[TravelSaga], messages=messages, participants=HANDLERS)
    with pytest.raises(
        AppLoadError,
        match=r"no participant 'hotel' \(it has: flights, hotels, payments\); did you mean 'hotels'\?",
    ):
        app.handlers("hotel")


@pytest.mark.pure
async def test_item2_the_orchestrator_and_participants_take_the_apps_prefix() -> None:
    app = App(sagas=[TravelSaga], messages=messages, participants=HANDLERS, topic_prefix="travel")
    async with Database(NOWHERE) as database:
        orchestrator = app.orchestrator(database)
        hotels = app.participant(database, "127.0.0.1:1", "hotels")
        assert orchestrator.reply_topics() == ["travel.TravelSaga.replies"]
        assert hotels.topics == ["travel.hotels.commands"]
        assert hotels.group_id == "travel.hotels"
        moved = app.with_topic_prefix("elsewhere").orchestrator(database)
        assert moved.reply_topics() == ["elsewhere.TravelSaga.replies"]


@pytest.mark.pure
@pytest.mark.parametrize("prefix", ["", "a b", "x" * 151, "trips/2026"])
def test_item2_a_bad_topic_prefix_fails_at_app_creation(prefix: str) -> None:
    assert f"topic_prefix {prefix!r} must be 1 to 150 letters" in app_error(topic_prefix=prefix)


@pytest.mark.pure
def test_two_sagas_with_one_name_fail_at_app_creation() -> None:
    error = app_error(sagas=[TravelSaga, travel(ReserveFlightStep, ReserveHotelStep)])
    assert "two sagas are TravelSaga version 1" in error
    assert "give the newer one `version = <next number>`" in error
    assert app_error(sagas=[TravelSaga, TripData]).endswith("TripData'> is not a Saga subclass")


# --- item 3: message types -----------------------------------------------------------------


@pytest.mark.pure
@pytest.mark.parametrize(
    ("unregistered", "role"),
    [
        (ReserveHotel, "its command ReserveHotel"),
        (HotelReserved, "the reply to its command HotelReserved"),
        (CancelHotel, "its compensation command CancelHotel"),
        (HotelCancelled, "the reply to its compensation HotelCancelled"),
    ],
)
def test_item3_unregistered_message_type_is_refused_at_app_creation(
    unregistered: type[BaseModel], role: str
) -> None:
    error = app_error(messages=registry_without(unregistered))
    assert f"TravelSaga step reserve_hotel: {role} is not registered in the app's MessageRegistry" in error
    assert f'messages.register({unregistered.__name__}, "<service>.<name>")' in error


@pytest.mark.pure
def test_item3_unregistered_handler_key_is_refused_at_app_creation() -> None:
    class Unregistered(BaseModel):
        trip: str

    flights: dict[type[BaseModel], Any] = {**HANDLERS["flights"], Unregistered: answer}
    handlers = {**HANDLERS, "flights": flights}
    error = app_error(participants=handlers)
    assert error.startswith("participant 'flights': the command Unregistered is not registered")


@pytest.mark.pure
async def test_item3_the_orchestrator_refuses_a_saga_whose_messages_are_not_registered() -> None:
    async with Database(NOWHERE) as database:
        with pytest.raises(
            DefinitionError, match="TravelSaga step charge: its command Charge is not registered"
        ):
            Orchestrator(database, [TravelSaga], registry_without(Charge))


class Unannotated(BaseModel):
    trip: str


class UnannotatedStep(RemoteStep[TripData]):
    """command() says no type: only run time can tell what it sends."""

    name = "reserve_unannotated"
    participant = "flights"
    compensation_reply = FlightCancelled

    def command(self, data: TripData):  # type: ignore[no-untyped-def]
        return Unannotated(trip=data.trip)

    def on_reply(self, data: TripData, reply: FlightReserved) -> TripData:
        return data

    def compensation(self, data: TripData) -> CancelFlight:
        return CancelFlight(trip=data.trip)


async def test_item3_a_command_without_annotation_is_checked_when_it_is_sent(database: Database) -> None:
    saga = travel(UnannotatedStep, name="UnannotatedSaga")
    app = App(sagas=[saga], messages=messages, participants=HANDLERS)
    orchestrator = app.orchestrator(database)
    with pytest.raises(DefinitionError) as raised:
        async with database.begin() as conn:
            await orchestrator.start(conn, saga, TripData(trip="t1"))
    assert str(raised.value).startswith(
        "UnannotatedSaga step reserve_unannotated: the command it returned, Unannotated is not registered "
        "in the app's MessageRegistry"
    )
    async with database.connect() as conn:
        assert (await orchestrator.store.stream_versions(["saga:any"], conn=conn)) == {"saga:any": 0}


# --- item 2: one topic prefix, the app's -----------------------------------------------------


def saga_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "saga", *args],
        env={**environ, "DATABASE_URL": NOWHERE, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.pure
def test_item2_prefix_mismatch_worker_refuses_to_start() -> None:
    result = saga_cli("worker", SAGA_APP="examples.orders.app:app", SAGA_TOPIC_PREFIX="saga")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "SAGA_TOPIC_PREFIX (or --topic-prefix) is 'saga' but the app examples.orders.app:app has topic_prefix "
        "'shop': the prefix is set in one place, App(topic_prefix=...)"
    ) in result.stderr


@pytest.mark.pure
def test_item2_prefix_mismatch_participant_refuses_to_start_with_the_flag_too() -> None:
    result = saga_cli(
        "--topic-prefix", "orders", "--app", "examples.orders.app:app", "participant", "customers"
    )
    assert result.returncode == 1, result.stderr
    assert "is 'orders' but the app examples.orders.app:app has topic_prefix 'shop'" in result.stderr


@pytest.mark.pure
def test_item2_participant_cli_names_the_closest_service() -> None:
    result = saga_cli("--app", "examples.orders.app:app", "participant", "customer")
    assert result.returncode == 1, result.stderr
    assert (
        "no participant 'customer' (it has: customers, inventory, payments); did you mean 'customers'?"
        in (result.stderr)
    )


@pytest.mark.pure
def test_item2_worker_with_a_misspelled_participant_in_its_app_refuses_to_start() -> None:
    result = saga_cli("worker", SAGA_APP="tests.saga.miswired_app:app")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "cannot load 'tests.saga.miswired_app' (from app path 'tests.saga.miswired_app:app'): "
        "MiswiredSaga step reserve_hotel: participant 'hotel' is not in the app"
    ) in result.stderr
    assert "did you mean 'hotels'?" in result.stderr

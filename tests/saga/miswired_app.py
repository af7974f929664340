"""An app with a misspelled participant, loaded by `saga worker` in the wiring tests."""

from __future__ import annotations

from saga import App, RemoteStep, Saga
from tests.saga.travel import HANDLERS, HotelCancelled, HotelReserved, ReserveHotel, TripData, messages


class MisspelledHotelStep(RemoteStep[TripData]):
    name = "reserve_hotel"
    participant = "hotel"

    def command(self, data: TripData) -> ReserveHotel:
        return ReserveHotel(trip=data.trip)

    def on_reply(self, data: TripData, reply: HotelReserved) -> TripData:
        return data

    def compensation(self, data: TripData) -> None:
        return None

    compensation_reply = HotelCancelled


class MiswiredSaga(Saga[TripData]):
    steps = (MisspelledHotelStep,)


app = App(sagas=[MiswiredSaga], messages=messages, participants=HANDLERS)

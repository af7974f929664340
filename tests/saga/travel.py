"""A small travel app for the wiring tests: flights and hotels reserved, the card charged.

Its message types are registered in `messages`; `Unregistered*` types are not.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from outbox import Envelope, MessageRegistry
from saga import RemoteStep, Saga, StepKind

messages = MessageRegistry()


@messages.message("flights.reserve")
class ReserveFlight(BaseModel):
    trip: str


@messages.message("flights.reserved")
class FlightReserved(BaseModel):
    trip: str


@messages.message("flights.cancel")
class CancelFlight(BaseModel):
    trip: str


@messages.message("flights.cancelled")
class FlightCancelled(BaseModel):
    trip: str


@messages.message("hotels.reserve")
class ReserveHotel(BaseModel):
    trip: str


@messages.message("hotels.reserved")
class HotelReserved(BaseModel):
    trip: str


@messages.message("hotels.cancel")
class CancelHotel(BaseModel):
    trip: str


@messages.message("hotels.cancelled")
class HotelCancelled(BaseModel):
    trip: str


@messages.message("payments.charge")
class Charge(BaseModel):
    trip: str


@messages.message("payments.charged")
class Charged(BaseModel):
    trip: str


class TripData(BaseModel):
    trip: str


class ReserveFlightStep(RemoteStep[TripData]):
    name = "reserve_flight"
    participant = "flights"
    compensation_reply = FlightCancelled

    def command(self, data: TripData) -> ReserveFlight:
        return ReserveFlight(trip=data.trip)

    def on_reply(self, data: TripData, reply: FlightReserved) -> TripData:
        return data

    def compensation(self, data: TripData) -> CancelFlight:
        return CancelFlight(trip=data.trip)


class ReserveHotelStep(RemoteStep[TripData]):
    name = "reserve_hotel"
    participant = "hotels"
    compensation_reply = HotelCancelled

    def command(self, data: TripData) -> ReserveHotel:
        return ReserveHotel(trip=data.trip)

    def on_reply(self, data: TripData, reply: HotelReserved) -> TripData:
        return data

    def compensation(self, data: TripData) -> CancelHotel | None:
        return CancelHotel(trip=data.trip)


class ChargeStep(RemoteStep[TripData]):
    name = "charge"
    participant = "payments"
    kind = StepKind.PIVOT

    def command(self, data: TripData) -> Charge:
        return Charge(trip=data.trip)

    def on_reply(self, data: TripData, reply: Charged) -> TripData:
        return data


class TravelSaga(Saga[TripData]):
    steps = (ReserveFlightStep, ReserveHotelStep, ChargeStep)


async def answer(conn: Any, command: Any, envelope: Envelope) -> BaseModel:
    raise NotImplementedError  # the wiring tests never run a handler


HANDLERS: dict[str, dict[type[BaseModel], Any]] = {
    "flights": {ReserveFlight: answer, CancelFlight: answer},
    "hotels": {ReserveHotel: answer, CancelHotel: answer},
    "payments": {Charge: answer},
}

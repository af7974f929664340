"""A small travel saga for the decision tests (saga.testing.scenario), none of the order example:

    book_flight -> book_hotel -> wait_for_traveller_confirmed -> charge_card (the pivot)
        -> cool_off (an hour) -> issue_tickets (local)

`QuickTripSaga` books the flight and the hotel side by side, then charges the card.
`InsuredTripSaga` books the flight, then insures the trip through a child saga
(`InsuranceSaga`).

The hotel may take an hour to answer; after that the trip is undone (the flight cancelled).
The card is charged up to three times when the payment service does not answer. Tickets are
issued in the orchestrator's own transaction, retried when that fails.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from saga import ChildSaga, Delay, LocalStep, Parallel, RemoteStep, RetryPolicy, Saga, StepKind, WaitStep


class TripData(BaseModel):
    trip_id: str
    traveller: str
    nights: int = 1
    flight_ref: str | None = None
    hotel_ref: str | None = None
    payment_id: str | None = None
    confirmed_by: str | None = None
    policy: str | None = None
    tickets: list[str] = []


class BookFlight(BaseModel):
    trip_id: str


class FlightBooked(BaseModel):
    ref: str


class CancelFlight(BaseModel):
    ref: str | None


class FlightCancelled(BaseModel):
    ref: str | None


class BookHotel(BaseModel):
    trip_id: str
    nights: int


class HotelBooked(BaseModel):
    ref: str


class CancelHotel(BaseModel):
    ref: str | None


class HotelCancelled(BaseModel):
    ref: str | None


class ChargeCard(BaseModel):
    trip_id: str
    traveller: str


class CardCharged(BaseModel):
    payment_id: str


class TravellerConfirmed(BaseModel):
    """The traveller confirms the trip: a signal from outside the saga."""

    by: str


class Unrelated(BaseModel):
    """A message no step of the trip takes."""

    note: str = ""


HOTEL_TIMEOUT_S = 3600.0
CONFIRM_TIMEOUT_S = 86400.0


class BookFlightStep(RemoteStep[TripData]):
    name = "book_flight"
    participant = "flights"
    timeout_s = 60.0
    compensation_reply = FlightCancelled

    def command(self, data: TripData) -> BookFlight:
        return BookFlight(trip_id=data.trip_id)

    def on_reply(self, data: TripData, reply: FlightBooked) -> TripData:
        return data.model_copy(update={"flight_ref": reply.ref})

    def compensation(self, data: TripData) -> CancelFlight:
        return CancelFlight(ref=data.flight_ref)


class BookHotelStep(RemoteStep[TripData]):
    name = "book_hotel"
    participant = "hotels"
    timeout_s = HOTEL_TIMEOUT_S
    compensation_reply = HotelCancelled

    def command(self, data: TripData) -> BookHotel:
        return BookHotel(trip_id=data.trip_id, nights=data.nights)

    def on_reply(self, data: TripData, reply: HotelBooked) -> TripData:
        return data.model_copy(update={"hotel_ref": reply.ref})

    def compensation(self, data: TripData) -> CancelHotel:
        return CancelHotel(ref=data.hotel_ref)


class ConfirmStep(WaitStep[TripData]):
    name = "wait_for_traveller_confirmed"
    signals = (TravellerConfirmed,)
    timeout_s = CONFIRM_TIMEOUT_S

    def on_signal(self, data: TripData, signal: TravellerConfirmed) -> TripData:
        return data.model_copy(update={"confirmed_by": signal.by})


class ChargeCardStep(RemoteStep[TripData]):
    name = "charge_card"
    participant = "payments"
    kind = StepKind.PIVOT
    timeout_s = 30.0
    retry = RetryPolicy(attempts=3)  # the payment service is idempotent per trip

    def command(self, data: TripData) -> ChargeCard:
        return ChargeCard(trip_id=data.trip_id, traveller=data.traveller)

    def on_reply(self, data: TripData, reply: CardCharged) -> TripData:
        return data.model_copy(update={"payment_id": reply.payment_id})


CoolOff = Delay(3600, name="cool_off")


class IssueTicketsStep(LocalStep[TripData]):
    name = "issue_tickets"
    kind = StepKind.RETRIABLE
    retry = RetryPolicy(attempts=3, backoff_s=5.0, jitter=0.0)

    async def action(self, conn: AsyncConnection, data: TripData) -> TripData:
        return data.model_copy(update={"tickets": [f"{data.trip_id}-ticket"]})


class TripSaga(Saga[TripData]):
    steps = (BookFlightStep, BookHotelStep, ConfirmStep, ChargeCardStep, CoolOff, IssueTicketsStep)


class InsuranceData(BaseModel):
    trip_id: str
    policy: str | None = None


class BuyPolicy(BaseModel):
    trip_id: str


class PolicyBought(BaseModel):
    policy: str


class CancelPolicy(BaseModel):
    policy: str | None


class PolicyCancelled(BaseModel):
    policy: str | None


class BuyPolicyStep(RemoteStep[InsuranceData]):
    name = "buy_policy"
    participant = "insurer"
    compensation_reply = PolicyCancelled

    def command(self, data: InsuranceData) -> BuyPolicy:
        return BuyPolicy(trip_id=data.trip_id)

    def on_reply(self, data: InsuranceData, reply: PolicyBought) -> InsuranceData:
        return data.model_copy(update={"policy": reply.policy})

    def compensation(self, data: InsuranceData) -> CancelPolicy:
        return CancelPolicy(policy=data.policy)


class InsuranceSaga(Saga[InsuranceData]):
    steps = (BuyPolicyStep,)


class InsureStep(ChildSaga[TripData]):
    name = "insure"
    saga = InsuranceSaga

    def start(self, data: TripData) -> InsuranceData:
        return InsuranceData(trip_id=data.trip_id)

    def on_child_completed(self, data: TripData, child: InsuranceData) -> TripData:
        return data.model_copy(update={"policy": child.policy})


class InsuredTripSaga(Saga[TripData]):
    steps = (BookFlightStep, InsureStep)


class QuickTripSaga(Saga[TripData]):
    steps = (Parallel(BookFlightStep, BookHotelStep), ChargeCardStep)

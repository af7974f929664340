"""Trips driven part of the way, for the decision tests."""

from __future__ import annotations

from saga.testing import Scenario, scenario
from tests.testing.trip import CardCharged, FlightBooked, HotelBooked, TravellerConfirmed, TripData, TripSaga

TRIP = TripData(trip_id="t1", traveller="ann", nights=2)


def at_charge() -> Scenario[TripData]:
    """A trip booked and confirmed: the card is being charged (attempt 1)."""
    s = scenario(TripSaga)
    s.started(TRIP)
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    s.when_reply("book_hotel", HotelBooked(ref="H1"))
    s.when_signal(TravellerConfirmed(by="ann"))
    return s


def completed() -> Scenario[TripData]:
    """A trip that ran to its end."""
    s = at_charge()
    s.when_reply("charge_card", CardCharged(payment_id="P1"))
    s.when_timeout("cool_off")
    s.when_local_done("issue_tickets")
    return s

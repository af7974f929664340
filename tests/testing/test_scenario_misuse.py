"""Decision tests (saga.testing.scenario): what a test gets wrong, and how a failed expectation reads."""

from __future__ import annotations

import pytest

from saga.testing import ExpectationFailed, ScenarioError, scenario
from tests.testing.trip import (
    BookFlight,
    BookHotel,
    CardCharged,
    FlightBooked,
    HotelBooked,
    InsuranceData,
    TravellerConfirmed,
    TripSaga,
    Unrelated,
)
from tests.testing.trip_scenarios import TRIP, at_charge

pytestmark = pytest.mark.pure


def test_expect_fails_with_a_diff_of_what_was_expected_and_what_the_decider_did() -> None:
    s = scenario(TripSaga)
    s.started(TRIP)
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    refused = s.when_refused("book_hotel", "no rooms")
    with pytest.raises(ExpectationFailed) as failed:
        refused.expect(
            events=["StepFailed", "StepRequested"], commands=["book_hotel/compensation"], status="compensated"
        )
    message = str(failed.value)
    assert message.startswith("refusal 'no rooms' to book_hotel/action #1: not the decision expected\n")
    assert (
        "  events (- expected, + got):\n      StepFailed\n    + CompensationStarted\n      StepRequested\n"
        in message
    )
    assert (
        "  commands (- expected, + got):\n    - book_hotel/compensation\n    + book_flight/compensation #1\n"
        in message
    )
    assert "  status: expected 'compensated', got 'compensating'\n" in message
    # Then everything the decision did, and what the saga awaits now.
    assert "    book_flight/compensation #1 -> flights: CancelFlight(ref='F1')\n" in message
    assert message.endswith(
        "now it is compensating, awaiting book_flight/compensation #1: a reply "
        "(when_reply / when_refused), due in 60s (when_timeout)"
    )


def test_expect_passes_on_event_and_command_values_and_classes() -> None:
    s = scenario(TripSaga)
    started = s.started(TRIP)
    first = started.events[1]
    started.expect(events=[started.events[0], first], commands=[BookFlight], status="running")
    started.expect(commands=["book_flight #1"]).expect(commands=["book_flight/action"])
    started.expect(events=["saga.started", "saga.step_requested"])  # the stored type names too
    with pytest.raises(ExpectationFailed, match=r"\+ BookFlight\(trip_id='t1'\)"):
        started.expect(commands=[BookHotel(trip_id="t1", nights=2)])
    with pytest.raises(ExpectationFailed, match=r"- StepSucceeded\n    \+ SagaStarted"):
        started.expect(events=["StepSucceeded", "StepRequested"])
    with pytest.raises(ExpectationFailed, match=r"\+ book_flight #1"):
        started.expect(commands=[])


def test_a_typo_in_expect_is_the_tests_mistake_not_a_failure() -> None:
    started = scenario(TripSaga).started(TRIP)
    with pytest.raises(
        ScenarioError, match=r"no saga event is named 'StepSucceded'; they are: .*StepSucceeded"
    ):
        started.expect(events=["StepSucceded"])
    with pytest.raises(ScenarioError, match="'book flight' is no command"):
        started.expect(commands=["book flight"])
    with pytest.raises(ScenarioError, match=r"TripSaga has no step 'book_flite' \(its steps: book_flight, "):
        started.expect(commands=["book_flite #1"])
    with pytest.raises(ScenarioError, match="FlightBooked is not a saga event"):
        started.expect(events=[FlightBooked])
    with pytest.raises(
        ScenarioError, match="no status 'complete'; they are: running, compensating, completed"
    ):
        started.expect(status="complete")


def test_inputs_nothing_real_could_send_are_refused_naming_what_the_saga_awaits() -> None:
    s = scenario(TripSaga)
    with pytest.raises(ScenarioError, match="TripSaga has not started"):
        s.when_reply("book_flight", FlightBooked(ref="F1"))
    s.started(TRIP)
    awaits = "awaiting book_flight/action #1: a reply"
    with pytest.raises(
        ScenarioError,
        match=f"book_hotel/action was never sent, so nothing can answer it; it is running, {awaits}",
    ):
        s.when_reply("book_hotel", HotelBooked(ref="H1"))
    with pytest.raises(ScenarioError, match=f"attempt 2 of book_flight/action was never sent.*{awaits}"):
        s.when_reply("book_flight", FlightBooked(ref="F1"), attempt=2)
    with pytest.raises(ScenarioError, match=f"book_hotel has no deadline now; it is running, {awaits}"):
        s.when_timeout("book_hotel")
    with pytest.raises(
        ScenarioError,
        match=r"book_flight takes FlightBooked \(action\) or FlightCancelled \(compensation\), got HotelBooked",
    ):
        s.when_reply("book_flight", HotelBooked(ref="H1"))
    with pytest.raises(
        ScenarioError,
        match=r"no step of TripSaga waits for Unrelated\(note=''\) \(it waits for: TravellerConfirmed\)",
    ):
        s.when_signal(Unrelated())
    with pytest.raises(
        ScenarioError, match=r"TripSaga has no step 'book_car' \(its steps: book_flight, book_hotel, "
    ):
        s.when_refused("book_car", "no cars")
    with pytest.raises(ScenarioError, match="cool_off is a timer: fire it with when_timeout"):
        s.when_reply("cool_off", FlightBooked(ref="F1"))
    with pytest.raises(
        ScenarioError, match="wait_for_traveller_confirmed is a wait: send its signal with when_signal"
    ):
        s.when_refused("wait_for_traveller_confirmed", "no")
    with pytest.raises(
        ScenarioError, match=f"the saga does not run issue_tickets now; it is running, {awaits}"
    ):
        s.when_local_done("issue_tickets")
    with pytest.raises(ScenarioError, match="the saga has started already"):
        s.started(TRIP)
    with pytest.raises(ScenarioError, match=r"started\(data\): an instance of TripData, got InsuranceData"):
        scenario(TripSaga).started(InsuranceData(trip_id="t1"))  # type: ignore[arg-type]
    assert [type(e).__name__ for e in s.history] == ["SagaStarted", "StepRequested"]  # none moved it


def test_nothing_comes_between_a_local_step_and_its_outcome() -> None:
    s = at_charge()
    s.when_reply("charge_card", CardCharged(payment_id="P1"))
    s.when_timeout("cool_off")
    with pytest.raises(
        ScenarioError, match=r"runs local step issue_tickets now.*when_local_done\('issue_tickets'\)"
    ):
        s.when_signal(TravellerConfirmed(by="ann"))
    with pytest.raises(
        ScenarioError, match=r"when_local_done\('issue_tickets', data\): an instance of TripData"
    ):
        s.when_local_done("issue_tickets", InsuranceData(trip_id="t1"))  # type: ignore[arg-type]

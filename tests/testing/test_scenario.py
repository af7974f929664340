"""Decision tests (saga.testing.scenario) on the trip saga: no Postgres, no Kafka, no waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga import ChildEnded, CompensateRequest, DeadlineDue, ParentRef, SagaError, Start
from saga.testing import EPOCH, ScenarioError, scenario
from tests.testing.trip import (
    CONFIRM_TIMEOUT_S,
    HOTEL_TIMEOUT_S,
    BookFlight,
    CancelFlight,
    CancelHotel,
    CardCharged,
    ChargeCard,
    FlightBooked,
    FlightCancelled,
    HotelBooked,
    HotelCancelled,
    InsuranceData,
    InsuranceSaga,
    InsuredTripSaga,
    PolicyBought,
    QuickTripSaga,
    TravellerConfirmed,
    TripSaga,
)
from tests.testing.trip_scenarios import TRIP, at_charge, completed

pytestmark = pytest.mark.pure


def test_a_trip_runs_to_its_end_one_input_at_a_time() -> None:
    s = scenario(TripSaga)
    s.started(TRIP).expect(events=["SagaStarted", "StepRequested"], commands=[BookFlight(trip_id="t1")])
    assert s.deadlines["book_flight"].due_at == EPOCH + timedelta(seconds=60)

    s.when_reply("book_flight", FlightBooked(ref="F1")).expect(
        events=["StepSucceeded", "StepRequested"], commands=["book_hotel"], status="running"
    )
    s.when_reply("book_hotel", HotelBooked(ref="H1")).expect(
        events=["StepSucceeded", "StepRequested"], commands=[]
    )
    s.when_signal(TravellerConfirmed(by="ann")).expect(
        events=["SignalReceived", "SignalConsumed", "StepSucceeded", "StepRequested"],
        commands=[ChargeCard(trip_id="t1", traveller="ann")],
    )
    s.when_reply("charge_card", CardCharged(payment_id="P1")).expect(
        events=["StepSucceeded", "TimerSet"], commands=[]
    )

    tickets = s.when_timeout("cool_off")  # the hour passes at once
    tickets.expect(events=["StepSucceeded", "StepRequested"], commands=[])
    assert tickets.local == "issue_tickets"
    assert s.now == EPOCH + timedelta(seconds=3600)

    done = s.when_local_done("issue_tickets", s.state.data.model_copy(update={"tickets": ["t1-ticket"]}))
    done.expect(events=["StepSucceeded", "SagaCompleted"], commands=[], status="completed")
    data = s.state.data
    assert (data.flight_ref, data.hotel_ref, data.confirmed_by, data.payment_id) == ("F1", "H1", "ann", "P1")
    assert data.tickets == ["t1-ticket"]
    assert [c.step for c in s.commands] == ["book_flight", "book_hotel", "charge_card"]


def test_a_refusal_compensates_the_done_steps_in_reverse() -> None:
    s = at_charge()
    refused = s.when_refused("charge_card", "card declined")
    refused.expect(
        events=["StepFailed", "CompensationStarted", "StepRequested"],
        commands=["book_hotel/compensation"],
        status="compensating",
    )
    assert refused.events[1].model_dump()["steps"] == ["book_hotel", "book_flight"]  # the wait undoes nothing
    assert refused.commands[0].message == CancelHotel(ref="H1")
    s.when_reply("book_hotel", HotelCancelled(ref="H1")).expect(
        events=["StepCompensated", "StepRequested"], commands=[CancelFlight(ref="F1")]
    )
    s.when_reply("book_flight", FlightCancelled(ref="F1")).expect(
        events=["StepCompensated", "SagaCompensated"], commands=[], status="compensated"
    )
    assert s.state.compensation_reason == "charge_card failed: card declined"


def test_a_timeout_with_a_retry_policy_sends_attempt_2_then_3_then_stops() -> None:
    s = at_charge()
    second = s.when_timeout("charge_card")
    second.expect(events=["StepTimedOut", "StepRequested"], commands=["charge_card #2"], status="running")
    assert second.commands[0].attempt == 2
    assert second.commands[0].message == ChargeCard(trip_id="t1", traveller="ann")  # the same charge again
    assert s.now == EPOCH + timedelta(seconds=30)
    s.when_timeout("charge_card").expect(commands=["charge_card #3"])
    # The pivot may have charged the card: the saga stops for an operator, nothing is undone.
    s.when_timeout("charge_card").expect(events=["StepTimedOut", "SagaFailed"], commands=[], status="failed")
    resumed = s.when_resumed("payments checked")
    resumed.expect(events=["OperatorResumed", "StepRequested"], commands=["charge_card #4"], status="running")


def test_a_late_reply_after_a_timeout_is_ignored() -> None:
    s = at_charge()
    s.when_timeout("charge_card")
    late = s.when_reply("charge_card", CardCharged(payment_id="P-late"), attempt=1)
    late.expect(events=["ReplyIgnored"], commands=[], status="running")
    assert "awaiting charge_card/action attempt 2" in late.events[0].model_dump()["reason"]
    assert s.state.data.payment_id is None
    s.when_reply("charge_card", CardCharged(payment_id="P2")).expect(events=["StepSucceeded", "TimerSet"])
    assert s.state.data.payment_id == "P2"


def test_a_hotel_that_never_answers_is_undone_and_its_late_booking_ignored() -> None:
    s = scenario(TripSaga)
    s.started(TRIP)
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    timed_out = s.when_timeout("book_hotel")
    # It may have booked: its compensation runs first, then the flight's.
    timed_out.expect(
        events=["StepTimedOut", "CompensationStarted", "StepRequested"],
        commands=["book_hotel/compensation"],
        status="compensating",
    )
    assert s.now == EPOCH + timedelta(seconds=HOTEL_TIMEOUT_S)
    s.when_reply("book_hotel", HotelBooked(ref="H-late")).expect(events=["ReplyIgnored"], commands=[])
    s.when_reply("book_hotel", HotelCancelled(ref=None)).expect(commands=["book_flight/compensation"])


def test_a_signal_completes_the_wait_and_one_sent_early_is_kept_for_it() -> None:
    s = scenario(TripSaga)
    s.started(TRIP)
    kept = s.when_signal(TravellerConfirmed(by="bob"))  # before the saga reaches the wait
    kept.expect(events=["SignalReceived"], commands=[], status="running")
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    reached = s.when_reply("book_hotel", HotelBooked(ref="H1"))
    reached.expect(
        events=["StepSucceeded", "StepRequested", "SignalConsumed", "StepSucceeded", "StepRequested"],
        commands=["charge_card"],
    )
    assert s.state.data.confirmed_by == "bob"
    again = s.when_signal(TravellerConfirmed(by="eve"))  # the wait is passed: recorded, not raised
    again.expect(events=["SignalReceived", "SignalIgnored"], commands=[], status="running")
    assert s.state.data.confirmed_by == "bob"


def test_a_wait_that_sees_no_signal_in_time_fails_like_a_refusal() -> None:
    s = scenario(TripSaga)
    s.started(TRIP)
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    s.advance(60)
    s.when_reply("book_hotel", HotelBooked(ref="H1"))  # the wait begins now
    timed_out = s.when_timeout("wait_for_traveller_confirmed")
    timed_out.expect(
        events=["StepFailed", "CompensationStarted", "StepRequested"], commands=["book_hotel/compensation"]
    )
    assert s.now == EPOCH + timedelta(seconds=60 + CONFIRM_TIMEOUT_S)  # counted from when it began waiting


def test_a_local_step_that_fails_is_retried_at_its_scheduled_time() -> None:
    s = at_charge()
    s.when_reply("charge_card", CardCharged(payment_id="P1"))
    s.when_timeout("cool_off")
    failed = s.when_local_failed("issue_tickets", "printer jammed")
    failed.expect(events=["StepFailed", "RetryScheduled"], commands=[], status="running")
    assert failed.deadlines[0].kind == "retry"
    assert failed.deadlines[0].due_at == s.now + timedelta(seconds=5)
    again = s.when_timeout("issue_tickets")
    again.expect(events=["StepRequested"])
    assert again.local == "issue_tickets"
    s.when_local_done("issue_tickets").expect(events=["StepSucceeded", "SagaCompleted"], status="completed")


def test_a_child_saga_step_completes_with_the_childs_data() -> None:
    s = scenario(InsuredTripSaga)
    s.started(TRIP)
    started = s.when_reply("book_flight", FlightBooked(ref="F1"))
    started.expect(events=["StepSucceeded", "StepRequested"], commands=[])
    assert [(c.step, c.saga_type, c.data["trip_id"]) for c in started.children] == [
        ("insure", "InsuranceSaga", "t1")
    ]
    s.when_child_completed("insure", InsuranceData(trip_id="t1", policy="I1")).expect(
        events=["StepSucceeded", "SagaCompleted"], status="completed"
    )
    assert s.state.data.policy == "I1"


def test_a_compensated_child_saga_fails_its_step() -> None:
    s = scenario(InsuredTripSaga)
    s.started(TRIP)
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    s.when_child_compensated("insure", "no insurer").expect(
        events=["StepFailed", "CompensationStarted", "StepRequested"], commands=["book_flight/compensation"]
    )


def test_a_group_member_that_answers_after_its_sibling_failed_is_undone() -> None:
    s = scenario(QuickTripSaga)
    s.started(TRIP).expect(commands=["book_flight", "book_hotel"])
    refused = s.when_refused("book_hotel", "no rooms")
    # The flight is still in flight: nothing to undo yet, the saga waits for its answer.
    refused.expect(events=["StepFailed", "CompensationStarted"], commands=[], status="compensating")
    late = s.when_reply("book_flight", FlightBooked(ref="F1"))
    late.expect(
        events=["StepSucceeded", "CompensationAdded", "StepRequested"], commands=[CancelFlight(ref="F1")]
    )
    s.when_reply("book_flight", FlightCancelled(ref="F1")).expect(status="compensated")


def test_a_history_given_goes_on_like_the_saga_that_made_it() -> None:
    lived = at_charge()
    replayed = scenario(TripSaga).given(*lived.history)
    assert replayed.raw_state == lived.raw_state
    assert replayed.deadlines["charge_card"].due_at == EPOCH + timedelta(seconds=30)
    one = lived.when_refused("charge_card", "declined")
    other = replayed.when_refused("charge_card", "declined")
    assert (one.events, one.commands) == (other.events, other.commands)
    with pytest.raises(ScenarioError, match="a saga's history starts with SagaStarted"):
        scenario(TripSaga).given(*lived.history[1:])
    with pytest.raises(ScenarioError, match="is not a saga event"):
        scenario(TripSaga).given(FlightBooked(ref="F1"))
    with pytest.raises(ScenarioError, match="SagaStarted of a 'TripSaga', this is 'InsuredTripSaga'"):
        scenario(InsuredTripSaga).given(*lived.history)


def test_the_clock_moves_only_when_told_and_deadlines_count_from_it() -> None:
    s = scenario(TripSaga)
    s.advance(100)
    s.started(TRIP)
    assert s.deadlines["book_flight"].due_at == EPOCH + timedelta(seconds=160)
    s.advance(1000)  # well past the deadline: nothing fires by itself
    s.when_reply("book_flight", FlightBooked(ref="F1")).expect(events=["StepSucceeded", "StepRequested"])
    with pytest.raises(ScenarioError, match="a number >= 0"):
        s.advance(-1)


def test_any_input_as_it_is_for_what_the_helpers_refuse() -> None:
    s = scenario(TripSaga)
    s.started(TRIP)
    s.when_reply("book_flight", FlightBooked(ref="F1"))
    stale = s.when(DeadlineDue("book_flight", "action", 1, "reply"), "stale deadline")
    stale.expect(events=[], commands=[], status="running")  # the saga moved on: nothing changes
    with pytest.raises(SagaError, match="there is nothing to resume"):
        completed().when_resumed()


def test_a_child_saga_asked_by_its_parent_undoes_itself() -> None:
    parent = ParentRef(
        saga_id="trip-1", saga_type="InsuredTripSaga", step="insure", phase="action", attempt=1
    )
    child = scenario(InsuranceSaga, saga_id="child-1")
    child.when(Start("InsuranceSaga", {"trip_id": "t1"}, parent=parent), "start as a child")
    ended = child.when_reply("buy_policy", PolicyBought(policy="I1"))
    ended.expect(events=["StepSucceeded", "SagaCompleted"], commands=[ChildEnded], status="completed")
    assert (ended.commands[0].to_saga, ended.commands[0].saga_id) == ("InsuredTripSaga", "trip-1")
    asked = child.when(CompensateRequest("the trip is off", "insure", "compensation", 1))
    asked.expect(
        events=["CompensationRequested", "CompensationStarted", "StepRequested"],
        commands=["buy_policy/compensation"],
        status="compensating",
    )

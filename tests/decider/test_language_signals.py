"""The decider on the saga language, one behaviour a test: waits for signals and timers
(parallel groups and child sagas: test_language.py), with neither Postgres nor Kafka.

Each test drives a small saga through `Run`, which checks every invariant of the property
tests after each input.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga import (
    Deadline,
    Reply,
    Resume,
    StepKind,
    decide,
)
from tests.decider.definitions import (
    SagaSpec,
    Sig1,
    Sig2,
    Sig3,
    Stray,
    build,
)
from tests.decider.driver import EPOCH, Run, refusal, success
from tests.decider.invariants import names
from tests.decider.language import group, remote, saga_of, sent, status, timer, wait

pytestmark = pytest.mark.pure
PIVOT, RETRIABLE = StepKind.PIVOT, StepKind.RETRIABLE


# --- waits for signals -------------------------------------------------------------------


def test_a_signal_that_comes_before_the_wait_is_kept_and_taken_when_the_saga_gets_there() -> None:
    run = Run(saga_of(remote("reserve"), wait("picked", 1), remote("pay", kind=PIVOT)))
    run.start()
    decision = run.feed(run.signal(Sig1))
    assert decision is not None
    assert names(decision.events) == ["saga.signal_received"]
    assert [k.message_id for k in run.state.signals] == ["signal-1"]
    decision = run.feed(success(run.commands[-1]))
    assert decision is not None
    assert names(decision.events) == [
        "saga.step_succeeded",
        "saga.step_requested",
        "saga.signal_consumed",
        "saga.step_succeeded",
        "saga.step_requested",
    ]
    assert run.state.signals == []
    assert run.state.data == {"trail": ["reserve", "picked"]}
    assert run.commands[-1].step == "pay"


def test_a_signal_is_taken_at_once_by_the_wait_the_saga_is_at() -> None:
    run = Run(saga_of(wait("picked", 1, timeout_s=60.0), remote("pay", kind=PIVOT)))
    started = run.start()
    assert started.deadlines == (Deadline("picked", "action", 1, "reply", EPOCH + timedelta(seconds=60)),)
    decision = run.feed(run.signal(Sig1))
    assert decision is not None
    assert names(decision.events)[:3] == [
        "saga.signal_received",
        "saga.signal_consumed",
        "saga.step_succeeded",
    ]
    assert decision.cleared == ("picked",)


def test_a_wait_that_times_out_fails_like_a_step_and_compensates() -> None:
    run = Run(saga_of(remote("reserve"), wait("picked", 1, timeout_s=60.0), remote("pay", kind=PIVOT)))
    run.start()
    run.feed(success(run.commands[-1]))
    assert run.row is not None
    decision = run.feed(run.fire(run.row))
    assert decision is not None
    assert names(decision.events)[:2] == ["saga.step_failed", "saga.compensation_started"]
    assert [(c.step, c.phase) for c in decision.commands] == [("reserve", "compensation")]
    decision = run.feed(run.signal(Sig1))  # too late: nothing waits for it any more
    assert decision is not None
    assert names(decision.events) == ["saga.signal_received", "saga.signal_ignored"]


def test_two_signals_racing_into_wait_for_any_the_first_is_taken_the_second_ignored() -> None:
    run = Run(saga_of(wait("either", 1, 2), remote("pay", kind=PIVOT)))
    run.start()
    run.feed(run.signal(Sig2))
    decision = run.feed(run.signal(Sig1))
    assert decision is not None
    assert names(decision.events) == ["saga.signal_received", "saga.signal_ignored"]
    consumed = [e for e in run.events if names([e]) == ["saga.signal_consumed"]]
    assert [e.model_dump()["message_id"] for e in consumed] == ["signal-1"]


def test_two_signals_kept_before_wait_for_any_the_older_is_taken_the_other_ignored() -> None:
    run = Run(saga_of(remote("reserve"), wait("either", 1, 2), remote("pay", kind=PIVOT)))
    run.start()
    run.feed(run.signal(Sig2))
    run.feed(run.signal(Sig1))
    decision = run.feed(success(run.commands[-1]))
    assert decision is not None
    assert "saga.signal_ignored" in names(decision.events)
    consumed = next(e for e in decision.events if names([e]) == ["saga.signal_consumed"])
    assert consumed.model_dump()["message_id"] == "signal-1"
    assert run.state.signals == []


def test_a_signal_a_later_wait_also_takes_stays_kept_for_it() -> None:
    run = Run(saga_of(wait("first", 1, 2), wait("second", 2), remote("pay", kind=PIVOT)))
    run.start()
    run.feed(run.signal(Sig1))  # taken by first
    assert run.state.done == ["first"]
    run.feed(run.signal(Sig2))  # first is passed: second takes it
    assert run.state.done == ["first", "second"]


def test_a_signal_no_wait_takes_is_ignored() -> None:
    run = Run(saga_of(wait("picked", 1), remote("pay", kind=PIVOT)))
    run.start()
    for model in (Stray, Sig3):
        decision = run.feed(run.signal(model))
        assert decision is not None
        assert names(decision.events) == ["saga.signal_received", "saga.signal_ignored"]
    assert run.state.signals == []


def test_a_signal_under_a_definition_that_lacks_a_done_step_parks_the_saga() -> None:
    """Found by the parking property: a signal moved a saga whose definition lacks a step it
    has done, which then ran that step again under its new name."""
    spec = SagaSpec(steps=[remote("reserve"), wait("picked", 1), remote("pay", kind=PIVOT)])
    run = Run(build(spec))
    run.start()
    run.feed(success(run.commands[-1]))
    renamed = build(spec.renamed("reserve", "book"))
    decision = decide(renamed, run.state, run.signal(Sig1), run.now)
    assert names(decision.events)[0] == "saga.parked"
    assert not decision.commands


# --- timers ------------------------------------------------------------------------------


def test_a_delay_sets_a_timer_row_and_succeeds_when_it_fires() -> None:
    run = Run(saga_of(remote("reserve"), timer("cool_off", 30.0), remote("pay", kind=PIVOT)))
    run.start()
    decision = run.feed(success(run.commands[-1]))
    assert decision is not None
    assert names(decision.events)[-1] == "saga.timer_set"
    assert decision.deadlines == (Deadline("cool_off", "action", 1, "timer", EPOCH + timedelta(seconds=30)),)
    assert run.row is not None
    decision = run.feed(run.fire(run.row))
    assert decision is not None
    assert names(decision.events) == ["saga.step_succeeded", "saga.step_requested"]
    assert decision.cleared == ("cool_off",)


def test_a_timer_in_a_group_being_compensated_stops_waiting() -> None:
    run = Run(saga_of(remote("reserve"), group(remote("ship"), timer("cool_off", 30.0))))
    run.start()
    run.feed(success(run.commands[-1]))
    decision = run.feed(refusal(sent(run, "ship")))
    assert decision is not None
    assert "saga.wait_cancelled" in names(decision.events)
    assert "cool_off" in decision.cleared
    assert [(c.step, c.phase) for c in decision.commands] == [("reserve", "compensation")]


def test_signals_of_types_no_saga_registers_are_kept_apart_from_replies() -> None:
    run = Run(saga_of(wait("picked", 1), remote("pay", kind=PIVOT)))
    run.start()
    decision = run.feed(Reply("test.Sig1", Sig1(), "picked", "action", 1))  # a reply is no signal
    assert decision is not None
    assert names(decision.events) == ["saga.reply_ignored"]
    assert run.state.waiting_on("picked") is not None
    _ = Sig2


def test_a_signal_to_a_failed_saga_is_kept_for_the_wait_ahead() -> None:
    """Found by the properties: a failed saga ignored a signal that a wait ahead takes; once
    resumed, that wait never saw it."""
    run = Run(saga_of(remote("pay", kind=PIVOT), remote("ship", kind=RETRIABLE), wait("delivered", 1)))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(run.commands[-1]))
    assert status(run) == "failed"
    decision = run.feed(run.signal(Sig1))
    assert decision is not None
    assert names(decision.events) == ["saga.signal_received"]
    run.feed(Resume("ship again"))
    run.feed(success(sent(run, "ship")))
    assert status(run) == "completed"


def test_a_wait_in_a_failed_group_takes_its_signal() -> None:
    """Found by the properties (deep profile): a sibling failed the saga while a wait of its
    group waited; the wait's signal was kept but not taken, and after the resume the wait
    still waited with its signal kept."""
    run = Run(
        saga_of(
            remote("pay", kind=PIVOT),
            group(wait("delivered", 1, kind=RETRIABLE), remote("ship", kind=RETRIABLE)),
        )
    )
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(sent(run, "ship")))
    assert status(run) == "failed"
    decision = run.feed(run.signal(Sig1))
    assert decision is not None
    assert names(decision.events) == ["saga.signal_received", "saga.signal_consumed", "saga.step_succeeded"]
    run.feed(Resume("ship again"))
    run.feed(success(sent(run, "ship")))
    assert status(run) == "completed"

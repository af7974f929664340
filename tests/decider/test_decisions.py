"""The decider, one behaviour a test, with neither Postgres nor Kafka.

Each test drives a small saga through `Run`, which also checks every invariant of the
property tests after each input.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from saga import (
    Deadline,
    Decision,
    LocalDone,
    LocalFailed,
    RemoteStep,
    Resume,
    RunLocal,
    Saga,
    SagaError,
    SagaState,
    Start,
    StepKind,
    command_id,
    decide,
)
from tests.decider.definitions import PARTICIPANT, Data, Do, Done, SagaSpec, StepSpec, Undone, build
from tests.decider.driver import EPOCH, SAGA_ID, Run, refusal, success, wrong_type
from tests.decider.invariants import names

pytestmark = pytest.mark.pure


def saga_of(*steps: StepSpec) -> type[Saga[Any]]:
    return build(SagaSpec(steps=list(steps)))


def remote(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, remote=True, **fields)


def local(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, remote=False, **fields)


PIVOT, RETRIABLE = StepKind.PIVOT, StepKind.RETRIABLE


def test_start_sends_the_first_command() -> None:
    run = Run(saga_of(remote("reserve", timeout_s=30.0), remote("charge", kind=PIVOT)))
    decision = run.start()
    assert names(decision.events) == ["saga.started", "saga.step_requested"]
    [command] = decision.commands
    assert (command.step, command.phase, command.attempt) == ("reserve", "action", 1)
    assert command.participant == PARTICIPANT
    assert command.message == Do(step="reserve", phase="action")
    assert command.message_id == command_id(SAGA_ID, "reserve", "action", 1)
    assert decision.deadlines == (Deadline("reserve", "action", 1, "reply", EPOCH + timedelta(seconds=30)),)


def test_a_success_reply_moves_to_the_next_step() -> None:
    run = Run(saga_of(remote("reserve"), remote("charge", kind=PIVOT)))
    run.start()
    decision = run.feed(success(run.commands[-1]))
    assert decision is not None
    assert names(decision.events) == ["saga.step_succeeded", "saga.step_requested"]
    assert [(c.step, c.attempt) for c in decision.commands] == [("charge", 1)]
    assert decision.state.done == ["reserve"]
    assert decision.state.data == {"trail": ["reserve"]}  # from the step's on_reply


def test_a_refusal_compensates_the_completed_steps_in_reverse() -> None:
    run = Run(saga_of(remote("a"), remote("b"), remote("c")))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(success(run.commands[-1]))
    refused = run.feed(refusal(run.commands[-1]))
    assert refused is not None
    assert names(refused.events) == ["saga.step_failed", "saga.compensation_started", "saga.step_requested"]
    assert refused.state.to_compensate == ["b", "a"]
    while run.state.status == "compensating":
        run.feed(success(run.commands[-1]))
    undo = [(c.step, c.message) for c in run.commands if c.phase == "compensation"]
    assert undo == [("b", Do(step="b", phase="compensation")), ("a", Do(step="a", phase="compensation"))]
    assert run.state.status == "compensated"


def test_a_duplicate_or_stale_reply_is_ignored_and_sends_nothing() -> None:
    run = Run(saga_of(remote("reserve", timeout_s=5.0, attempts=2), remote("charge", kind=PIVOT)))
    run.start()
    first = run.commands[-1]
    assert run.row is not None
    run.feed(run.fire(run.row))  # no reply in time: attempt 2 goes out
    stale = run.feed(success(first))
    assert stale is not None
    assert names(stale.events) == ["saga.reply_ignored"]
    assert stale.commands == ()
    assert stale.state.awaiting is not None
    assert stale.state.awaiting.attempt == 2

    reply = success(run.commands[-1])
    run.feed(reply)
    duplicate = run.feed(reply)
    assert duplicate is not None
    assert names(duplicate.events) == ["saga.reply_ignored"]
    assert duplicate.commands == ()
    assert [c.step for c in run.commands] == ["reserve", "reserve", "charge"]


def test_a_reply_of_another_type_than_the_step_expects_is_ignored() -> None:
    run = Run(saga_of(remote("reserve"), remote("charge", kind=PIVOT)))
    run.start()
    stray = run.feed(wrong_type(run.commands[-1]))  # a compensation's reply to the action
    assert stray is not None
    assert names(stray.events) == ["saga.reply_ignored"]
    assert stray.commands == ()
    assert [c.step for c in run.commands] == ["reserve"]


def test_a_timeout_with_retries_left_sends_again_with_the_next_attempt() -> None:
    run = Run(saga_of(remote("reserve", timeout_s=5.0, attempts=3)))
    run.start()
    assert run.row is not None
    decision = run.feed(run.fire(run.row))
    assert decision is not None
    assert names(decision.events) == ["saga.step_timed_out", "saga.step_requested"]
    [again] = decision.commands
    assert (again.step, again.attempt) == ("reserve", 2)
    assert again.message_id == command_id(SAGA_ID, "reserve", "action", 2) != run.commands[0].message_id
    assert decision.deadlines == (Deadline("reserve", "action", 2, "reply", run.now + timedelta(seconds=5)),)


def test_a_pivot_that_times_out_for_good_fails_the_saga() -> None:
    run = Run(saga_of(remote("reserve"), remote("charge", kind=PIVOT, timeout_s=5.0)))
    run.start()
    run.feed(success(run.commands[-1]))
    assert run.row is not None
    decision = run.feed(run.fire(run.row))
    assert decision is not None
    # Nobody knows whether the payment went through: no compensation, an operator looks.
    assert names(decision.events) == ["saga.step_timed_out", "saga.failed"]
    assert decision.commands == ()
    assert decision.state.status == "failed"
    assert decision.deadlines == ()
    assert decision.cleared == ("charge",)


def test_a_refused_retriable_step_after_the_pivot_is_retried_after_a_delay() -> None:
    run = Run(saga_of(remote("charge", kind=PIVOT), remote("ship", kind=RETRIABLE, attempts=3)))
    run.start()
    run.feed(success(run.commands[-1]))
    refused = run.feed(refusal(run.commands[-1]))
    assert refused is not None
    assert names(refused.events) == ["saga.step_failed", "saga.retry_scheduled"]
    assert refused.commands == ()
    [retry] = refused.deadlines
    assert (retry.step, retry.phase, retry.attempt, retry.kind) == ("ship", "action", 2, "retry")
    # backoff_s=1.0 with the default jitter of 20%
    assert run.now + timedelta(seconds=0.8) <= retry.due_at <= run.now + timedelta(seconds=1.2)

    fired = run.feed(run.fire(retry))
    assert fired is not None
    assert [(c.step, c.attempt) for c in fired.commands] == [("ship", 2)]


def test_a_local_step_is_asked_for_and_its_result_decides_again() -> None:
    saga = saga_of(remote("reserve"), local("note"), remote("charge", kind=PIVOT))
    run = Run(saga)
    run.start()
    after_reserve = decide(saga, run.state, success(run.commands[-1]), run.now)
    assert after_reserve.local == RunLocal("note", "action", 1)
    assert after_reserve.commands == ()

    done = decide(saga, after_reserve.state, LocalDone("note", "action", 1, {"trail": ["noted"]}), run.now)
    assert names(done.events) == ["saga.step_succeeded", "saga.step_requested"]
    assert done.state.data == {"trail": ["noted"]}
    assert [c.step for c in done.commands] == ["charge"]

    failed = decide(saga, after_reserve.state, LocalFailed("note", "action", 1, "no paper"), run.now)
    assert names(failed.events) == ["saga.step_failed", "saga.compensation_started", "saga.step_requested"]
    assert [(c.step, c.phase) for c in failed.commands] == [("reserve", "compensation")]


def test_resume_of_a_failed_saga_goes_on_with_a_fresh_retry_budget() -> None:
    run = Run(saga_of(remote("charge", kind=PIVOT), remote("ship", kind=RETRIABLE, attempts=1)))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(run.commands[-1]))
    assert run.state.status == "failed"

    resumed = run.feed(Resume("ship service fixed"))
    assert resumed is not None
    assert names(resumed.events) == ["saga.operator_resumed", "saga.step_requested"]
    assert [(c.step, c.attempt) for c in resumed.commands] == [("ship", 2)]
    completed = run.feed(success(run.commands[-1]))
    assert completed is not None
    assert completed.state.status == "completed"
    with pytest.raises(SagaError, match="is completed: there is nothing to resume"):
        decide(run.saga, run.state, Resume("again"), run.now)


def test_then_merges_two_decisions_into_one() -> None:
    saga = saga_of(local("note", timeout_s=5.0), remote("charge", kind=PIVOT, timeout_s=30.0))
    first = decide(saga, SagaState(saga_id=SAGA_ID), Start(saga.name, {}), EPOCH)
    assert first.local is not None
    later = decide(saga, first.state, LocalDone("note", "action", 1), EPOCH)
    both = first.then(later)
    assert both.state == later.state
    assert both.events == first.events + later.events
    assert both.commands == first.commands + later.commands
    assert both.local is None
    # The local step's row was set, then cleared; the pivot's set: only the latter remains.
    assert first.deadlines == (Deadline("note", "action", 1, "reply", EPOCH + timedelta(seconds=5)),)
    assert later.cleared == ("note",)
    assert both.deadlines == later.deadlines
    assert both.cleared == ("note",)

    unchanged = Decision(later.state)
    assert first.then(unchanged).deadlines == first.deadlines  # kept: the later one did not touch it


def test_resume_sends_again_the_step_that_timed_out_for_good() -> None:
    """A timed-out pivot counts as done (it may have acted, so a compensation would undo it)
    but it never succeeded: a resume sends it again instead of going on past it."""
    saga = saga_of(
        remote("reserve"), remote("charge", kind=PIVOT, timeout_s=5.0), remote("ship", kind=RETRIABLE)
    )
    run = Run(saga)
    run.start()
    run.feed(success(run.commands[-1]))
    assert run.row is not None
    run.feed(run.fire(run.row))
    assert run.state.status == "failed"

    resumed = run.feed(Resume("payments answer again"))
    assert resumed is not None
    assert [(c.step, c.attempt) for c in resumed.commands] == [("charge", 2)]
    run.feed(success(run.commands[-1]))
    completed = run.feed(success(run.commands[-1]))
    assert completed is not None
    assert completed.state.status == "completed"
    assert [c.step for c in run.commands] == ["reserve", "charge", "charge", "ship"]


def test_resume_while_a_retry_waits_runs_that_retry_now_with_a_fresh_budget() -> None:
    run = Run(saga_of(remote("charge", kind=PIVOT), remote("ship", kind=RETRIABLE, attempts=2)))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(run.commands[-1]))
    assert run.row is not None
    assert (run.row.kind, run.row.attempt) == ("retry", 2)

    resumed = run.feed(Resume("ship service fixed"))
    assert resumed is not None
    assert [(c.step, c.attempt) for c in resumed.commands] == [("ship", 2)]  # the one waiting
    refused = run.feed(refusal(run.commands[-1]))
    assert refused is not None
    # Two fresh attempts: the one just refused, and one more.
    assert names(refused.events) == ["saga.step_failed", "saga.retry_scheduled"]


def test_a_remote_step_without_a_command_is_an_error_that_names_it() -> None:
    class Reserve(RemoteStep[Data]):
        participant = PARTICIPANT
        reply = Done
        compensation_reply = Undone

        def command(self, data: Data) -> BaseModel:
            return None  # type: ignore[return-value]

        def compensation(self, data: Data) -> BaseModel:
            return Do(step="reserve", phase="compensation")

    class Broken(Saga[Data]):
        steps = (Reserve,)

    with pytest.raises(SagaError, match=r"saga Broken: step reserve: command\(\) returned None"):
        decide(Broken, SagaState(saga_id=SAGA_ID), Start("Broken", {}), EPOCH)

"""Issue 13 item 4, the decider alone: a saga whose history names a step the deployed
definition lacks (renamed or removed while it ran) is parked with the reason, never moved
by guess and never an exception; a resume takes it up once the definition has the step.

`Run` drives a saga under definition A (checking every invariant); the inputs under the
changed definition B go to `decide` directly, as the orchestrator would pass them.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from saga import Decision, RemoteStep, Resume, Saga, SagaError, SagaState, decide
from saga._state import Awaiting
from tests.decider.definitions import SagaSpec, StepSpec, build, saga_specs
from tests.decider.driver import (
    SAGA_ID,
    STOPPED,
    Run,
    awaited_input,
    drawn_local,
    refusal,
    success,
    tick,
)
from tests.decider.invariants import names

pytestmark = pytest.mark.pure
MAX_INPUTS = 300

SPEC = SagaSpec(
    steps=[
        StepSpec(name="reserve_flight", timeout_s=30.0),
        StepSpec(name="reserve_hotel", timeout_s=30.0),
        StepSpec(name="charge_card", kind="pivot"),
    ]
)
TRAVEL = build(SPEC)


def renamed(spec: SagaSpec, old: str, new: str) -> type[Saga[Any]]:
    return build(spec.renamed(old, new))


HOTEL_RENAMED = renamed(SPEC, "reserve_hotel", "book_hotel")
FLIGHT_RENAMED = renamed(SPEC, "reserve_flight", "book_flight")
REASON = (
    "step 'reserve_hotel' of Drawn is not in the deployed definition "
    "(it has: reserve_flight, book_hotel, charge_card); deploy a definition that has it, "
    f"then `saga resume {SAGA_ID} --note ...`"
)


def awaiting_hotel() -> Run:
    run = Run(TRAVEL)
    run.start()
    run.feed(success(run.commands[-1]))
    assert run.state.awaiting is not None
    assert run.state.awaiting.step == "reserve_hotel"
    return run


def under(saga: type[Saga[Any]], run: Run, given_: Any) -> Decision:
    """Decide under another definition and keep the outcome in `run`, as the orchestrator would."""
    decision = decide(saga, run.state, given_, run.now)
    run.state = decision.state
    run.events += decision.events
    run.commands += decision.commands
    for step in decision.cleared:
        run.rows.pop(step, None)
    for deadline in decision.deadlines:
        run.rows[deadline.step] = deadline
    return decision


def assert_parked(decision: Decision, before: SagaState, reason: str, cause: str) -> None:
    assert names(decision.events) == ["saga.parked"]
    assert not decision.commands
    assert decision.local is None
    assert decision.deadlines == ()
    assert decision.cleared == tuple(w.step for w in before.waiting)
    state = decision.state
    assert state.status == "parked"
    assert state.awaiting is None
    assert state.last_error == reason
    assert state.parked is not None
    assert (state.parked.reason, state.parked.status, state.parked.waiting) == (
        reason,
        before.status,
        before.waiting,
    )
    [parked] = decision.events
    assert parked.model_dump() == {
        "missing": ["reserve_hotel"],
        "cause": cause,
        "reason": reason,
        "saga_version": None,
    }


def test_item4_a_reply_for_a_renamed_step_parks_the_saga_with_the_reason() -> None:
    run = awaiting_hotel()
    before = run.state
    decision = under(HOTEL_RENAMED, run, success(run.commands[-1]))
    assert_parked(decision, before, REASON, "reply test.Done to reserve_hotel/action #1")


def test_item4_a_due_deadline_of_a_renamed_step_parks_the_saga() -> None:
    run = awaiting_hotel()
    before = run.state
    assert run.row is not None
    decision = under(HOTEL_RENAMED, run, run.fire(run.row))
    assert_parked(decision, before, REASON, "reply timeout of reserve_hotel/action #1")


def test_item4_a_parked_saga_ignores_replies_and_deadlines_and_parks_once() -> None:
    run = awaiting_hotel()
    hotel, deadline = run.commands[-1], run.row
    assert deadline is not None
    parked = under(HOTEL_RENAMED, run, success(hotel)).state
    again = under(HOTEL_RENAMED, run, success(hotel))
    assert names(again.events) == ["saga.reply_ignored"]
    assert not again.commands
    assert not again.deadlines
    assert not again.cleared
    assert again.state == parked.model_copy(update={"version": parked.version + 1})
    stale = under(HOTEL_RENAMED, run, run.fire(deadline))
    assert stale == Decision(again.state)


def test_item4_resume_refuses_while_the_step_is_still_missing() -> None:
    run = awaiting_hotel()
    parked = under(HOTEL_RENAMED, run, success(run.commands[-1])).state
    with pytest.raises(SagaError) as refused:
        decide(HOTEL_RENAMED, parked, Resume("try"), run.now)
    assert str(refused.value) == f"saga {SAGA_ID} stays parked: {REASON}"


def test_item4_resume_under_a_definition_with_the_step_sends_it_again_and_goes_on() -> None:
    run = awaiting_hotel()
    under(HOTEL_RENAMED, run, success(run.commands[-1]))
    resumed = run.feed(Resume("reserve_hotel is back"))
    assert resumed is not None
    assert names(resumed.events) == ["saga.unparked", "saga.operator_resumed", "saga.step_requested"]
    assert [(c.step, c.phase, c.attempt) for c in resumed.commands] == [("reserve_hotel", "action", 2)]
    assert resumed.state.status == "running"
    assert resumed.state.parked is None
    assert run.row is not None
    assert run.row.attempt == 2
    run.feed(success(run.commands[-1]))
    run.feed(success(run.commands[-1]))
    assert run.state.status == "completed"
    assert run.state.data == {"trail": ["reserve_flight", "reserve_hotel", "charge_card"]}


def test_item4_a_renamed_step_that_is_done_parks_rather_than_runs_again_under_its_new_name() -> None:
    run = awaiting_hotel()
    before = run.state
    decision = under(FLIGHT_RENAMED, run, success(run.commands[-1]))
    assert names(decision.events) == ["saga.parked"]
    assert not decision.commands  # book_flight would book a second flight
    assert decision.events[0].model_dump()["missing"] == ["reserve_flight"]
    assert decision.state.parked is not None
    assert decision.state.parked.waiting == before.waiting


def test_item4_a_compensation_of_a_renamed_step_parks_and_resumes_where_it_was() -> None:
    run = awaiting_hotel()
    run.feed(refusal(run.commands[-1]))
    waiting = run.state.awaiting
    assert waiting is not None
    assert (run.state.status, waiting.step, waiting.phase) == (
        "compensating",
        "reserve_flight",
        "compensation",
    )
    decision = under(FLIGHT_RENAMED, run, success(run.commands[-1]))
    assert names(decision.events) == ["saga.parked"]
    assert decision.state.parked is not None
    assert decision.state.parked.status == "compensating"
    resumed = run.feed(Resume("reserve_flight is back"))
    assert resumed is not None
    assert [(c.step, c.phase, c.attempt) for c in resumed.commands] == [("reserve_flight", "compensation", 2)]
    run.feed(success(run.commands[-1]))
    assert run.state.status == "compensated"


def test_item4_resume_of_a_failed_saga_whose_step_was_renamed_parks_it() -> None:
    spec = SagaSpec(steps=[StepSpec(name="pay", kind="pivot"), StepSpec(name="mail", kind="retriable")])
    run = Run(build(spec))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(run.commands[-1]))  # a retriable step out of tries: failed
    assert run.state.status == "failed"
    decision = under(renamed(spec, "mail", "notify"), run, Resume("go on"))
    assert names(decision.events) == ["saga.parked"]
    assert decision.state.parked is not None
    assert decision.state.parked.status == "failed"
    resumed = run.feed(Resume("mail is back"))
    assert resumed is not None
    assert [(c.step, c.attempt) for c in resumed.commands] == [("mail", 2)]


def test_item4_a_scheduled_retry_of_a_renamed_step_parks_and_runs_that_retry_on_resume() -> None:
    spec = SagaSpec(
        steps=[StepSpec(name="pay", kind="pivot"), StepSpec(name="mail", kind="retriable", attempts=3)]
    )
    run = Run(build(spec))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(run.commands[-1]))
    assert run.row is not None
    assert run.row.kind == "retry"
    decision = under(renamed(spec, "mail", "notify"), run, run.fire(run.row))
    assert names(decision.events) == ["saga.parked"]
    assert decision.events[0].model_dump()["cause"] == "scheduled retry of mail/action #2"
    resumed = run.feed(Resume("mail is back"))
    assert resumed is not None
    assert [(c.step, c.attempt) for c in resumed.commands] == [("mail", 2)]  # no attempt skipped


# --- the property: any saga, any renamed step, any moment ---------------------------------


def needs(state: SagaState, step: str) -> bool:
    """The saga's history names the step: awaited, done, to undo, or to run again."""
    return (
        step in {*state.done, *state.to_compensate}
        or state.waiting_on(step) is not None
        or (state.status == "failed" and state.last_step == step)
    )


@given(spec=saga_specs(), data=st.data())
def test_item4_a_renamed_step_parks_exactly_when_needed_and_resume_brings_it_back(
    spec: SagaSpec, data: st.DataObject
) -> None:
    """At every moment of a saga's life under A, what moves it (what it awaits, or a resume
    once it stopped) under each definition B with one step renamed: never an exception; it
    parks, and only parks, exactly when its history names the renamed step. At one drawn
    moment it parks for real: a resume under B refuses, one under A takes it up, and every
    invariant keeps holding to its end."""
    run = Run(build(spec))
    run.start(drawn_local(data))
    variants = {s.name: renamed(spec, s.name, f"{s.name}_v2") for s in spec.leaves()}
    park_at = data.draw(st.integers(0, 12), label="park at input")
    resumes = 0
    for i in range(MAX_INPUTS):
        if run.state.terminal or resumes > 2:
            break
        stopped = run.state.status in STOPPED
        tick(data, run)
        input_ = Resume("operator") if stopped else awaited_input(data, run)
        for old, changed in variants.items():
            parked = names(decide(changed, run.state, input_, run.now).events)[:1] == ["saga.parked"]
            assert parked == needs(run.state, old), (old, run.state, input_)
        needed = [old for old in variants if needs(run.state, old)]
        if i == park_at and needed:
            _park_and_resume(run, variants[data.draw(st.sampled_from(needed), label="renamed")], input_, data)
            event(f"parked on {type(input_).__name__}")
            continue
        resumes += stopped
        run.feed(input_, drawn_local(data))
    event(f"ends {run.state.status}")


def _park_and_resume(run: Run, changed: type[Saga[Any]], input_: Any, data: st.DataObject) -> None:
    before = run.state
    decision = under(changed, run, input_)
    assert names(decision.events)[0] == "saga.parked"
    assert set(names(decision.events)[1:]) <= {"saga.signal_received", "saga.signal_ignored"}  # kept or not
    assert not decision.commands
    assert decision.state.parked is not None
    assert decision.state.parked.status == before.status
    with pytest.raises(SagaError, match="stays parked"):
        decide(changed, run.state, Resume("again"), run.now)
    resumed = run.feed(Resume("back on A"), drawn_local(data))
    assert resumed is not None
    assert names(resumed.events)[:2] == ["saga.unparked", "saga.operator_resumed"]
    if before.status in STOPPED or any(_sends_again(run.saga, w) for w in before.waiting):
        assert len(resumed.events) > 2, "a resumed saga goes on at once"


def _sends_again(saga: type[Saga[Any]], waiting: Awaiting) -> bool:
    """A resume sends a command again or runs a retry now; a child, a wait or a timer waits on."""
    return waiting.kind == "retry" or (
        waiting.kind == "reply" and issubclass(saga.step(waiting.step), RemoteStep)
    )

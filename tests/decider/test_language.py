"""The decider on the saga language, one behaviour a test: parallel groups, waits for
signals, timers and child sagas, with neither Postgres nor Kafka.

Each test drives a small saga through `Run`, which checks every invariant of the property
tests after each input.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from saga import (
    ChildEnded,
    CompensateRequest,
    CompensateSaga,
    Deadline,
    ParentRef,
    Reply,
    Resume,
    Saga,
    Start,
    StepKind,
    child_id_for,
    decide,
)
from tests.decider.definitions import (
    CHILD,
    CHILD_DATA,
    Data,
    GroupSpec,
    SagaSpec,
    Sig1,
    Sig2,
    Sig3,
    StepSpec,
    Stray,
    build,
)
from tests.decider.driver import EPOCH, SAGA_ID, Run, refusal, success
from tests.decider.invariants import names

pytestmark = pytest.mark.pure
PIVOT, RETRIABLE = StepKind.PIVOT, StepKind.RETRIABLE


def saga_of(*nodes: StepSpec | GroupSpec) -> type[Saga[Any]]:
    return build(SagaSpec(steps=list(nodes)))


def remote(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, **fields)


def wait(name: str, *signals: int, **fields: Any) -> StepSpec:
    return StepSpec(name=name, what="wait", signals=signals or (1,), **fields)


def timer(name: str, seconds: float = 5.0, **fields: Any) -> StepSpec:
    return StepSpec(name=name, what="timer", delay_s=seconds, **fields)


def child(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, what="child", **fields)


def group(*members: StepSpec) -> GroupSpec:
    return GroupSpec(members=list(members))


def status(run: Run) -> str:
    return run.state.status


def sent(run: Run, step: str, phase: str = "action") -> Any:
    """The latest command sent for a step's phase."""
    return next(c for c in reversed(run.commands) if (c.step, c.phase) == (step, phase))


# --- parallel groups ---------------------------------------------------------------------


def test_a_group_sends_every_members_command_in_one_decision_and_goes_on_when_all_succeeded() -> None:
    run = Run(saga_of(group(remote("ship"), remote("invoice"), remote("notify")), remote("pay", kind=PIVOT)))
    decision = run.start()
    assert [(c.step, c.attempt) for c in decision.commands] == [("ship", 1), ("invoice", 1), ("notify", 1)]
    assert [w.step for w in run.state.waiting] == ["ship", "invoice", "notify"]
    run.feed(success(sent(run, "invoice")))
    run.feed(success(sent(run, "ship")))
    assert [c.step for c in run.commands] == ["ship", "invoice", "notify"], "the group is not done yet"
    run.feed(success(sent(run, "notify")))
    assert run.commands[-1].step == "pay"
    assert run.state.done == ["invoice", "ship", "notify"]


def test_a_member_refused_while_a_sibling_is_in_flight_undoes_the_succeeded_sibling_at_once() -> None:
    run = Run(saga_of(remote("reserve"), group(remote("ship"), remote("invoice"), remote("notify"))))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(success(sent(run, "ship")))
    decision = run.feed(refusal(sent(run, "invoice")))  # notify still in flight
    assert decision is not None
    assert names(decision.events)[-2:] == ["saga.compensation_started", "saga.step_requested"]
    assert [(c.step, c.phase) for c in decision.commands] == [("ship", "compensation")]
    decision = run.feed(success(sent(run, "ship", "compensation")))
    assert decision is not None
    assert not decision.commands, "reserve waits until notify answers"
    decision = run.feed(success(sent(run, "notify")))  # it acted late: undone before reserve
    assert decision is not None
    assert names(decision.events)[:2] == ["saga.step_succeeded", "saga.compensation_added"]
    assert [(c.step, c.phase) for c in decision.commands] == [("notify", "compensation")]
    run.feed(success(sent(run, "notify", "compensation")))
    run.feed(success(sent(run, "reserve", "compensation")))
    assert status(run) == "compensated"


def test_a_member_that_times_out_while_its_group_is_compensated_is_undone_too() -> None:
    run = Run(saga_of(remote("reserve"), group(remote("ship", timeout_s=5.0), remote("invoice"))))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(sent(run, "invoice")))
    assert [w.step for w in run.state.waiting] == ["ship"]
    assert run.row is not None
    decision = run.feed(run.fire(run.row))
    assert decision is not None
    assert names(decision.events)[:2] == ["saga.step_timed_out", "saga.compensation_added"]
    run.feed(success(sent(run, "ship", "compensation")))
    run.feed(success(sent(run, "reserve", "compensation")))
    assert status(run) == "compensated"


def test_a_member_refused_while_its_group_is_compensated_has_nothing_to_undo() -> None:
    run = Run(saga_of(remote("reserve"), group(remote("ship"), remote("invoice"))))
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(sent(run, "invoice")))
    decision = run.feed(refusal(sent(run, "ship")))
    assert decision is not None
    assert [(c.step, c.phase) for c in decision.commands] == [("reserve", "compensation")]


def test_a_member_that_succeeds_after_its_siblings_compensation_failed_for_good_is_undone_too() -> None:
    """Found by the properties: a sibling's compensation fails for good (compensation_failed)
    while a member is still in flight; the member then succeeds. An operator resumes: the
    member must be undone before the saga counts as compensated."""
    run = Run(saga_of(group(remote("ship"), remote("invoice"), remote("notify"))))
    run.start()
    run.feed(success(sent(run, "ship")))
    run.feed(refusal(sent(run, "invoice")))  # notify in flight; ship is undone
    run.feed(refusal(sent(run, "ship", "compensation")))
    assert status(run) == "compensation_failed"
    run.feed(success(sent(run, "notify")))
    assert run.state.to_compensate == ["notify", "ship"]  # it took effect last: undone first
    decision = run.feed(Resume("ship's undo works again"))
    assert decision is not None
    assert [(c.step, c.phase) for c in decision.commands] == [("notify", "compensation")]
    run.feed(success(sent(run, "notify", "compensation")))
    run.feed(success(sent(run, "ship", "compensation")))
    assert status(run) == "compensated"


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


# --- child sagas -------------------------------------------------------------------------


def ended(run: Run, step: str, outcome: Any) -> Reply:
    waiting = run.state.waiting_on(step)
    assert waiting is not None
    return run.child_ended(waiting, outcome)


def test_a_child_step_starts_the_child_and_succeeds_when_it_completes() -> None:
    run = Run(saga_of(child("fulfil"), remote("pay", kind=PIVOT)))
    started = run.start()
    [start] = started.children
    assert (start.saga_type, start.child_id) == (CHILD.name, child_id_for(SAGA_ID, "fulfil", 1))
    assert start.parent == ParentRef(
        saga_id=SAGA_ID, saga_type="Drawn", step="fulfil", phase="action", attempt=1
    )
    assert not started.commands
    decision = run.feed(ended(run, "fulfil", "completed"))
    assert decision is not None
    assert run.state.data == {"trail": ["fulfil"]}
    assert run.commands[-1].step == "pay"


def test_a_compensated_child_fails_its_step() -> None:
    run = Run(saga_of(remote("reserve"), child("fulfil"), remote("pay", kind=PIVOT)))
    run.start()
    run.feed(success(run.commands[-1]))
    decision = run.feed(ended(run, "fulfil", "compensated"))
    assert decision is not None
    assert names(decision.events)[:2] == ["saga.step_failed", "saga.compensation_started"]
    assert [(c.step, c.phase) for c in decision.commands] == [("reserve", "compensation")]


def test_compensating_a_completed_child_asks_it_to_undo_itself() -> None:
    run = Run(saga_of(child("fulfil"), remote("pay", kind=PIVOT)))
    run.start()
    run.feed(ended(run, "fulfil", "completed"))
    decision = run.feed(refusal(run.commands[-1]))
    assert decision is not None
    [ask] = decision.commands
    assert isinstance(ask.message, CompensateSaga)
    assert (ask.to_saga, ask.saga_id) == (CHILD.name, child_id_for(SAGA_ID, "fulfil", 1))
    decision = run.feed(ended(run, "fulfil", "completed"))  # not an undo: ignored
    assert decision is not None
    assert names(decision.events) == ["saga.reply_ignored"]
    run.feed(ended(run, "fulfil", "compensated"))
    assert status(run) == "compensated"


def test_the_end_of_another_saga_is_ignored() -> None:
    run = Run(saga_of(child("fulfil"), remote("pay", kind=PIVOT)))
    run.start()
    stranger = ChildEnded(child_id="someone-else", saga_type=CHILD.name, outcome="completed", data=CHILD_DATA)
    decision = run.feed(Reply("saga.child_ended", stranger, "fulfil", "action", 1))
    assert decision is not None
    assert names(decision.events) == ["saga.reply_ignored"]


def test_a_completed_child_asked_by_its_parent_undoes_itself_and_answers_it() -> None:
    run = Run(CHILD)
    parent = ParentRef(saga_id="parent-1", saga_type="Parent", step="fulfil", phase="action", attempt=1)
    run.feed(Start(CHILD.name, Data().model_dump(mode="json"), parent=parent))
    decision = run.feed(success(run.commands[-1]))
    assert decision is not None
    [told] = [c for c in decision.commands if isinstance(c.message, ChildEnded)]
    assert (told.to_saga, told.saga_id) == ("Parent", "parent-1")
    assert told.message == ChildEnded(
        child_id=SAGA_ID, saga_type=CHILD.name, outcome="completed", data=CHILD_DATA, reason=None
    )
    decision = run.feed(CompensateRequest("pay refused", "fulfil", "compensation", 1))
    assert decision is not None
    assert names(decision.events)[:2] == ["saga.compensation_requested", "saga.compensation_started"]
    decision = run.feed(success(sent(run, "c0", "compensation")))
    assert decision is not None
    [told] = [c for c in decision.commands if isinstance(c.message, ChildEnded)]
    assert told.phase == "compensation"
    assert isinstance(told.message, ChildEnded)
    assert told.message.outcome == "compensated"


def test_signals_of_types_no_saga_registers_are_kept_apart_from_replies() -> None:
    run = Run(saga_of(wait("picked", 1), remote("pay", kind=PIVOT)))
    run.start()
    decision = run.feed(Reply("test.Sig1", Sig1(), "picked", "action", 1))  # a reply is no signal
    assert decision is not None
    assert names(decision.events) == ["saga.reply_ignored"]
    assert run.state.waiting_on("picked") is not None
    _ = Sig2


def test_resume_of_a_saga_failed_in_a_group_runs_the_member_that_stopped_it() -> None:
    """Found by the properties: a retriable member timed out for good (the saga failed); its
    sibling answered after. The resume ran the sibling again, and the saga completed though
    the member that timed out never succeeded."""
    run = Run(
        saga_of(
            remote("pay", kind=PIVOT),
            group(remote("ship", kind=RETRIABLE, timeout_s=5.0), remote("invoice", kind=RETRIABLE)),
        )
    )
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(success(sent(run, "invoice")))
    assert run.row is not None
    run.feed(run.fire(run.row))  # ship: no reply, no tries left
    assert status(run) == "failed"
    decision = run.feed(Resume("ship is back"))
    assert decision is not None
    assert [(c.step, c.attempt) for c in decision.commands] == [("ship", 2)]
    run.feed(success(sent(run, "ship")))
    assert status(run) == "completed"


def test_resume_of_a_saga_failed_in_a_group_whose_sibling_answered_after_runs_the_member_that_stopped_it() -> (
    None
):
    run = Run(
        saga_of(
            remote("pay", kind=PIVOT),
            group(remote("ship", kind=RETRIABLE, timeout_s=5.0), remote("invoice", kind=RETRIABLE)),
        )
    )
    run.start()
    run.feed(success(run.commands[-1]))
    assert run.row is not None
    run.feed(run.fire(run.row))  # ship: no reply, no tries left; invoice still in flight
    run.feed(success(sent(run, "invoice")))
    assert status(run) == "failed"
    assert run.state.last_step == "ship"
    decision = run.feed(Resume("ship is back"))
    assert decision is not None
    assert [(c.step, c.attempt) for c in decision.commands] == [("ship", 2)]


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


def test_resume_of_a_failed_group_runs_again_every_member_that_did_not_succeed() -> None:
    """Found by the properties (deep profile): a member timed out for good, the saga was
    resumed, failed again on that member's refusal while a sibling's retry ran; the next resume
    ran nothing, and the saga completed though the member never succeeded."""
    run = Run(
        saga_of(
            remote("pay", kind=PIVOT),
            group(remote("ship", kind=RETRIABLE), remote("invoice", kind=RETRIABLE, timeout_s=5.0)),
        )
    )
    run.start()
    run.feed(success(run.commands[-1]))
    assert run.row is not None
    run.feed(run.fire(run.row))  # invoice: no reply, no tries left
    run.feed(Resume("invoice again"))
    run.feed(refusal(sent(run, "ship")))  # a retry is scheduled
    run.feed(refusal(sent(run, "invoice")))  # failed again
    assert status(run) == "failed"
    assert run.row is not None
    run.feed(run.fire(run.row))  # ship's retry goes out
    decision = run.feed(Resume("invoice once more"))
    assert decision is not None
    assert [(c.step, c.attempt) for c in decision.commands] == [("invoice", 3)]
    run.feed(success(sent(run, "ship")))
    assert status(run) == "running"
    run.feed(success(sent(run, "invoice")))
    assert status(run) == "completed"


def test_resume_of_a_failed_group_runs_again_a_member_that_timed_out_after_the_failure() -> None:
    run = Run(
        saga_of(
            remote("pay", kind=PIVOT),
            group(remote("ship", kind=RETRIABLE), remote("invoice", kind=RETRIABLE, timeout_s=5.0)),
        )
    )
    run.start()
    run.feed(success(run.commands[-1]))
    run.feed(refusal(sent(run, "ship")))  # no tries left: failed
    assert run.row is not None
    run.feed(run.fire(run.row))  # invoice: no reply either (it may have acted)
    decision = run.feed(Resume("both again"))
    assert decision is not None
    assert [(c.step, c.attempt) for c in decision.commands] == [("ship", 2), ("invoice", 2)]

"""The decider on the saga language, one behaviour a test: parallel groups and child sagas
(waits for signals and timers: test_language_signals.py), with neither Postgres nor Kafka.

Each test drives a small saga through `Run`, which checks every invariant of the property
tests after each input.
"""

from __future__ import annotations

import pytest

from saga import (
    ChildEnded,
    CompensateRequest,
    CompensateSaga,
    ParentRef,
    Reply,
    Resume,
    Start,
    StepKind,
    child_id_for,
)
from tests.decider.definitions import (
    CHILD,
    CHILD_DATA,
    Data,
)
from tests.decider.driver import SAGA_ID, Run, refusal, success
from tests.decider.invariants import names
from tests.decider.language import child, ended, group, remote, saga_of, sent, status

pytestmark = pytest.mark.pure
PIVOT, RETRIABLE = StepKind.PIVOT, StepKind.RETRIABLE


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


# --- child sagas -------------------------------------------------------------------------


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

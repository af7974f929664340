"""What must hold of each event of a decision, on the state it met (the state before it,
folded from the decision's earlier events), and of the state the decision leaves:

- compensations run one at a time, and earlier steps are undone only once no member of a
  group is in flight;
- a step succeeds on what it waits for: a wait right after taking a signal, a timer when its
  deadline fires (or it was due when set), a child step on its own child's completion, a
  remote step on a reply to it (never a refusal), a local step on its result;
- a wait fails only when its time is up; a child step only when its child was compensated;
- a signal is received from a Signal input, kept for exactly the waits ahead that name its
  type (while running), taken by a waiting wait that names its type (the oldest kept for it
  first) and ignored only when no wait ahead would take it (running or failed);
- no wait waits while a signal it takes is kept; no wait or timer waits while its group is
  compensated; only a wait or a timer is cancelled, only while compensating.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from saga import (
    ChildEnded,
    ChildSaga,
    DeadlineDue,
    Decision,
    LocalDone,
    RemoteStep,
    Reply,
    Saga,
    SagaState,
    Signal,
    StepRefused,
    TimerStep,
    WaitStep,
)
from saga._events import (
    SignalConsumed,
    SignalIgnored,
    SignalReceived,
    StepFailed,
    StepRequested,
    StepSucceeded,
    WaitCancelled,
)
from saga._state import apply


@dataclass(frozen=True)
class _At:
    """Where an event of a decision stands: the state it met, the input, its neighbours."""

    saga: type[Saga[Any]]
    state: SagaState
    given: object
    now: datetime
    previous: BaseModel | None
    following: BaseModel | None


def check_events(
    saga: type[Saga[Any]], before: SagaState, given: object, decision: Decision, now: datetime
) -> None:
    state, events = before, decision.events
    for i, event in enumerate(events):
        check = _IN_PLACE.get(type(event))
        if check is not None:
            previous = events[i - 1] if i else None
            following = events[i + 1] if i + 1 < len(events) else None
            check(_At(saga, state, given, now, previous, following), event)
        state = apply(state, event)
    if state.status == "compensating":
        stay = [w.step for w in state.waiting if issubclass(saga.step(w.step), WaitStep | TimerStep)]
        assert not stay, f"{stay} still wait while their group is compensated"
    if state.status in ("running", "failed"):
        for waiting in state.waiting:
            kept = [k.message_id for k in state.signals if waiting.step in k.takers]
            assert not kept, f"{waiting.step} waits while the signals it takes are kept: {kept}"


def _compensation_requested(at: _At, e: StepRequested) -> None:
    """Undone one at a time; earlier steps only once no member of a group is in flight."""
    if e.phase != "compensation":
        return
    assert at.state.status == "compensating", f"{e.step} undone while {at.state.status}"
    others = [w.step for w in at.state.waiting if w.phase == "compensation" and w.step != e.step]
    assert not others, f"{e.step} undone while {others} are being undone"
    node = at.saga.step_index(e.step)
    in_flight = [
        w.step for w in at.state.waiting if w.phase == "action" and at.saga.step_index(w.step) != node
    ]
    assert not in_flight, f"{e.step} undone while {in_flight} are in flight"


def _succeeded_for_a_cause(at: _At, e: StepSucceeded) -> None:
    """A step succeeds on what it waits for: a wait on the signal it took, a timer when due,
    a child step on its child's completion, a remote step on its reply, a local step when run."""
    step, given = at.saga.step(e.step), at.given
    waiting = at.state.waiting_on(e.step)
    assert waiting is not None, f"{e.step} succeeded, awaiting nothing"
    assert waiting.phase == "action", f"{e.step} succeeded awaiting {waiting}"
    if issubclass(step, WaitStep):
        consumed = isinstance(at.previous, SignalConsumed) and at.previous.step == e.step
        assert consumed, f"the wait {e.step} succeeded without a signal (after {at.previous})"
    elif issubclass(step, TimerStep):
        # Its deadline row fired (the deadline loop fires a row once due), or it was due when set.
        due = waiting.due_at if waiting.kind == "timer" else None
        assert due is not None, f"the timer {e.step} succeeded awaiting {waiting}"
        fired = isinstance(given, DeadlineDue) and (given.step, given.kind, given.attempt) == (
            e.step,
            "timer",
            waiting.attempt,
        )
        assert fired or due <= at.now, f"the timer {e.step} succeeded at {at.now} on {given}, due at {due}"
    elif issubclass(step, ChildSaga):
        _child_ended(at, e.step, "completed")
    elif issubclass(step, RemoteStep):
        assert isinstance(given, Reply), f"{e.step} succeeded on {given}"
        assert given.step == e.step, f"{e.step} succeeded on a reply to {given.step}"
        assert not isinstance(given.message, StepRefused), f"{e.step} succeeded on a refusal"
    else:
        assert isinstance(given, LocalDone), f"{e.step} succeeded on {given}"
        assert given.step == e.step, f"{e.step} succeeded on the result of {given.step}"


def _failed_for_a_cause(at: _At, e: StepFailed) -> None:
    """A wait fails only when its time is up; a child step only when its child was compensated."""
    step, given = at.saga.step(e.step), at.given
    if e.phase != "action":
        return
    if issubclass(step, WaitStep):
        assert isinstance(given, DeadlineDue), f"the wait {e.step} failed on {given}"
        assert (given.step, given.kind) == (e.step, "reply"), f"the wait {e.step} failed on {given}"
    elif issubclass(step, ChildSaga):
        _child_ended(at, e.step, "compensated")


def _child_ended(at: _At, step: str, outcome: str) -> None:
    """The input is the end, with this outcome, of the child saga this step started."""
    ended = at.given.message if isinstance(at.given, Reply) else None
    assert isinstance(ended, ChildEnded), f"{step}: {outcome} on {at.given}"
    assert ended.outcome == outcome, f"{step}: {outcome} on a child that {ended.outcome}"
    assert ended.child_id == at.state.children[step], f"{step}: {outcome} on another saga's end"


def _ahead(saga: type[Saga[Any]], state: SagaState, model: str) -> list[str]:
    """The waits not passed yet that take a signal of this model."""
    done = set(state.done)
    return [
        s.name
        for s in saga.all_steps()
        if issubclass(s, WaitStep) and s.name not in done and model in (m.__name__ for m in s.signals)
    ]


def _received(at: _At, e: SignalReceived) -> None:
    given = at.given
    assert isinstance(given, Signal), f"{e} on {given}"
    assert given.message_id == e.message_id, f"{e} on {given}"
    ahead = _ahead(at.saga, at.state, type(given.message).__name__)
    assert set(e.takers) <= set(ahead), f"{e.message_type} kept for {e.takers}; the waits ahead: {ahead}"
    if at.state.status == "running":
        assert e.takers == ahead, f"{e.message_type} kept for {e.takers}; the waits ahead: {ahead}"


def _consumed(at: _At, e: SignalConsumed) -> None:
    """Taken by a wait that waits now and names its type, the oldest kept for it first."""
    step = at.saga.step(e.step)
    waiting = at.state.waiting_on(e.step)
    assert issubclass(step, WaitStep), f"{e.step} is no wait, yet took {e.message_type}"
    # A wait between two attempts (its retry scheduled) takes a signal at once, too.
    assert waiting is not None, f"{e.step} took {e.message_type} but does not wait"
    assert waiting.phase == "action", f"{e.step} took {e.message_type} awaiting {waiting}"
    kept = [k for k in at.state.signals if e.step in k.takers]
    assert kept, f"{e.step} took {e.message_id}, kept for no wait of its"
    assert kept[0].message_id == e.message_id, f"{e.step} took {e.message_id}, not the oldest kept {kept[0]}"
    assert kept[0].model in (m.__name__ for m in step.signals), f"{e.step} took a {kept[0].model}"
    following = at.following
    assert isinstance(following, StepSucceeded), f"{e.step} took it, then {following}"
    assert following.step == e.step, f"{e.step} took it, then {following}"


def _signal_ignored(at: _At, e: SignalIgnored) -> None:
    """Ignored only when no wait still ahead would take it (or the saga goes backward, or ended)."""
    kept = next((k for k in at.state.signals if k.message_id == e.message_id), None)
    assert kept is not None, f"{e.message_id} ignored but never received (or already gone)"
    if at.state.status in ("running", "failed"):
        ahead = _ahead(at.saga, at.state, kept.model)
        assert not ahead, f"{e.message_type} ignored while {ahead} would take it ({at.state.status})"


def _wait_cancelled(at: _At, e: WaitCancelled) -> None:
    step = at.saga.step(e.step)
    assert issubclass(step, WaitStep | TimerStep), f"{e.step} is no wait or timer, yet cancelled"
    assert at.state.status == "compensating", f"{e.step} cancelled while {at.state.status}"


_IN_PLACE: dict[type[BaseModel], Callable[[_At, Any], None]] = {
    StepRequested: _compensation_requested,
    StepSucceeded: _succeeded_for_a_cause,
    StepFailed: _failed_for_a_cause,
    SignalReceived: _received,
    SignalConsumed: _consumed,
    SignalIgnored: _signal_ignored,
    WaitCancelled: _wait_cancelled,
}

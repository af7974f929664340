"""The decider: `decide(saga, state, input, now) -> Decision`. Pure: no I/O, no clock, no randomness.

Every way a saga moves is an input: it starts, a reply (or a child saga's end) arrives, a
signal comes, a deadline falls due, a local step the orchestrator ran reports back, an
operator resumes it, a parent asks it to undo itself. The decision says what happened (the
events to append, which fold into `Decision.state`), the commands to send, the child sagas to
start, the deadline rows to set or clear, and a local step to run. The orchestrator runs that
step (the only I/O between two decisions) and decides again with its result.

Replies carry (step, phase, attempt). A reply that does not answer what the saga awaits on
that step right now (a duplicate, a late reply after a timeout re-sent the command, a reply
after compensation began, one for a finished saga) is recorded as `ReplyIgnored` and changes
nothing else: a saga never moves twice on one outcome. A late success after a timeout is
safe because the timed-out step is compensated anyway (its outcome was unknown), so
compensations must accept "nothing to undo".

A signal is kept (`SignalReceived`) until the wait that takes it is reached; one that no wait
ahead takes (a second signal into a `WaitForAny` already passed, a saga compensating or
ended) is recorded as `SignalIgnored`.

A saga whose history names a step that the deployed definition lacks (a step renamed or
removed while the saga ran) is parked rather than moved: `SagaParked` records why, its
deadlines are cleared, and only an operator's resume, under a definition with those steps,
takes it up again. Moving it would guess (a renamed step looks like one not yet run).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from saga._decision import (
    CompensateRequest,
    DeadlineDue,
    Decision,
    Input,
    LocalDone,
    LocalFailed,
    Migrate,
    Reply,
    Resume,
    Signal,
    Start,
)
from saga._definition import RemoteStep, Saga, Step
from saga._errors import SagaError
from saga._events import (
    CompensationRequested,
    OperatorResumed,
    ReplyIgnored,
    SagaStarted,
    SagaUnparked,
    SignalIgnored,
    SignalReceived,
    StepSucceeded,
)
from saga._language import ChildSaga, WaitStep
from saga._migrate import migrated_event
from saga._moves import Moves
from saga._parking import missing_steps, park_reason
from saga._protocol import ChildEnded, StepRefused
from saga._signals import kept_for, takers
from saga._state import Awaiting, SagaState
from saga._timing import deadline_for, jitter

__all__ = ["deadline_for", "decide", "jitter"]


def decide(saga: type[Saga[Any]], state: SagaState, given: Input, now: datetime) -> Decision:
    d = Moves(saga, state, now)
    _HANDLERS[type(given)](d, given)
    return d.result()


def _start(d: Moves, given: Start) -> None:
    if d.state.version:
        raise SagaError(f"saga {d.state.saga_id} has already started")
    d.emit(
        SagaStarted(
            saga_type=given.saga_type,
            key=given.key,
            data=given.data,
            parent=given.parent,
            saga_version=d.saga.version,
            fingerprint=d.saga.fingerprint(),
            traceparent=given.traceparent,
        )
    )
    d.advance()


def _reply(d: Moves, given: Reply) -> None:
    """A reply moves the saga only if it answers what the saga awaits on its step right now (a
    step renamed by a migration since its request went out answers under its new name)."""
    step_name = d.state.renamed.get(given.step, given.step) if given.step is not None else None
    waiting = d.state.waiting_on(step_name) if step_name is not None else None
    got = (step_name, given.phase, given.attempt)
    if (
        d.state.terminal
        or waiting is None
        or waiting.kind != "reply"
        or got != (waiting.step, waiting.phase, waiting.attempt)
    ):
        _ignore(d, given, _awaited(d.state))
        return
    if d.parks(f"reply {given.message_type} to {waiting.step}/{waiting.phase} #{waiting.attempt}"):
        return
    step = d.saga.step(waiting.step)
    if isinstance(given.message, StepRefused) and not issubclass(step, ChildSaga | WaitStep):
        d.failed(step, waiting.phase, waiting.attempt, given.message.reason)
    elif issubclass(step, ChildSaga):
        _child_ended(d, given, step, waiting)
    elif issubclass(step, RemoteStep):
        _remote_reply(d, given, step, waiting)
    else:
        _ignore(d, given, f"{step.name} takes no reply")
        return
    d.go_on()


def _remote_reply(d: Moves, given: Reply, step: type[RemoteStep[Any]], waiting: Awaiting) -> None:
    expected = step.expected_reply(waiting.phase)
    if expected is None or not isinstance(given.message, expected):
        wanted = "no reply" if expected is None else expected.__name__
        _ignore(
            d, given, f"{given.message_type} is not the reply {step.name}/{waiting.phase} expects ({wanted})"
        )
        return
    new_data = d.state.data
    if waiting.phase == "action":
        new_data = step().on_reply(d.data(), given.message).model_dump(mode="json")
    d.succeeded(step, waiting.phase, waiting.attempt, new_data)


def _child_ended(d: Moves, given: Reply, step: type[ChildSaga[Any]], waiting: Awaiting) -> None:
    """The child's outcome decides the step: completed, it succeeded; compensated, it failed
    (or, asked to undo itself, the step is compensated)."""
    ended = given.message
    child = d.state.children.get(step.name)
    if not isinstance(ended, ChildEnded) or ended.child_id != child:
        _ignore(d, given, f"{given.message_type} is not the end of {step.name}'s child saga {child}")
        return
    if waiting.phase == "compensation":
        if ended.outcome == "compensated":
            d.succeeded(step, waiting.phase, waiting.attempt, d.state.data)
        else:
            _ignore(d, given, f"child saga {child} ended {ended.outcome} while asked to compensate")
        return
    if ended.outcome == "compensated":
        d.failed(
            step,
            "action",
            waiting.attempt,
            f"child saga {step.saga.name} {child} compensated: {ended.reason}",
        )
        return
    result = step.saga.data_model.model_validate(ended.data)
    new = step().on_child_completed(d.data(), result)
    d.succeeded(step, "action", waiting.attempt, new.model_dump(mode="json"))


def _ignore(d: Moves, given: Reply, reason: str) -> None:
    d.emit(ReplyIgnored(step=given.step, phase=given.phase, attempt=given.attempt, reason=reason))


def _awaited(state: SagaState) -> str:
    if not state.waiting:
        return f"while {state.status}, awaiting nothing"
    what = ", ".join(f"{w.step}/{w.phase} attempt {w.attempt} ({w.kind})" for w in state.waiting)
    return f"while {state.status}, awaiting {what}"


def _signal(d: Moves, given: Signal) -> None:
    """Kept until a wait takes it; taken at once by a wait the saga is at. Like any input that
    may move the saga, it parks one whose definition lacks a step it needs (and is kept)."""
    if not d.state.terminal and d.state.status != "parked":
        d.parks(f"signal {given.message_type} {given.message_id}")
    who = takers(d.saga, d.state, given.message)
    d.emit(
        SignalReceived(
            message_type=given.message_type,
            message_id=given.message_id,
            data=given.message.model_dump(mode="json"),
            model=type(given.message).__name__,
            takers=who,
        )
    )
    if not who:
        reason = f"no wait ahead takes {given.message_type} (saga {d.state.status})"
        d.emit(SignalIgnored(message_type=given.message_type, message_id=given.message_id, reason=reason))
        return
    for waiting in d.state.waiting:
        step = d.saga.step(waiting.step) if d.saga.has_step(waiting.step) else None
        if (
            step is not None
            and issubclass(step, WaitStep)
            and waiting.step in who
            and d.state.status in ("running", "failed")  # failed: a group member still waits
        ):
            d.take(step, kept_for(d.state, step.name)[-1])
            d.go_on()
            return


def _deadline(d: Moves, given: DeadlineDue) -> None:
    waiting = d.state.waiting_on(given.step)
    if waiting is None or (waiting.phase, waiting.attempt, waiting.kind) != (
        given.phase,
        given.attempt,
        given.kind,
    ):
        return  # the saga moved on: a stale deadline changes nothing
    what = {"reply": "reply timeout", "retry": "scheduled retry", "timer": "timer"}[given.kind]
    if d.parks(f"{what} of {given.step}/{given.phase} #{given.attempt}"):
        return
    step = d.saga.step(given.step)
    if given.kind == "retry":
        d.run(step, given.phase, given.attempt)
    elif given.kind == "timer":
        d.emit(StepSucceeded(step=step.name, attempt=given.attempt, data=d.state.data))
    else:
        d.timed_out(step, given.phase, given.attempt)
    d.go_on()


def _awaits_local(d: Moves, step: str, phase: str, attempt: int) -> type[Step[Any]]:
    waiting = d.state.waiting_on(step)
    if waiting is None or (waiting.phase, waiting.attempt) != (phase, attempt):
        raise SagaError(f"saga {d.state.saga_id}: local step {step}/{phase} #{attempt} was not running")
    return d.saga.step(step)


def _local_done(d: Moves, given: LocalDone) -> None:
    step = _awaits_local(d, given.step, given.phase, given.attempt)
    new_data = d.state.data if given.data is None else given.data
    d.succeeded(step, given.phase, given.attempt, new_data)
    d.go_on()


def _local_failed(d: Moves, given: LocalFailed) -> None:
    step = _awaits_local(d, given.step, given.phase, given.attempt)
    d.failed(step, given.phase, given.attempt, given.reason)
    d.go_on()


def _compensate_request(d: Moves, given: CompensateRequest) -> None:
    """A parent asks its child to undo itself: a completed child re-opens and runs its own
    compensations; its end (compensated) answers the parent's request."""
    state = d.state
    if state.parent is None:
        raise SagaError(f"saga {state.saga_id} has no parent saga: a request to compensate it is refused")
    assert given.phase in ("action", "compensation")
    phase = "compensation" if given.phase == "compensation" else "action"
    d.emit(CompensationRequested(step=given.step, phase=phase, attempt=given.attempt, reason=given.reason))
    if state.status in ("completed", "running"):
        d.begin_compensation(f"the parent saga asked: {given.reason}")
        d.go_on()
    elif state.status == "compensated":
        assert d.state.parent is not None
        d.answer_parent(d.state.parent)
    # compensating: its end answers the request; stopped or parked: it waits for an operator


def _resume(d: Moves, given: Resume) -> None:
    """A parked saga is taken up again only once the definition has its steps; any other
    saga is parked first if the definition lacks them. One parked because its version was not
    deployed goes on as it was: the messages deferred meanwhile are decided on next."""
    parked = d.state.parked
    if parked is not None and parked.saga_version is not None:
        d.emit(SagaUnparked(note=given.note))
        return
    if d.state.status == "parked":
        missing = missing_steps(d.saga, d.state)
        if missing:
            raise SagaError(f"saga {d.state.saga_id} stays parked: {park_reason(d.saga, d.state, missing)}")
        d.emit(SagaUnparked())
    elif not d.state.terminal and d.parks(f"operator resume: {given.note}"):
        return
    _take_up(d, given)


def _take_up(d: Moves, given: Resume) -> None:
    status, waiting = d.state.status, list(d.state.waiting)
    if status == "failed":
        d.emit(OperatorResumed(note=given.note))
        for step in _stopped_at(d.saga, d.state):
            d.run(step, "action", d.state.attempt_of("action", step.name) + 1)
    elif status == "compensation_failed":
        d.emit(OperatorResumed(note=given.note))
    elif status in ("running", "compensating") and waiting:
        d.emit(OperatorResumed(note=given.note))
        for w in waiting:
            # A scheduled retry runs now as the attempt it was to be: none is skipped, so the
            # fresh budget is whole. A command is sent again; a child, a wait or a timer waits on.
            step = d.saga.step(w.step)
            if w.kind == "retry":
                d.run(step, w.phase, w.attempt)
            elif w.kind == "reply" and issubclass(step, RemoteStep):
                d.run(step, w.phase, w.attempt + 1)
    else:
        raise SagaError(f"saga {d.state.saga_id} is {status}: there is nothing to resume or retry")
    for w in list(d.state.waiting):  # a wait takes what was kept while the saga was parked
        step = d.saga.step(w.step)
        if w.kind == "reply" and issubclass(step, WaitStep) and kept_for(d.state, w.step):
            d.take(step, kept_for(d.state, w.step)[0])
    d.go_on()


def _stopped_at(saga: type[Saga[Any]], state: SagaState) -> list[type[Step[Any]]]:
    """The steps a failed saga runs again: those of the node it stands at (a group's members
    too) that neither succeeded nor are in flight. One that timed out counts as done (so that
    compensation would undo it) but never succeeded: going on past it is not safe."""
    succeeded = set(state.done) - set(state.timed_out)
    node = next((n for n in saga.nodes() if any(s.name not in succeeded for s in n)), ())
    return [s for s in node if s.name not in succeeded and state.waiting_on(s.name) is None]


def _migrate(d: Moves, given: Migrate) -> None:
    """Move the saga to this version, as planned (saga._migrate); a parked saga goes on."""
    if not given.plan.ok:
        raise SagaError(f"saga {d.state.saga_id} cannot be migrated: {'; '.join(given.plan.problems)}")
    d.emit(migrated_event(d.state, d.saga, given.plan, given.note))
    if d.state.status == "parked":
        _resume(d, Resume(f"migrated to version {d.saga.version}: {given.note}"))


_HANDLERS: dict[type[Any], Callable[[Moves, Any], None]] = {
    Start: _start,
    Reply: _reply,
    Signal: _signal,
    DeadlineDue: _deadline,
    LocalDone: _local_done,
    LocalFailed: _local_failed,
    Resume: _resume,
    CompensateRequest: _compensate_request,
    Migrate: _migrate,
}

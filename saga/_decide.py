"""The decider: `decide(saga, state, input, now) -> Decision`. Pure: no I/O, no clock, no randomness.

Every way a saga moves is an input: it starts, a reply arrives, a deadline falls due, a local
step the orchestrator ran reports back, an operator resumes it. The decision says what
happened (the events to append, which fold into `Decision.state`), the commands to send,
the deadline the saga now waits on, and a local step to run. The orchestrator runs that
step (the only I/O between two decisions) and decides again with its result.

Replies carry (step, phase, attempt). A reply that does not answer what the saga awaits
right now (a duplicate, a late reply after a timeout re-sent the command, a reply after
compensation began, one for a finished saga) is recorded as `ReplyIgnored` and changes
nothing else: a saga never moves twice on one outcome. A late success after a timeout is
safe because the timed-out step is compensated anyway (its outcome was unknown), so
compensations must accept "nothing to undo".

A saga whose history names a step that the deployed definition lacks (a step renamed or
removed while the saga ran) is parked rather than moved: `SagaParked` records why, its
deadline is cleared, and only an operator's resume, under a definition with those steps,
takes it up again. Moving it would guess (a renamed step looks like one not yet run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from saga._decision import (
    Deadline,
    DeadlineDue,
    Decision,
    Input,
    LocalDone,
    LocalFailed,
    Reply,
    Resume,
    RunLocal,
    SendCommand,
    Start,
)
from saga._definition import LocalStep, RemoteStep, RetryPolicy, Saga, Step, StepKind
from saga._errors import SagaError
from saga._parking import missing_steps, park_reason
from saga._protocol import StepRefused, command_id
from saga._state import (
    CompensationFailed,
    CompensationStarted,
    OperatorResumed,
    Phase,
    ReplyIgnored,
    RetryScheduled,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaParked,
    SagaStarted,
    SagaState,
    SagaUnparked,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    apply,
)


def decide(saga: type[Saga[Any]], state: SagaState, given: Input, now: datetime) -> Decision:
    d = _Decider(saga, state, now)
    _HANDLERS[type(given)](d, given)
    return d.result()


def deadline_of(saga: type[Saga[Any]], state: SagaState, now: datetime) -> Deadline | None:
    """The deadline a saga waits on: a scheduled retry, or a reply with a timeout."""
    waiting = state.awaiting
    if waiting is None:
        return None
    if waiting.kind == "retry":
        assert waiting.due_at is not None
        due = waiting.due_at
    else:
        timeout = saga.step(waiting.step).timeout_s
        if timeout is None:
            return None
        due = now + timedelta(seconds=timeout)
    return Deadline(waiting.step, waiting.phase, waiting.attempt, waiting.kind, due)


def jitter(saga_id: str, step: str, phase: str, attempt: int) -> float:
    """A number in [0, 1) fixed by the retry it spreads: pure, yet different per saga."""
    digest = hashlib.blake2b(f"{saga_id}\x00{step}\x00{phase}\x00{attempt}".encode(), digest_size=8)
    return int.from_bytes(digest.digest()) / 2**64


@dataclass
class _Decider:
    saga: type[Saga[Any]]
    state: SagaState
    now: datetime
    events: list[BaseModel] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    local: RunLocal | None = None

    def __post_init__(self) -> None:
        self.awaiting_before = self.state.awaiting

    def result(self) -> Decision:
        changed = self.state.awaiting != self.awaiting_before
        return Decision(
            state=self.state,
            events=tuple(self.events),
            commands=tuple(self.commands),
            deadline=deadline_of(self.saga, self.state, self.now) if changed else None,
            deadline_changed=changed,
            local=self.local,
        )

    def emit(self, event: BaseModel) -> None:
        self.events.append(event)
        self.state = apply(self.state, event)

    def data(self) -> Any:
        return self.saga.data_model.model_validate(self.state.data)

    def parks(self, cause: str) -> bool:
        """Park the saga if the definition lacks a step it needs; before anything else is decided."""
        missing = missing_steps(self.saga, self.state)
        if not missing:
            return False
        self.emit(
            SagaParked(missing=missing, cause=cause, reason=park_reason(self.saga, self.state, missing))
        )
        return True

    # --- forward ---------------------------------------------------------------------------

    def advance(self) -> None:
        """Start the next step, or complete the saga when none is left."""
        if self.state.status != "running" or self.state.awaiting is not None:
            return
        pending = [s for s in self.saga.steps if s.name not in self.state.done]
        if not pending:
            self.emit(SagaCompleted())
            return
        step = pending[0]
        self.run(step, "action", self.state.attempt_of("action", step.name) + 1)

    def run(self, step: type[Step[Any]], phase: Phase, attempt: int) -> None:
        """Start `attempt` of a step's action or compensation."""
        if issubclass(step, LocalStep):
            self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt))
            self.local = RunLocal(step.name, phase, attempt)
            return
        assert issubclass(step, RemoteStep)
        command = step().command(self.data()) if phase == "action" else step().compensation(self.data())
        if command is None and phase == "action":
            raise SagaError(
                f"saga {self.saga.name}: step {step.name}: command() returned None, not a message"
            )
        if command is None:  # nothing to undo for this data
            self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt))
            self.emit(StepCompensated(step=step.name, attempt=attempt))
            self.compensate()
            return
        message_id = command_id(self.state.saga_id, step.name, phase, attempt)
        self.commands.append(SendCommand(step.name, phase, attempt, step.participant, command, message_id))
        self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt, message_id=str(message_id)))

    def succeeded(self, step: type[Step[Any]], phase: Phase, attempt: int, new_data: dict[str, Any]) -> None:
        if phase == "compensation":
            self.emit(StepCompensated(step=step.name, attempt=attempt))
            self.compensate()
            return
        self.emit(StepSucceeded(step=step.name, attempt=attempt, data=new_data))
        self.advance()

    def failed(self, step: type[Step[Any]], phase: Phase, attempt: int, reason: str) -> None:
        self.emit(StepFailed(step=step.name, phase=phase, attempt=attempt, reason=reason))
        if phase == "compensation":
            self.retry_or(step, phase, attempt, step.compensation_retry, CompensationFailed, reason)
        elif step.kind is StepKind.RETRIABLE:
            self.retry_or(step, phase, attempt, step.retry, SagaFailed, reason)
        else:
            self.begin_compensation(f"{step.name} failed: {reason}")

    def timed_out(self, step: type[Step[Any]], phase: Phase, attempt: int) -> None:
        self.emit(StepTimedOut(step=step.name, phase=phase, attempt=attempt))
        reason = f"no reply within {step.timeout_s}s"
        if phase == "compensation":
            self.retry_or(step, phase, attempt, step.compensation_retry, CompensationFailed, reason)
        elif self.budget_left(step, phase, attempt, step.retry):
            self.run(step, phase, attempt + 1)  # send again: participants are idempotent per saga
        elif step.kind is not StepKind.COMPENSATABLE:
            # A pivot or retriable step may have taken effect and cannot be undone: stop where
            # an operator sees it rather than compensate around an outcome nobody knows.
            unknown = f"{reason}; outcome unknown after {attempt} attempt(s)"
            self.emit(SagaFailed(step=step.name, reason=unknown))
        else:
            self.begin_compensation(f"{step.name} timed out after {attempt} attempt(s)")

    def budget_left(self, step: type[Step[Any]], phase: Phase, attempt: int, policy: RetryPolicy) -> bool:
        base = self.state.retry_base.get(f"{phase}:{step.name}", 0)
        return attempt - base < policy.attempts

    def retry_or(
        self,
        step: type[Step[Any]],
        phase: Phase,
        attempt: int,
        policy: RetryPolicy,
        give_up: type[CompensationFailed] | type[SagaFailed],
        reason: str,
    ) -> None:
        if self.budget_left(step, phase, attempt, policy):
            rand = jitter(self.state.saga_id, step.name, phase, attempt + 1)
            due = self.now + timedelta(seconds=policy.delay_s(attempt + 1, rand))
            self.emit(RetryScheduled(step=step.name, phase=phase, attempt=attempt + 1, due_at=due))
        else:
            self.emit(give_up(step=step.name, reason=reason))

    def go_on(self) -> None:
        """Go on in whichever direction the saga is going."""
        if self.state.status == "compensating":
            self.compensate()
        else:
            self.advance()

    # --- backward --------------------------------------------------------------------------

    def begin_compensation(self, reason: str) -> None:
        undo = [s for s in reversed(self.state.done) if self.saga.step(s).has_compensation()]
        self.emit(CompensationStarted(steps=undo, reason=reason))
        self.compensate()

    def compensate(self) -> None:
        """Undo the next step that took effect, in reverse order; when none is left, done."""
        if self.state.status != "compensating" or self.state.awaiting is not None:
            return
        if not self.state.to_compensate:
            self.emit(SagaCompensated())
            return
        step = self.saga.step(self.state.to_compensate[0])
        self.run(step, "compensation", self.state.attempt_of("compensation", step.name) + 1)


# --- one handler per input ---------------------------------------------------------------


def _start(d: _Decider, given: Start) -> None:
    if d.state.version:
        raise SagaError(f"saga {d.state.saga_id} has already started")
    d.emit(SagaStarted(saga_type=given.saga_type, key=given.key, data=given.data))
    d.advance()


def _reply(d: _Decider, given: Reply) -> None:
    """A reply moves the saga only if it answers what the saga awaits right now."""
    waiting = d.state.awaiting
    got = (given.step, given.phase, given.attempt)
    if (
        d.state.terminal
        or waiting is None
        or waiting.kind != "reply"
        or got != (waiting.step, waiting.phase, waiting.attempt)
    ):
        now = "nothing" if waiting is None else f"{waiting.step}/{waiting.phase} attempt {waiting.attempt}"
        kind = "" if waiting is None else f" ({waiting.kind})"
        reason = f"{given.message_type} while {d.state.status}, awaiting {now}{kind}"
        d.emit(ReplyIgnored(step=given.step, phase=given.phase, attempt=given.attempt, reason=reason))
        return
    if d.parks(f"reply {given.message_type} to {waiting.step}/{waiting.phase} #{waiting.attempt}"):
        return
    step = d.saga.step(waiting.step)
    if isinstance(given.message, StepRefused):
        d.failed(step, waiting.phase, waiting.attempt, given.message.reason)
        return
    expected = step.expected_reply(waiting.phase) if issubclass(step, RemoteStep) else None
    if expected is None or not isinstance(given.message, expected):
        wanted = "no reply" if expected is None else expected.__name__
        reason = f"{given.message_type} is not the reply {step.name}/{waiting.phase} expects ({wanted})"
        d.emit(ReplyIgnored(step=given.step, phase=given.phase, attempt=given.attempt, reason=reason))
        return
    new_data = d.state.data
    if waiting.phase == "action" and issubclass(step, RemoteStep):
        new_data = step().on_reply(d.data(), given.message).model_dump(mode="json")
    d.succeeded(step, waiting.phase, waiting.attempt, new_data)


def _deadline(d: _Decider, given: DeadlineDue) -> None:
    waiting = d.state.awaiting
    if waiting is None or (waiting.step, waiting.phase, waiting.attempt, waiting.kind) != (
        given.step,
        given.phase,
        given.attempt,
        given.kind,
    ):
        return  # the saga moved on: a stale deadline changes nothing
    what = "reply timeout" if given.kind == "reply" else "scheduled retry"
    if d.parks(f"{what} of {given.step}/{given.phase} #{given.attempt}"):
        return
    step = d.saga.step(given.step)
    if given.kind == "retry":
        d.run(step, given.phase, given.attempt)
    else:
        d.timed_out(step, given.phase, given.attempt)
    d.go_on()


def _awaits_local(d: _Decider, step: str, phase: Phase, attempt: int) -> type[Step[Any]]:
    waiting = d.state.awaiting
    if waiting is None or (waiting.step, waiting.phase, waiting.attempt) != (step, phase, attempt):
        raise SagaError(f"saga {d.state.saga_id}: local step {step}/{phase} #{attempt} was not running")
    return d.saga.step(step)


def _local_done(d: _Decider, given: LocalDone) -> None:
    step = _awaits_local(d, given.step, given.phase, given.attempt)
    new_data = d.state.data if given.data is None else given.data
    d.succeeded(step, given.phase, given.attempt, new_data)


def _local_failed(d: _Decider, given: LocalFailed) -> None:
    step = _awaits_local(d, given.step, given.phase, given.attempt)
    d.failed(step, given.phase, given.attempt, given.reason)


def _resume(d: _Decider, given: Resume) -> None:
    """A parked saga is taken up again only once the definition has its steps; any other
    saga is parked first if the definition lacks them."""
    if d.state.status == "parked":
        missing = missing_steps(d.saga, d.state)
        if missing:
            raise SagaError(f"saga {d.state.saga_id} stays parked: {park_reason(d.saga, d.state, missing)}")
        d.emit(SagaUnparked())
    elif not d.state.terminal and d.parks(f"operator resume: {given.note}"):
        return
    _take_up(d, given)


def _take_up(d: _Decider, given: Resume) -> None:
    waiting = d.state.awaiting
    if d.state.status == "failed":
        d.emit(OperatorResumed(note=given.note))
        # The step that stopped the saga runs again. One that timed out counts as done (so that
        # compensation would undo it) but never succeeded: going on past it is not safe.
        assert d.state.last_step is not None
        step = d.saga.step(d.state.last_step)
        d.run(step, "action", d.state.attempt_of("action", step.name) + 1)
    elif d.state.status == "compensation_failed":
        d.emit(OperatorResumed(note=given.note))
    elif d.state.status in ("running", "compensating") and waiting is not None:
        d.emit(OperatorResumed(note=given.note))
        # A scheduled retry runs now as the attempt it was to be: none is skipped, so the
        # fresh budget is whole.
        attempt = waiting.attempt if waiting.kind == "retry" else waiting.attempt + 1
        d.run(d.saga.step(waiting.step), waiting.phase, attempt)
    else:
        raise SagaError(f"saga {d.state.saga_id} is {d.state.status}: there is nothing to resume or retry")
    d.go_on()


_HANDLERS: dict[type[Any], Callable[[_Decider, Any], None]] = {
    Start: _start,
    Reply: _reply,
    DeadlineDue: _deadline,
    LocalDone: _local_done,
    LocalFailed: _local_failed,
    Resume: _resume,
}

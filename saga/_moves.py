"""How a saga moves, for the decider (saga._decide): forward through its steps and groups,
backward through the compensations. Pure: the clock is `now`, given.

Forward, the next node starts when nothing is awaited: a step on its own, or every member of
a group in one decision. Backward, steps that took effect are undone one at a time in reverse
order; while members of a group are still in flight, only their siblings are undone, and the
earlier steps wait until every member answered or timed out (one that succeeds then is undone
first: `CompensationAdded`). Waits and timers of a group being compensated stop waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from saga._decision import Deadline, Decision, RunLocal, SendCommand, StartChild
from saga._definition import LocalStep, RemoteStep, RetryPolicy, Saga, Step, StepKind
from saga._errors import SagaError
from saga._events import (
    CompensationAdded,
    CompensationFailed,
    CompensationStarted,
    ParentRef,
    Phase,
    RetryScheduled,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaParked,
    SignalConsumed,
    SignalIgnored,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    TimerSet,
    WaitCancelled,
)
from saga._language import ChildSaga, TimerStep, WaitStep
from saga._parking import missing_steps, park_reason
from saga._protocol import ChildEnded, CompensateSaga, child_id_for, command_id
from saga._signals import kept_for, taken
from saga._state import Awaiting, KeptSignal, SagaState, apply
from saga._timing import deadline_changes, jitter

# A member that answers late is undone too, even while a sibling's undo waits for an operator.
_GOING_BACK = ("compensating", "compensation_failed")


@dataclass
class Moves:
    saga: type[Saga[Any]]
    state: SagaState
    now: datetime
    events: list[BaseModel] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    children: list[StartChild] = field(default_factory=list)
    local: RunLocal | None = None

    def __post_init__(self) -> None:
        self.before = self.state

    def result(self) -> Decision:
        self.notify_parent()
        deadlines, cleared = deadline_changes(self.saga, self.before.waiting, self.state.waiting, self.now)
        return Decision(
            state=self.state,
            events=tuple(self.events),
            commands=tuple(self.commands),
            deadlines=deadlines,
            cleared=cleared,
            local=self.local,
            children=tuple(self.children),
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

    def go_on(self) -> None:
        """Go on in whichever direction the saga is going."""
        if self.state.status == "compensating":
            self.compensate()
        elif self.state.status == "running":
            self.advance()

    # --- forward ---------------------------------------------------------------------------

    def advance(self) -> None:
        """Start the next node (a step, or every member of a group), or complete the saga."""
        while self.state.status == "running" and not self.state.waiting and self.local is None:
            done = set(self.state.done)
            pending = next((n for n in self.saga.nodes() if any(s.name not in done for s in n)), None)
            if pending is None:
                self.emit(SagaCompleted())
                return
            for step in pending:
                if step.name not in done:
                    self.run(step, "action", self.state.attempt_of("action", step.name) + 1)

    def run(self, step: type[Step[Any]], phase: Phase, attempt: int) -> None:
        """Start `attempt` of a step's action or compensation (some end at once: a wait whose
        signal was kept, a timer already due, a compensation with nothing to undo)."""
        if issubclass(step, LocalStep):
            self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt))
            self.local = RunLocal(step.name, phase, attempt)
        elif issubclass(step, RemoteStep):
            self.run_remote(step, phase, attempt)
        elif issubclass(step, ChildSaga):
            self.run_child(step, phase, attempt)
        elif issubclass(step, WaitStep):
            self.run_wait(step, attempt)
        elif issubclass(step, TimerStep):
            self.run_timer(step, attempt)
        else:  # pragma: no cover - the definition checks forbid it
            raise SagaError(f"saga {self.saga.name}: step {step.name} is of no kind the decider knows")

    def run_remote(self, step: type[RemoteStep[Any]], phase: Phase, attempt: int) -> None:
        command = step().command(self.data()) if phase == "action" else step().compensation(self.data())
        if command is None and phase == "action":
            raise SagaError(
                f"saga {self.saga.name}: step {step.name}: command() returned None, not a message"
            )
        if command is None:  # nothing to undo for this data
            self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt))
            self.emit(StepCompensated(step=step.name, attempt=attempt))
            return
        message_id = command_id(self.state.saga_id, step.name, phase, attempt)
        self.commands.append(SendCommand(step.name, phase, attempt, step.participant, command, message_id))
        self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt, message_id=str(message_id)))

    def run_child(self, step: type[ChildSaga[Any]], phase: Phase, attempt: int) -> None:
        me = self.state
        if phase == "compensation":
            child_id = me.children[step.name]
            reason = me.compensation_reason or "the parent saga is compensated"
            request = CompensateSaga(reason=reason, step=step.name, phase=phase, attempt=attempt)
            message_id = command_id(me.saga_id, step.name, phase, attempt)
            send = SendCommand(step.name, phase, attempt, "", request, message_id, step.saga.name, child_id)
            self.commands.append(send)
            self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt, message_id=str(message_id)))
            return
        data = step().start(self.data())
        if not isinstance(data, step.saga.data_model):
            raise SagaError(
                f"saga {self.saga.name}: step {step.name}: start() returned {type(data).__name__}, "
                f"not the child saga {step.saga.name}'s data ({step.saga.data_model.__name__})"
            )
        child_id = child_id_for(me.saga_id, step.name, attempt)
        parent = ParentRef(
            saga_id=me.saga_id, saga_type=me.saga_type, step=step.name, phase=phase, attempt=attempt
        )
        self.children.append(
            StartChild(
                step.name,
                attempt,
                step.saga.name,
                child_id,
                data.model_dump(mode="json"),
                parent,
                step.saga.version,
            )
        )
        self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt, child_id=child_id))

    def run_wait(self, step: type[WaitStep[Any]], attempt: int) -> None:
        self.emit(StepRequested(step=step.name, phase="action", attempt=attempt))
        kept = kept_for(self.state, step.name)
        if kept:
            self.take(step, kept[0])
            for other in kept[1:]:
                if not [t for t in other.takers if t != step.name and t not in self.state.done]:
                    reason = f"{step.name} took {kept[0].message_type} {kept[0].message_id} first"
                    self.emit(
                        SignalIgnored(
                            message_type=other.message_type, message_id=other.message_id, reason=reason
                        )
                    )

    def take(self, step: type[WaitStep[Any]], signal: KeptSignal) -> None:
        """A wait takes a signal: the step succeeds with the data `on_signal` makes of it."""
        self.emit(
            SignalConsumed(step=step.name, message_type=signal.message_type, message_id=signal.message_id)
        )
        new = step().on_signal(self.data(), taken(step, signal))
        attempt = self.state.attempt_of("action", step.name)
        self.emit(StepSucceeded(step=step.name, attempt=attempt, data=_dumped(self.saga, step, new)))

    def run_timer(self, step: type[TimerStep[Any]], attempt: int) -> None:
        due = step().due(self.data(), self.now)
        if not isinstance(due, datetime) or due.tzinfo is None:
            raise SagaError(
                f"saga {self.saga.name}: step {step.name}: the timer's time must be a datetime with a "
                f"timezone (e.g. datetime.now(UTC) + timedelta(hours=1)), got {due!r}"
            )
        self.emit(TimerSet(step=step.name, attempt=attempt, due_at=due))
        if due <= self.now:
            self.emit(StepSucceeded(step=step.name, attempt=attempt, data=self.state.data))

    def after_pivot(self, step: type[Step[Any]]) -> bool:
        pivot = self.saga.pivot_index()
        return pivot is not None and self.saga.step_index(step.name) > pivot

    def succeeded(self, step: type[Step[Any]], phase: Phase, attempt: int, new_data: dict[str, Any]) -> None:
        if phase == "compensation":
            self.emit(StepCompensated(step=step.name, attempt=attempt))
            return
        self.emit(StepSucceeded(step=step.name, attempt=attempt, data=new_data))
        if self.state.status in _GOING_BACK and step.has_compensation():
            self.emit(CompensationAdded(step=step.name))  # a group member that answered late

    def failed(self, step: type[Step[Any]], phase: Phase, attempt: int, reason: str) -> None:
        self.emit(StepFailed(step=step.name, phase=phase, attempt=attempt, reason=reason))
        self.gave_up(step, phase, attempt, reason)

    def gave_up(self, step: type[Step[Any]], phase: Phase, attempt: int, reason: str) -> None:
        """What a failure of `step` leads to, once it is recorded."""
        if phase == "compensation":
            self.retry_or(step, phase, attempt, step.compensation_retry, CompensationFailed, reason)
        elif self.state.status != "running":
            return  # a group member failing while the group is compensated: nothing to undo
        elif step.kind is StepKind.RETRIABLE:
            self.retry_or(step, phase, attempt, step.retry, SagaFailed, reason)
        elif self.after_pivot(step):
            self.emit(SagaFailed(step=step.name, reason=reason))  # a wait timing out after the pivot
        else:
            self.begin_compensation(f"{step.name} failed: {reason}")

    def timed_out(self, step: type[Step[Any]], phase: Phase, attempt: int) -> None:
        if issubclass(step, WaitStep):
            self.failed(step, phase, attempt, f"no signal within {step.timeout_s}s")
            return
        self.emit(StepTimedOut(step=step.name, phase=phase, attempt=attempt))
        reason = f"no reply within {step.timeout_s}s"
        if phase == "compensation":
            self.retry_or(step, phase, attempt, step.compensation_retry, CompensationFailed, reason)
        elif self.state.status in _GOING_BACK:
            if step.has_compensation():
                self.emit(CompensationAdded(step=step.name))  # it may have acted: undo it
        elif self.state.status != "running":
            return
        elif not issubclass(step, ChildSaga) and self.budget_left(step, phase, attempt, step.retry):
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

    # --- backward --------------------------------------------------------------------------

    def begin_compensation(self, reason: str) -> None:
        undo = [s for s in reversed(self.state.done) if self.saga.step(s).has_compensation()]
        self.emit(CompensationStarted(steps=undo, reason=reason))
        for waiting in list(self.state.waiting):
            if issubclass(self.saga.step(waiting.step), WaitStep | TimerStep):
                self.emit(WaitCancelled(step=waiting.step, reason=f"compensating: {reason}"))

    def compensate(self) -> None:
        """Undo the steps that took effect, one at a time, in reverse order; when none is left
        and nothing is in flight, the saga is compensated."""
        while self.state.status == "compensating" and self.local is None:
            waiting = self.state.waiting
            if any(w.phase == "compensation" for w in waiting):
                return
            if not self.state.to_compensate:
                if not waiting:
                    self.emit(SagaCompensated())
                return
            step = self.saga.step(self.state.to_compensate[0])
            if not self.may_undo_now(step, waiting):
                return
            self.run(step, "compensation", self.state.attempt_of("compensation", step.name) + 1)

    def may_undo_now(self, step: type[Step[Any]], in_flight: list[Awaiting]) -> bool:
        """While group members are in flight, only their siblings are undone."""
        node = self.saga.step_index(step.name)
        return all(self.saga.step_index(w.step) == node for w in in_flight)

    # --- a child's end -----------------------------------------------------------------------

    def notify_parent(self) -> None:
        """A child saga that ended (completed or compensated) in this decision tells its parent."""
        state, parent = self.state, self.state.parent
        if parent is None or state.status == self.before.status or not state.terminal:
            return
        self.answer_parent(parent)

    def answer_parent(self, parent: ParentRef) -> None:
        state = self.state
        outcome = "completed" if state.status == "completed" else "compensated"
        reason = state.compensation_reason if outcome == "compensated" else None
        ended = ChildEnded(
            child_id=state.saga_id, saga_type=state.saga_type, outcome=outcome, data=state.data, reason=reason
        )
        message_id = command_id(state.saga_id, f"\x00ended:{parent.step}", parent.phase, parent.attempt)
        self.commands.append(
            SendCommand(
                parent.step,
                parent.phase,
                parent.attempt,
                "",
                ended,
                message_id,
                parent.saga_type,
                parent.saga_id,
            )
        )


def _dumped(saga: type[Saga[Any]], step: type[Step[Any]], new: Any) -> dict[str, Any]:
    if not isinstance(new, saga.data_model):
        raise SagaError(
            f"saga {saga.name}: step {step.name} returned {type(new).__name__}, not {saga.data_model.__name__}"
        )
    dumped: dict[str, Any] = new.model_dump(mode="json")
    return dumped


__all__ = ["Deadline", "Moves"]

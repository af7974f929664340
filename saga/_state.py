"""A saga's events and the fold that turns them into its state.

The stream `saga:<id>` is the only source of truth; `saga_instances` is a projection of it
written in the same transaction. `fold` must stay free of I/O and of clocks: replaying the
same events always gives the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from eventstore import EventRegistry

Phase = Literal["action", "compensation"]
Status = Literal[
    "running", "compensating", "completed", "compensated", "compensation_failed", "failed", "parked"
]
TERMINAL: frozenset[str] = frozenset({"completed", "compensated"})


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class SagaStarted(_Event):
    saga_type: str
    key: str | None
    data: dict[str, Any]


class StepRequested(_Event):
    step: str
    phase: Phase
    attempt: int
    message_id: str | None = None  # the command sent, for a remote step


class StepSucceeded(_Event):
    step: str
    attempt: int
    data: dict[str, Any]


class StepFailed(_Event):
    step: str
    phase: Phase
    attempt: int
    reason: str


class StepTimedOut(_Event):
    step: str
    phase: Phase
    attempt: int


class RetryScheduled(_Event):
    step: str
    phase: Phase
    attempt: int  # the attempt that will run
    due_at: datetime


class CompensationStarted(_Event):
    steps: list[str]  # to undo, in this order
    reason: str


class StepCompensated(_Event):
    step: str
    attempt: int


class ReplyIgnored(_Event):
    step: str | None
    phase: str | None
    attempt: int | None
    reason: str


class SagaCompleted(_Event):
    pass


class SagaCompensated(_Event):
    pass


class CompensationFailed(_Event):
    step: str
    reason: str


class SagaFailed(_Event):
    step: str
    reason: str


class OperatorResumed(_Event):
    note: str


class SagaParked(_Event):
    """The deployed definition lacks steps this saga needs: it stands still, with the reason,
    until an operator resumes it under a definition that has them."""

    missing: list[str]
    cause: str  # what was to move the saga: a reply, a deadline, a resume
    reason: str


class SagaUnparked(_Event):
    """An operator's resume found every step again: the saga is back where it was parked."""


def saga_event_registry() -> EventRegistry:
    registry = EventRegistry()
    events: list[tuple[type[BaseModel], str]] = [
        (SagaStarted, "saga.started"),
        (StepRequested, "saga.step_requested"),
        (StepSucceeded, "saga.step_succeeded"),
        (StepFailed, "saga.step_failed"),
        (StepTimedOut, "saga.step_timed_out"),
        (RetryScheduled, "saga.retry_scheduled"),
        (CompensationStarted, "saga.compensation_started"),
        (StepCompensated, "saga.step_compensated"),
        (ReplyIgnored, "saga.reply_ignored"),
        (SagaCompleted, "saga.completed"),
        (SagaCompensated, "saga.compensated"),
        (CompensationFailed, "saga.compensation_failed"),
        (SagaFailed, "saga.failed"),
        (OperatorResumed, "saga.operator_resumed"),
        (SagaParked, "saga.parked"),
        (SagaUnparked, "saga.unparked"),
    ]
    for model, name in events:
        registry.register(model, name)
    return registry


class Awaiting(BaseModel):
    """What the saga waits for: a reply to this step's attempt, or a retry to run."""

    model_config = ConfigDict(frozen=True)

    step: str
    phase: Phase
    attempt: int
    kind: Literal["reply", "retry"] = "reply"
    due_at: datetime | None = None  # when a retry runs


class Parked(BaseModel):
    """Why a saga is parked, and what it was doing then (restored when it is resumed)."""

    model_config = ConfigDict(frozen=True)

    reason: str
    status: Status
    awaiting: Awaiting | None = None


class StateFields(BaseModel):
    """What a saga's state holds; `SagaState` keeps the data as stored (JSON), the state
    `Orchestrator.load` returns holds it as the saga's data model."""

    saga_id: str
    saga_type: str = ""
    key: str | None = None
    status: Status = "running"
    data: Any = None
    done: list[str] = []  # steps that took effect (or may have: a timed-out remote step), in order
    timed_out: list[str] = []  # those of `done` that only may have: no reply came, none since
    to_compensate: list[str] = []  # what compensation has left, next first
    awaiting: Awaiting | None = None
    attempts: dict[str, int] = {}  # "<phase>:<step>" -> attempts started
    retry_base: dict[str, int] = {}  # attempts already spent when an operator last resumed
    last_step: str | None = None
    last_error: str | None = None
    compensation_reason: str | None = None  # why the latest compensation began
    parked: Parked | None = None
    version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def attempt_of(self, phase: Phase, step: str) -> int:
        return self.attempts.get(f"{phase}:{step}", 0)


class SagaState(StateFields):
    """The fold of a saga's events (see `fold`), its data as stored."""

    data: dict[str, Any] = {}


def _started(s: SagaState, e: SagaStarted) -> dict[str, Any]:
    return {"saga_type": e.saga_type, "key": e.key, "data": e.data, "status": "running"}


def _requested(s: SagaState, e: StepRequested) -> dict[str, Any]:
    attempts = {**s.attempts, f"{e.phase}:{e.step}": e.attempt}
    return {
        "awaiting": Awaiting(step=e.step, phase=e.phase, attempt=e.attempt),
        "attempts": attempts,
        "last_step": e.step,
    }


def _succeeded(s: SagaState, e: StepSucceeded) -> dict[str, Any]:
    done = s.done if e.step in s.done else [*s.done, e.step]
    timed_out = [step for step in s.timed_out if step != e.step]
    return {"data": e.data, "done": done, "timed_out": timed_out, "awaiting": None, "last_step": e.step}


def _failed(s: SagaState, e: StepFailed) -> dict[str, Any]:
    return {"awaiting": None, "last_error": f"{e.step}: {e.reason}", "last_step": e.step}


def _timed_out(s: SagaState, e: StepTimedOut) -> dict[str, Any]:
    # The participant may have acted: a remote action whose reply never came counts as done,
    # so that compensation undoes it (its compensation must tolerate "nothing to undo").
    if e.phase == "compensation" or e.step in s.done:
        done, timed_out = s.done, s.timed_out
    else:
        done, timed_out = [*s.done, e.step], [*s.timed_out, e.step]
    return {
        "awaiting": None,
        "done": done,
        "timed_out": timed_out,
        "last_error": f"{e.step}: timed out (attempt {e.attempt})",
    }


def _retry(s: SagaState, e: RetryScheduled) -> dict[str, Any]:
    waiting = Awaiting(step=e.step, phase=e.phase, attempt=e.attempt, kind="retry", due_at=e.due_at)
    return {"awaiting": waiting}


def _compensation_started(s: SagaState, e: CompensationStarted) -> dict[str, Any]:
    return {
        "status": "compensating",
        "to_compensate": e.steps,
        "awaiting": None,
        "last_error": e.reason,
        "compensation_reason": e.reason,
    }


def _compensated_step(s: SagaState, e: StepCompensated) -> dict[str, Any]:
    rest = [step for step in s.to_compensate if step != e.step]
    return {"to_compensate": rest, "awaiting": None, "last_step": e.step}


def _ignored(s: SagaState, e: ReplyIgnored) -> dict[str, Any]:
    return {}


def _completed(s: SagaState, e: SagaCompleted) -> dict[str, Any]:
    return {"status": "completed", "awaiting": None}


def _compensated(s: SagaState, e: SagaCompensated) -> dict[str, Any]:
    return {"status": "compensated", "awaiting": None}


def _compensation_failed(s: SagaState, e: CompensationFailed) -> dict[str, Any]:
    return {"status": "compensation_failed", "awaiting": None, "last_error": f"{e.step}: {e.reason}"}


def _saga_failed(s: SagaState, e: SagaFailed) -> dict[str, Any]:
    return {"status": "failed", "awaiting": None, "last_error": f"{e.step}: {e.reason}"}


def _resumed(s: SagaState, e: OperatorResumed) -> dict[str, Any]:
    status = _RESUMED_AS.get(s.status, s.status)
    return {"status": status, "retry_base": dict(s.attempts)}


_RESUMED_AS: dict[str, str] = {"compensation_failed": "compensating", "failed": "running"}


def _parked(s: SagaState, e: SagaParked) -> dict[str, Any]:
    # No deadline while parked: what it awaited waits in `parked`, for the resume.
    parked = Parked(reason=e.reason, status=s.status, awaiting=s.awaiting)
    return {"status": "parked", "parked": parked, "awaiting": None, "last_error": e.reason}


def _unparked(s: SagaState, e: SagaUnparked) -> dict[str, Any]:
    if s.parked is None:
        return {}
    return {"status": s.parked.status, "awaiting": s.parked.awaiting, "parked": None}


# Each event's changes to the state; `apply` makes the new state in one copy.
_FOLD: dict[type[BaseModel], Callable[[SagaState, Any], dict[str, Any]]] = {
    SagaStarted: _started,
    StepRequested: _requested,
    StepSucceeded: _succeeded,
    StepFailed: _failed,
    StepTimedOut: _timed_out,
    RetryScheduled: _retry,
    CompensationStarted: _compensation_started,
    StepCompensated: _compensated_step,
    ReplyIgnored: _ignored,
    SagaCompleted: _completed,
    SagaCompensated: _compensated,
    CompensationFailed: _compensation_failed,
    SagaFailed: _saga_failed,
    OperatorResumed: _resumed,
    SagaParked: _parked,
    SagaUnparked: _unparked,
}


def apply(state: SagaState, event: BaseModel) -> SagaState:
    return state.model_copy(update={**_FOLD[type(event)](state, event), "version": state.version + 1})


def fold(saga_id: str, events: Iterable[BaseModel]) -> SagaState:
    state = SagaState(saga_id=saga_id)
    for event in events:
        state = apply(state, event)
    return state

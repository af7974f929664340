"""A saga's events: what happened to it, in its stream `saga:<id>`, and their type names."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from eventstore import EventRegistry

Phase = Literal["action", "compensation"]
DeadlineKind = Literal["reply", "retry", "timer"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class ParentRef(_Event):
    """The parent saga of a child, and the step request of the parent that the child answers."""

    saga_id: str
    saga_type: str
    step: str
    phase: Phase
    attempt: int


class SagaStarted(_Event):
    saga_type: str
    key: str | None
    data: dict[str, Any]
    parent: ParentRef | None = None  # a child saga's parent
    # The version it runs to its end on, and that version's fingerprint then (saga._versions).
    # A saga started before versions were recorded is version 1 with no fingerprint.
    saga_version: int = 1
    fingerprint: str = ""
    # The W3C trace context of the start (its `saga.start` span): each step's span links to it,
    # so a saga that runs for days has no span open that long.
    traceparent: str | None = None


class SagaMigrated(_Event):
    """An operator moved the saga to another version of its definition (`saga migrate`).
    `renamed` maps its old steps' names to the new ones; `data` is its new data, if changed."""

    from_version: int
    to_version: int
    from_fingerprint: str
    to_fingerprint: str
    renamed: dict[str, str] = {}
    dropped: list[str] = []
    data: dict[str, Any] | None = None
    note: str = ""


class TimerSet(_Event):
    """A timer step waits until `due_at` (a durable deadline)."""

    step: str
    attempt: int
    due_at: datetime


class SignalReceived(_Event):
    """A signal came; it is kept until a wait takes it (or ignored, by the next event).
    `takers` are the waits ahead that take its type; `model` its class name among theirs."""

    message_type: str
    message_id: str
    data: dict[str, Any]
    model: str = ""
    takers: list[str] = []


class SignalConsumed(_Event):
    """A wait took a kept signal."""

    step: str
    message_type: str
    message_id: str


class SignalIgnored(_Event):
    """A signal no wait of this saga will take (or one WaitForAny passed over)."""

    message_type: str
    message_id: str
    reason: str


class WaitCancelled(_Event):
    """A wait or a timer of a group stopped waiting: its group is being compensated."""

    step: str
    reason: str


class CompensationAdded(_Event):
    """A step that answered (or timed out) while its group was being compensated is undone next."""

    step: str


class CompensationRequested(_Event):
    """The parent asks this child saga to undo itself; its end answers the parent's request."""

    step: str
    phase: Phase
    attempt: int
    reason: str


class StepRequested(_Event):
    step: str
    phase: Phase
    attempt: int
    message_id: str | None = None  # the command sent, for a remote step
    child_id: str | None = None  # the child saga started, for a child step


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
    """The deployed definition lacks steps this saga needs, or the worker lacks the saga's
    version: it stands still, with the reason, until an operator resumes it under a definition
    that has them (a worker that has the version takes it up by itself)."""

    missing: list[str]
    cause: str  # what was to move the saga: a reply, a deadline, a resume
    reason: str
    saga_version: int | None = None  # set: parked because this version is not deployed


class SagaUnparked(_Event):
    """An operator's resume found every step again, or a worker with the saga's version took
    it up: the saga is back where it was parked."""

    note: str = ""


class InputDeferred(_Event):
    """A message that came while the saga was parked because its version was not deployed:
    kept, and decided on in order once a worker with that version takes the saga up.
    `kind` is reply, signal or compensate (a parent's request to undo this child)."""

    kind: Literal["reply", "signal", "compensate"]
    message_type: str
    message_id: str | None
    data: dict[str, Any]
    step: str | None = None
    phase: str | None = None
    attempt: int | None = None


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
        (TimerSet, "saga.timer_set"),
        (SignalReceived, "saga.signal_received"),
        (SignalConsumed, "saga.signal_consumed"),
        (SignalIgnored, "saga.signal_ignored"),
        (WaitCancelled, "saga.wait_cancelled"),
        (CompensationAdded, "saga.compensation_added"),
        (CompensationRequested, "saga.compensation_requested"),
        (SagaMigrated, "saga.migrated"),
        (InputDeferred, "saga.input_deferred"),
    ]
    for model, name in events:
        registry.register(model, name)
    return registry

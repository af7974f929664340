"""What a saga's state holds: the models the fold (saga._state) builds from its events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from saga._events import DeadlineKind, InputDeferred, ParentRef, Phase

Status = Literal[
    "running", "compensating", "completed", "compensated", "compensation_failed", "failed", "parked"
]
TERMINAL: frozenset[str] = frozenset({"completed", "compensated"})


class Awaiting(BaseModel):
    """What the saga waits for on one step: a reply (or a child's end, or a signal) to this
    attempt, a retry to run, or a timer."""

    model_config = ConfigDict(frozen=True)

    step: str
    phase: Phase
    attempt: int
    kind: DeadlineKind = "reply"
    due_at: datetime | None = None  # when a retry runs or a timer fires


class KeptSignal(BaseModel):
    """A signal that came before a wait took it."""

    model_config = ConfigDict(frozen=True)

    message_type: str
    message_id: str
    data: dict[str, Any]
    model: str = ""
    takers: list[str] = []  # the waits that take it


class Parked(BaseModel):
    """Why a saga is parked, and what it was doing then (restored when it is resumed)."""

    model_config = ConfigDict(frozen=True)

    reason: str
    status: Status
    waiting: list[Awaiting] = []
    saga_version: int | None = None  # set: parked until a worker has this version
    last_error: str | None = None  # the saga's last error before it was parked


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
    waiting: list[Awaiting] = []  # one per step in flight (several in a group), in request order
    attempts: dict[str, int] = {}  # "<phase>:<step>" -> attempts started
    retry_base: dict[str, int] = {}  # attempts already spent when an operator last resumed
    last_step: str | None = None
    last_error: str | None = None
    compensation_reason: str | None = None  # why the latest compensation began
    parked: Parked | None = None
    signals: list[KeptSignal] = []  # signals no wait has taken yet, oldest first
    parent: ParentRef | None = None  # a child saga's parent (and the request it answers)
    children: dict[str, str] = {}  # step -> the child saga it started (its latest attempt)
    saga_version: int = 1  # the version of its definition it runs on (`version` counts events)
    fingerprint: str = ""  # that version's fingerprint when it started, or was migrated
    renamed: dict[str, str] = {}  # a step's name before a migration -> its name now
    deferred: list[InputDeferred] = []  # messages kept while parked for a missing version
    traceparent: str | None = None  # the trace context of its start (`saga.started`)
    version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def awaiting(self) -> Awaiting | None:
        """The first of `waiting` (the only one outside a group)."""
        return self.waiting[0] if self.waiting else None

    def waiting_on(self, step: str) -> Awaiting | None:
        return next((w for w in self.waiting if w.step == step), None)

    def attempt_of(self, phase: Phase, step: str) -> int:
        return self.attempts.get(f"{phase}:{step}", 0)


class SagaState(StateFields):
    """The fold of a saga's events (see `fold`), its data as stored."""

    data: dict[str, Any] = {}


__all__ = ["TERMINAL", "Awaiting", "KeptSignal", "Parked", "SagaState", "StateFields", "Status"]

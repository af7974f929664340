"""What the decider takes and gives: inputs (start, reply, signal, deadline, local-step result,
operator resume, a parent's compensation request) and the Decision (events, commands,
deadlines, local step to run, child sagas to start)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from saga._events import DeadlineKind, ParentRef, Phase
from saga._state import SagaState

if TYPE_CHECKING:
    from saga._migrate import MigrationPlan  # it plans with the definition, above this module

# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    saga_type: str
    data: dict[str, Any]
    key: str | None = None
    parent: ParentRef | None = None  # a child saga: the parent step it answers when it ends
    traceparent: str | None = None  # the trace context of the start, kept in `saga.started`


@dataclass(frozen=True)
class Reply:
    """A participant's answer; (step, phase, attempt) come from its envelope."""

    message_type: str
    message: BaseModel
    step: str | None
    phase: str | None
    attempt: int | None
    message_id: str | None = None


@dataclass(frozen=True)
class DeadlineDue:
    step: str
    phase: Phase
    attempt: int
    kind: DeadlineKind


@dataclass(frozen=True)
class Signal:
    """A message sent to the saga from outside (`App.signal`): a wait takes it, or it is kept."""

    message_type: str
    message: BaseModel
    message_id: str


@dataclass(frozen=True)
class CompensateRequest:
    """A parent saga asks this child to undo itself (its step `step`/`phase` #`attempt`)."""

    reason: str
    step: str
    phase: str
    attempt: int


@dataclass(frozen=True)
class LocalDone:
    """A local step ran; `data` is the saga's new data after an action (None: unchanged)."""

    step: str
    phase: Phase
    attempt: int
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class LocalFailed:
    step: str
    phase: Phase
    attempt: int
    reason: str


@dataclass(frozen=True)
class Resume:
    """Operator: a stopped saga goes on with fresh retry budgets; a waiting one re-sends; a
    parked one goes on where it was parked (refused while the definition still lacks its steps)."""

    note: str


@dataclass(frozen=True)
class Migrate:
    """Operator: move the saga to the version it is decided with (`saga migrate`), as the plan
    made under the saga's lock says (saga._migrate.plan_migration: renames, drops, new data)."""

    plan: MigrationPlan
    note: str


Input = Start | Reply | DeadlineDue | LocalDone | LocalFailed | Resume | Signal | CompensateRequest | Migrate

# --- outputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SendCommand:
    step: str
    phase: Phase
    attempt: int
    participant: str
    message: BaseModel
    message_id: uuid.UUID
    to_saga: str | None = None  # set: to that saga type's reply topic, for the saga `saga_id`
    saga_id: str | None = None


@dataclass(frozen=True)
class StartChild:
    """Start a child saga in this decision's transaction."""

    step: str
    attempt: int
    saga_type: str
    child_id: str
    data: dict[str, Any]
    parent: ParentRef
    saga_version: int = 1  # the version of the child saga the step names


@dataclass(frozen=True)
class RunLocal:
    step: str
    phase: Phase
    attempt: int


@dataclass(frozen=True)
class Deadline:
    step: str
    phase: Phase
    attempt: int
    kind: DeadlineKind
    due_at: datetime


@dataclass(frozen=True)
class Decision:
    """`events` fold into `state`. `deadlines` are the saga's deadline rows to set (one per step,
    replacing that step's row), `cleared` the steps whose row goes; other rows stay as they are."""

    state: SagaState
    events: tuple[BaseModel, ...] = ()
    commands: tuple[SendCommand, ...] = ()
    deadlines: tuple[Deadline, ...] = ()
    cleared: tuple[str, ...] = ()
    local: RunLocal | None = None
    children: tuple[StartChild, ...] = ()

    def then(self, later: Decision) -> Decision:
        """This decision followed by one taken on its state: one decision with both effects."""
        touched = {d.step for d in later.deadlines} | set(later.cleared)
        deadlines = tuple(d for d in self.deadlines if d.step not in touched) + later.deadlines
        cleared = tuple(s for s in self.cleared if s not in touched) + later.cleared
        return Decision(
            state=later.state,
            events=self.events + later.events,
            commands=self.commands + later.commands,
            deadlines=deadlines,
            cleared=cleared,
            local=later.local,
            children=self.children + later.children,
        )

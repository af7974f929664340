"""What the decider takes and gives: inputs (start, reply, deadline, local-step result,
operator resume) and the Decision (events, commands, deadline, local step to run)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from saga._state import Phase, SagaState

# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    saga_type: str
    data: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True)
class Reply:
    """A participant's answer; (step, phase, attempt) come from its envelope."""

    message_type: str
    message: BaseModel
    step: str | None
    phase: str | None
    attempt: int | None


@dataclass(frozen=True)
class DeadlineDue:
    step: str
    phase: Phase
    attempt: int
    kind: Literal["reply", "retry"]


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


Input = Start | Reply | DeadlineDue | LocalDone | LocalFailed | Resume

# --- outputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SendCommand:
    step: str
    phase: Phase
    attempt: int
    participant: str
    message: BaseModel
    message_id: uuid.UUID


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
    kind: Literal["reply", "retry"]
    due_at: datetime


@dataclass(frozen=True)
class Decision:
    """`events` fold into `state`; `deadline_changed` says whether the saga's deadline row is
    to be replaced by `deadline` (None: cleared) or kept as it is."""

    state: SagaState
    events: tuple[BaseModel, ...] = ()
    commands: tuple[SendCommand, ...] = ()
    deadline: Deadline | None = None
    deadline_changed: bool = False
    local: RunLocal | None = None

    def then(self, later: Decision) -> Decision:
        """This decision followed by one taken on its state: one decision with both effects."""
        changed = later.deadline_changed or self.deadline_changed
        return Decision(
            state=later.state,
            events=self.events + later.events,
            commands=self.commands + later.commands,
            deadline=later.deadline if later.deadline_changed else self.deadline,
            deadline_changed=changed,
            local=later.local,
        )

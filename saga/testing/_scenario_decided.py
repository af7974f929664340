"""One decision of a decision test: what the decider did on one input, and `expect`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic

from pydantic import BaseModel

from saga import Deadline, Decision, Saga, SendCommand, StartChild, TypedSagaState
from saga._decision import Input
from saga._definition import D
from saga._typed import typed_state
from saga.testing._scenario_text import (
    CommandSpec,
    EventSpec,
    ExpectationFailed,
    check_specs,
    command_matches,
    command_natural,
    command_spec_label,
    compared,
    describe,
    event_label,
    event_matches,
    event_spec_label,
)


@dataclass(frozen=True)
class Decided(Generic[D]):
    """What the decider did on `given` (`what` says it in words), at the scenario's `now`."""

    saga: type[Saga[D]]
    what: str
    given: Input
    decision: Decision
    now: datetime
    awaits: str  # what the saga awaits after this decision, in words

    @property
    def events(self) -> tuple[BaseModel, ...]:
        """The events the decision appends, in order."""
        return self.decision.events

    @property
    def event_names(self) -> list[str]:
        return [type(e).__name__ for e in self.decision.events]

    @property
    def commands(self) -> tuple[SendCommand, ...]:
        """The commands it sends: each has `step`, `phase`, `attempt`, `participant`, `message`."""
        return self.decision.commands

    @property
    def children(self) -> tuple[StartChild, ...]:
        """The child sagas it starts."""
        return self.decision.children

    @property
    def deadlines(self) -> tuple[Deadline, ...]:
        """The deadlines it sets (a reply timeout, a scheduled retry, a timer), one per step."""
        return self.decision.deadlines

    @property
    def local(self) -> str | None:
        """The local step it asks to run now (give its outcome with `when_local_done` or
        `when_local_failed`), None when none."""
        return None if self.decision.local is None else self.decision.local.step

    @property
    def state(self) -> TypedSagaState[D]:
        """The saga's state after the decision, its data as the saga's data model."""
        return typed_state(self.saga, self.decision.state)

    @property
    def status(self) -> str:
        return self.decision.state.status

    def expect(
        self,
        *,
        events: Sequence[EventSpec] | None = None,
        commands: Sequence[CommandSpec] | None = None,
        status: str | None = None,
    ) -> Decided[D]:
        """Check the decision; ExpectationFailed shows what was expected and what it did.

        events: every event, in order, each as its class, its name ("StepSucceeded") or an
            event equal to it. commands: every command, in order, each as the step's name with,
            optionally, its phase and attempt ("book_hotel", "book_flight/compensation",
            "pay #2"), a message equal to the command's, or the command's message class.
            status: the saga's status after it. An argument left out is not checked; `[]`
            expects none."""
        check_specs(self.saga, events, commands, status)
        problems: list[str] = []
        if events is not None:
            problems += compared(
                "events", list(events), self.events, event_matches, event_spec_label, event_label
            )
        if commands is not None:
            problems += compared(
                "commands",
                list(commands),
                self.commands,
                command_matches,
                command_spec_label,
                command_natural,
            )
        if status is not None and status != self.status:
            problems.append(f"  status: expected {status!r}, got {self.status!r}")
        if problems:
            raise ExpectationFailed(
                "\n".join([f"{self.what}: not the decision expected", *problems, str(self)])
            )
        return self

    def __str__(self) -> str:
        lines = [f"on {self.what} the decider did:", *describe(self.decision, self.now)]
        return "\n".join([*lines, f"  now {self.awaits}"])

    def __repr__(self) -> str:
        return f"<Decided {self.what}: {', '.join(self.event_names) or 'no events'}>"

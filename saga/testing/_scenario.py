"""Decision tests: drive a saga's pure decider, no Postgres, no Kafka, no waiting.

    s = scenario(TripSaga)
    s.started(TripData(trip_id="t1"))                    # or s.given(*events) from a history
    s.when_reply("book_flight", FlightBooked(ref="F1")).expect(commands=["book_hotel"])
    s.when_timeout("book_hotel").expect(commands=["book_flight/compensation"], status="compensating")

Each `when_*` is one input the orchestrator would decide on; it returns the decision
(`Decided`) and the scenario moves on to its state. What the decider decides is returned,
never raised, even when it ignores the input (a late reply: `ReplyIgnored`). An input nothing
real could send (a reply to a command never sent, a timeout of a step without a deadline, a
message of a type the saga does not declare) raises ScenarioError, saying what the saga awaits.

Time is the scenario's own `now`: `advance(seconds)` moves it and never fires a deadline by
itself; `when_timeout(step)` fires the step's deadline (a reply timeout, a scheduled retry or a
timer), moving `now` to it if it lies ahead.

A local step runs inside the orchestrator's transaction, so the decider stops and asks for it
(`Decided.local`); the test gives its outcome with `when_local_done(step, new_data)` or
`when_local_failed(step, reason)` before any other input (in production no input can come in
between; the orchestrator merges both decisions into one). Nothing here runs a step's code
beyond the decider's (`command`, `on_reply`, `on_signal`, ...): no local action, no end hook.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal

from pydantic import BaseModel

from saga import (
    ChildEnded,
    ChildSaga,
    Deadline,
    DeadlineDue,
    LocalDone,
    LocalFailed,
    LocalStep,
    RemoteStep,
    Reply,
    Resume,
    Saga,
    SagaState,
    SendCommand,
    Signal,
    Start,
    StepRefused,
    TypedSagaState,
    decide,
)
from saga._decision import Input
from saga._definition import D
from saga._protocol import CHILD_ENDED, STEP_REFUSED
from saga._state import Awaiting, apply
from saga._typed import typed_state
from saga.testing._scenario_checks import (
    Phase,
    attempt_of,
    check_model,
    check_past,
    check_ready,
    check_signal,
    check_started,
    phase_of,
    reply_phases,
    rows_for,
    running_local,
    step_of,
    step_of_kind,
)
from saga.testing._scenario_decided import Decided
from saga.testing._scenario_text import ScenarioError, awaiting, short

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def scenario(saga: type[Saga[D]], *, now: datetime = EPOCH, saga_id: str = "saga-1") -> Scenario[D]:
    """A decision test of `saga`, its clock at `now` (a timezone-aware datetime)."""
    if not (isinstance(saga, type) and issubclass(saga, Saga)):
        raise ScenarioError(f"scenario(saga): pass a Saga class, got {saga!r}")
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ScenarioError(f"scenario(now=...): a timezone-aware datetime, got {now!r}")
    return Scenario(saga, now, saga_id)


class Scenario(Generic[D]):
    """One saga driven input by input through the pure decider (see the module's docstring)."""

    def __init__(self, saga: type[Saga[D]], now: datetime, saga_id: str) -> None:
        self.saga = saga
        self.saga_id = saga_id
        self._now = now
        self._state = SagaState(saga_id=saga_id)
        self._history: list[BaseModel] = []
        self._commands: list[SendCommand] = []
        self._rows: dict[str, Deadline] = {}
        self._signals = 0

    # --- what there is now -------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock; no deadline fires by itself (fire one with `when_timeout`)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ScenarioError(f"advance(seconds): a number >= 0, got {seconds!r}")
        self._now += timedelta(seconds=seconds)

    @property
    def state(self) -> TypedSagaState[D]:
        """The saga's state, its data as the saga's data model."""
        check_started(self.saga, self._state)
        return typed_state(self.saga, self._state)

    @property
    def raw_state(self) -> SagaState:
        """The fold of its events, its data as stored (JSON)."""
        return self._state

    @property
    def history(self) -> tuple[BaseModel, ...]:
        """Every event so far: those given, then those decided."""
        return tuple(self._history)

    @property
    def commands(self) -> tuple[SendCommand, ...]:
        """Every command sent so far."""
        return tuple(self._commands)

    @property
    def deadlines(self) -> dict[str, Deadline]:
        """The saga's deadline rows now, by step."""
        return dict(self._rows)

    @property
    def awaits(self) -> str:
        """What the saga awaits right now, in words."""
        return awaiting(self.saga, self._state, self._rows, self._now)

    # --- the past ------------------------------------------------------------------------------

    def given(self, *events: BaseModel) -> Scenario[D]:
        """Past events of the saga, in order (its history starts with SagaStarted). A reply
        awaited with a timeout gets its deadline counted from `now`."""
        for event in events:
            check_past(self.saga, self._state, event)
            self._state = apply(self._state, event)
            self._history.append(event)
        self._rows = rows_for(self.saga, self._state, self._rows, self._now)
        return self

    def started(self, data: D, *, key: str | None = None) -> Decided[D]:
        """Start the saga with `data` (an instance of its data model)."""
        if self._state.version:
            raise ScenarioError(f"started(...): the saga has started already; {self.awaits}")
        check_model(data, self.saga.data_model, "started(data)")
        return self._decide(Start(self.saga.name, data.model_dump(mode="json"), key), "start")

    # --- inputs --------------------------------------------------------------------------------

    def when_reply(
        self, step: str, message: BaseModel, *, phase: Phase | None = None, attempt: int | None = None
    ) -> Decided[D]:
        """A participant's reply to the command of `step`: by default to the attempt the saga
        awaits, else to the latest one sent; its phase follows from its type (the step's `reply`
        or `compensation_reply`). A reply to an earlier attempt: `attempt=1`. Its type is named
        by its class (in production, by the app's MessageRegistry)."""
        remote: type[RemoteStep[Any]] = step_of_kind(self.saga, self._state, step, "when_reply", RemoteStep)
        if isinstance(message, StepRefused):
            return self.when_refused(step, message.reason, phase=phase, attempt=attempt)
        phases = reply_phases(remote, message, "when_reply")
        if phase is None:
            waiting = self._state.waiting_on(step)
            phase = waiting.phase if waiting is not None and waiting.phase in phases else phases[0]
        elif phase not in phases:
            raise ScenarioError(f"when_reply({step!r}, ...): {short(message)} is no reply to its {phase}")
        attempt = attempt_of(self._state, step, phase, attempt, "when_reply", self.awaits)
        given = Reply(type(message).__name__, message, step, phase, attempt)
        return self._decide(given, f"reply {type(message).__name__} to {step}/{phase} #{attempt}")

    def when_refused(
        self, step: str, reason: str, *, phase: Phase | None = None, attempt: int | None = None
    ) -> Decided[D]:
        """The participant refuses the command of `step` (StepRefused): by default the one the
        saga awaits, else the latest one sent."""
        step_of_kind(self.saga, self._state, step, "when_refused", RemoteStep)
        phase = phase or phase_of(self._state, step)
        attempt = attempt_of(self._state, step, phase, attempt, "when_refused", self.awaits)
        given = Reply(STEP_REFUSED, StepRefused(reason=reason), step, phase, attempt)
        return self._decide(given, f"refusal {reason!r} to {step}/{phase} #{attempt}")

    def when_timeout(self, step: str) -> Decided[D]:
        """The deadline of `step` falls due: a reply's timeout, a scheduled retry, a timer.
        `now` moves to it if it lies ahead."""
        check_ready(self.saga, self._state, "when_timeout")
        row = self._rows.get(step)
        if row is None:
            why = "" if step_of(self.saga, step, "when_timeout").timeout_s else f" ({step} has no timeout_s)"
            raise ScenarioError(f"when_timeout({step!r}): {step} has no deadline now{why}; {self.awaits}")
        self._now = max(self._now, row.due_at)
        what = {"reply": "timeout", "retry": "scheduled retry", "timer": "timer"}[row.kind]
        given = DeadlineDue(row.step, row.phase, row.attempt, row.kind)
        return self._decide(given, f"{what} of {step}/{row.phase} #{row.attempt}")

    def when_signal(self, message: BaseModel, *, message_id: str | None = None) -> Decided[D]:
        """A signal to the saga (`App.signal`): a wait takes it now, or it is kept until one
        does, or it is ignored (recorded) when no wait ahead takes it."""
        check_ready(self.saga, self._state, "when_signal")
        check_signal(self.saga, message)
        self._signals += 1
        given = Signal(type(message).__name__, message, message_id or f"signal-{self._signals}")
        return self._decide(given, f"signal {type(message).__name__}")

    def when_local_done(self, step: str, data: D | None = None) -> Decided[D]:
        """The local step the saga runs now succeeded; `data` is the saga's new data (None:
        unchanged; a compensation gives none)."""
        run = self._local(step, "when_local_done")
        if data is not None:
            if run.phase == "compensation":
                raise ScenarioError(f"when_local_done({step!r}, data): a compensation gives no new data")
            check_model(data, self.saga.data_model, f"when_local_done({step!r}, data)")
        dumped = None if data is None else data.model_dump(mode="json")
        return self._decide(LocalDone(step, run.phase, run.attempt, dumped), f"local {step}/{run.phase} done")

    def when_local_failed(self, step: str, reason: str) -> Decided[D]:
        """The local step the saga runs now failed (raised, or `Refused(reason)`)."""
        run = self._local(step, "when_local_failed")
        given = LocalFailed(step, run.phase, run.attempt, reason)
        return self._decide(given, f"local {step}/{run.phase} failed")

    def when_child_completed(self, step: str, data: BaseModel) -> Decided[D]:
        """The child saga of `step` completed with `data` (its data model)."""
        child = self._child(step, "when_child_completed")
        check_model(data, child.saga.data_model, f"when_child_completed({step!r}, data)")
        return self._child_ended(child, "completed", data.model_dump(mode="json"), None)

    def when_child_compensated(self, step: str, reason: str) -> Decided[D]:
        """The child saga of `step` ended compensated (it failed, or undid itself when asked)."""
        return self._child_ended(self._child(step, "when_child_compensated"), "compensated", {}, reason)

    def when_resumed(self, note: str = "operator") -> Decided[D]:
        """An operator resumes the saga (`saga retry`); the decider refuses (SagaError) one
        with nothing to resume."""
        check_ready(self.saga, self._state, "when_resumed")
        return self._decide(Resume(note), f"operator resume ({note})")

    def when(self, given: Input, what: str | None = None) -> Decided[D]:
        """Any decider input as it is (saga.Reply, DeadlineDue, Signal, Resume, ...), unchecked:
        for the inputs the other methods refuse (a stale deadline, a reply of a wrong type)."""
        return self._decide(given, what or short(given))

    # --- inside --------------------------------------------------------------------------------

    def _decide(self, given: Input, what: str) -> Decided[D]:
        decision = decide(self.saga, self._state, given, self._now)
        self._state = decision.state
        self._history += decision.events
        self._commands += decision.commands
        for step in decision.cleared:
            self._rows.pop(step, None)
        for deadline in decision.deadlines:
            self._rows[deadline.step] = deadline
        return Decided(self.saga, what, given, decision, self._now, self.awaits)

    def _local(self, name: str, call: str) -> Awaiting:
        step = step_of(self.saga, name, call)
        check_started(self.saga, self._state)
        running = running_local(self.saga, self._state)
        if not issubclass(step, LocalStep) or running is None or running.step != name:
            raise ScenarioError(f"{call}({name!r}): the saga does not run {name} now; {self.awaits}")
        return running

    def _child(self, name: str, call: str) -> type[ChildSaga[Any]]:
        step: type[ChildSaga[Any]] = step_of_kind(self.saga, self._state, name, call, ChildSaga)
        if name not in self._state.children:
            raise ScenarioError(f"{call}({name!r}): {name} never started a child saga; {self.awaits}")
        return step

    def _child_ended(
        self,
        step: type[ChildSaga[Any]],
        outcome: Literal["completed", "compensated"],
        data: dict[str, Any],
        reason: str | None,
    ) -> Decided[D]:
        phase = phase_of(self._state, step.name)
        attempt = self._state.attempt_of(phase, step.name)
        child = self._state.children[step.name]
        ended = ChildEnded(
            child_id=child, saga_type=step.saga.name, outcome=outcome, data=data, reason=reason
        )
        given = Reply(CHILD_ENDED, ended, step.name, phase, attempt)
        return self._decide(given, f"child saga {child} {outcome}, to {step.name}/{phase} #{attempt}")


__all__ = ["EPOCH", "Scenario", "scenario"]

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
between; the orchestrator merges both decisions into one).
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
    Step,
    StepRefused,
    TimerStep,
    TypedSagaState,
    WaitStep,
    decide,
    saga_event_registry,
)
from saga._decide import deadline_for
from saga._decision import Input
from saga._definition import D
from saga._events import SagaStarted
from saga._state import Awaiting, apply
from saga._typed import typed_state
from saga.testing._scenario_decided import Decided
from saga.testing._scenario_text import ScenarioError, awaiting, short

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
Phase = Literal["action", "compensation"]
_EVENT_MODELS = frozenset(saga_event_registry().models())
_HOW = {
    LocalStep: "a local step: give its outcome with when_local_done / when_local_failed",
    WaitStep: "a wait: send its signal with when_signal, or let it time out with when_timeout",
    TimerStep: "a timer: fire it with when_timeout",
    ChildSaga: "a child saga's step: end the child with when_child_completed / when_child_compensated",
    RemoteStep: "a remote step: answer it with when_reply / when_refused",
}


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
        self._check_started()
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
            if type(event) not in _EVENT_MODELS:
                raise ScenarioError(f"given(...): {short(event)} is not a saga event (saga._events)")
            if not self._history and not isinstance(event, SagaStarted):
                raise ScenarioError(
                    f"given(...): a saga's history starts with SagaStarted, not {short(event)}"
                )
            if isinstance(event, SagaStarted) and self._history:
                raise ScenarioError("given(...): a second SagaStarted; the saga has started already")
            if isinstance(event, SagaStarted) and event.saga_type != self.saga.name:
                raise ScenarioError(
                    f"given(...): SagaStarted of a {event.saga_type!r}, this is {self.saga.name!r}"
                )
            self._state = apply(self._state, event)
            self._history.append(event)
        rows = {}
        for w in self._state.waiting:
            kept = self._rows.get(w.step)
            row = (
                kept
                if kept is not None and (kept.phase, kept.attempt, kept.kind) == (w.phase, w.attempt, w.kind)
                else None
            )
            row = row or deadline_for(self.saga, w, self._now)
            if row is not None:
                rows[w.step] = row
        self._rows = rows
        return self

    def started(self, data: D, *, key: str | None = None) -> Decided[D]:
        """Start the saga with `data` (an instance of its data model)."""
        if self._state.version:
            raise ScenarioError(f"started(...): the saga has started already; {self.awaits}")
        self._check_model(data, self.saga.data_model, "started(data)")
        return self._decide(Start(self.saga.name, data.model_dump(mode="json"), key), "start")

    # --- inputs --------------------------------------------------------------------------------

    def when_reply(
        self, step: str, message: BaseModel, *, phase: Phase | None = None, attempt: int | None = None
    ) -> Decided[D]:
        """A participant's reply to the command of `step`: by default to the attempt the saga
        awaits, else to the latest one sent; its phase follows from its type (the step's `reply`
        or `compensation_reply`). A reply to an earlier attempt: `attempt=1`."""
        remote = self._remote(step, "when_reply")
        if isinstance(message, StepRefused):
            return self.when_refused(step, message.reason, phase=phase, attempt=attempt)
        pairs: list[tuple[Phase, type[BaseModel] | None]] = [
            ("action", remote.reply),
            ("compensation", remote.compensation_reply),
        ]
        declared = {p: t for p, t in pairs if t is not None}
        phases = [p for p, t in declared.items() if isinstance(message, t)]
        if not phases:
            takes = " or ".join(f"{t.__name__} ({p})" for p, t in declared.items())
            raise ScenarioError(f"when_reply({step!r}, ...): {step} takes {takes}, got {short(message)}")
        if phase is None:
            waiting = self._state.waiting_on(step)
            phase = waiting.phase if waiting is not None and waiting.phase in phases else phases[0]
        elif phase not in phases:
            raise ScenarioError(f"when_reply({step!r}, ...): {short(message)} is no reply to its {phase}")
        return self._reply(step, message, phase, attempt, "when_reply")

    def when_refused(
        self, step: str, reason: str, *, phase: Phase | None = None, attempt: int | None = None
    ) -> Decided[D]:
        """The participant refuses the command of `step` (StepRefused): by default the one the
        saga awaits, else the latest one sent."""
        self._remote(step, "when_refused")
        return self._reply(
            step, StepRefused(reason=reason), phase or self._phase_of(step), attempt, "when_refused"
        )

    def when_timeout(self, step: str) -> Decided[D]:
        """The deadline of `step` falls due: a reply's timeout, a scheduled retry, a timer.
        `now` moves to it if it lies ahead."""
        self._check_ready("when_timeout")
        row = self._rows.get(step)
        if row is None:
            has = (
                ""
                if self._step(step, "when_timeout").timeout_s is not None
                else f" ({step} has no timeout_s)"
            )
            raise ScenarioError(f"when_timeout({step!r}): {step} has no deadline now{has}; {self.awaits}")
        self._now = max(self._now, row.due_at)
        what = {"reply": "timeout", "retry": "scheduled retry", "timer": "timer"}[row.kind]
        label = f"{what} of {step}/{row.phase} #{row.attempt}"
        return self._decide(DeadlineDue(row.step, row.phase, row.attempt, row.kind), label)

    def when_signal(self, message: BaseModel, *, message_id: str | None = None) -> Decided[D]:
        """A signal to the saga (`App.signal`): a wait takes it now, or it is kept until one
        does, or it is ignored (recorded) when no wait ahead takes it."""
        self._check_ready("when_signal")
        waits = [s for s in self.saga.all_steps() if issubclass(s, WaitStep)]
        if not isinstance(message, BaseModel) or not any(isinstance(message, w.signals) for w in waits):
            takes = sorted({m.__name__ for w in waits for m in w.signals})
            raise ScenarioError(
                f"when_signal(...): no step of {self.saga.name} waits for {short(message)} "
                f"(it waits for: {', '.join(takes) or 'no signal'})"
            )
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
            self._check_model(data, self.saga.data_model, f"when_local_done({step!r}, data)")
        dumped = None if data is None else data.model_dump(mode="json")
        return self._decide(LocalDone(step, run.phase, run.attempt, dumped), f"local {step}/{run.phase} done")

    def when_local_failed(self, step: str, reason: str) -> Decided[D]:
        """The local step the saga runs now failed (raised, or `Refused(reason)`)."""
        run = self._local(step, "when_local_failed")
        return self._decide(
            LocalFailed(step, run.phase, run.attempt, reason), f"local {step}/{run.phase} failed"
        )

    def when_child_completed(self, step: str, data: BaseModel) -> Decided[D]:
        """The child saga of `step` completed with `data` (its data model)."""
        child = self._child(step, "when_child_completed")
        self._check_model(data, child.saga.data_model, f"when_child_completed({step!r}, data)")
        return self._child_ended(child, "completed", data.model_dump(mode="json"), None)

    def when_child_compensated(self, step: str, reason: str) -> Decided[D]:
        """The child saga of `step` ended compensated (it failed, or undid itself when asked)."""
        return self._child_ended(self._child(step, "when_child_compensated"), "compensated", {}, reason)

    def when_resumed(self, note: str = "operator") -> Decided[D]:
        """An operator resumes the saga (`saga retry`); the decider refuses (SagaError) one
        with nothing to resume."""
        self._check_ready("when_resumed")
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

    def _check_started(self) -> None:
        if not self._state.version:
            raise ScenarioError(
                f"{self.saga.name} has not started: call started(data) or given(events...) first"
            )

    def _check_ready(self, call: str) -> None:
        """Started, and not amid a local step (nothing comes between it and its outcome)."""
        self._check_started()
        running = self._running_local()
        if running is not None:
            raise ScenarioError(
                f"{call}(...): the saga runs local step {running.step} now, nothing can come before its "
                f"outcome: call when_local_done({running.step!r}) or when_local_failed({running.step!r}, reason)"
            )

    def _running_local(self) -> Awaiting | None:
        saga = self.saga
        return next(
            (
                w
                for w in self._state.waiting
                if w.kind == "reply" and saga.has_step(w.step) and issubclass(saga.step(w.step), LocalStep)
            ),
            None,
        )

    def _step(self, name: str, call: str) -> type[Step[Any]]:
        if not self.saga.has_step(name):
            steps = ", ".join(s.name for s in self.saga.all_steps())
            raise ScenarioError(
                f"{call}({name!r}): {self.saga.name} has no step {name!r} (its steps: {steps})"
            )
        return self.saga.step(name)

    def _of_kind(self, name: str, call: str, kind: type[Step[Any]]) -> type[Step[Any]]:
        step = self._step(name, call)
        self._check_ready(call)
        if not issubclass(step, kind):
            how = next(h for k, h in _HOW.items() if issubclass(step, k))
            raise ScenarioError(f"{call}({name!r}): {name} is {how}")
        return step

    def _remote(self, name: str, call: str) -> type[RemoteStep[Any]]:
        step = self._of_kind(name, call, RemoteStep)
        assert issubclass(step, RemoteStep)
        return step

    def _child(self, name: str, call: str) -> type[ChildSaga[Any]]:
        step = self._of_kind(name, call, ChildSaga)
        assert issubclass(step, ChildSaga)
        if name not in self._state.children:
            raise ScenarioError(f"{call}({name!r}): {name} never started a child saga; {self.awaits}")
        return step

    def _local(self, name: str, call: str) -> Awaiting:
        step = self._step(name, call)
        self._check_started()
        running = self._running_local()
        if not issubclass(step, LocalStep) or running is None or running.step != name:
            raise ScenarioError(f"{call}({name!r}): the saga does not run {name} now; {self.awaits}")
        return running

    def _phase_of(self, step: str) -> Phase:
        """The phase the saga awaits on `step`, else the latest it asked for."""
        waiting = self._state.waiting_on(step)
        if waiting is not None:
            return waiting.phase
        return "compensation" if self._state.attempt_of("compensation", step) else "action"

    def _reply(
        self, step: str, message: BaseModel, phase: Phase, attempt: int | None, call: str
    ) -> Decided[D]:
        sent = self._state.attempt_of(phase, step)
        if attempt is None:
            waiting = self._state.waiting_on(step)
            attempt = waiting.attempt if waiting is not None and waiting.phase == phase else sent
        if not 1 <= attempt <= sent:
            never = (
                f"attempt {attempt} of {step}/{phase} was never sent"
                if sent
                else f"{step}/{phase} was never sent"
            )
            raise ScenarioError(f"{call}({step!r}, ...): {never}, so nothing can answer it; {self.awaits}")
        given = Reply(type(message).__name__, message, step, phase, attempt)
        what = (
            f"refusal {message.reason!r}"
            if isinstance(message, StepRefused)
            else f"reply {type(message).__name__}"
        )
        return self._decide(given, f"{what} to {step}/{phase} #{attempt}")

    def _child_ended(
        self,
        step: type[ChildSaga[Any]],
        outcome: Literal["completed", "compensated"],
        data: dict[str, Any],
        reason: str | None,
    ) -> Decided[D]:
        phase = self._phase_of(step.name)
        attempt = self._state.attempt_of(phase, step.name)
        child = self._state.children[step.name]
        ended = ChildEnded(
            child_id=child, saga_type=step.saga.name, outcome=outcome, data=data, reason=reason
        )
        given = Reply("saga.child_ended", ended, step.name, phase, attempt)
        return self._decide(given, f"child saga {child} {outcome}, to {step.name}/{phase} #{attempt}")

    def _check_model(self, value: Any, model: type[BaseModel], call: str) -> None:
        if not isinstance(value, model):
            raise ScenarioError(f"{call}: an instance of {model.__name__}, got {short(value)}")


__all__ = ["EPOCH", "Scenario", "scenario"]

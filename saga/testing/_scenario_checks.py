"""What a decision test may send a saga now (saga.testing._scenario): each check raises
ScenarioError naming what is wrong; `awaits` says what the saga awaits right now. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from saga import (
    ChildSaga,
    Deadline,
    LocalStep,
    RemoteStep,
    Saga,
    SagaState,
    Step,
    TimerStep,
    WaitStep,
    saga_event_registry,
)
from saga._decide import deadline_for
from saga._events import SagaStarted
from saga._state import Awaiting
from saga.testing._scenario_text import ScenarioError, short

Phase = Literal["action", "compensation"]
_EVENT_MODELS = frozenset(saga_event_registry().models())
_HOW = {
    LocalStep: "a local step: give its outcome with when_local_done / when_local_failed",
    WaitStep: "a wait: send its signal with when_signal, or let it time out with when_timeout",
    TimerStep: "a timer: fire it with when_timeout",
    ChildSaga: "a child saga's step: end the child with when_child_completed / when_child_compensated",
    RemoteStep: "a remote step: answer it with when_reply / when_refused",
}


def check_model(value: Any, model: type[BaseModel], call: str) -> None:
    if not isinstance(value, model):
        raise ScenarioError(f"{call}: an instance of {model.__name__}, got {short(value)}")


def check_past(saga: type[Saga[Any]], state: SagaState, event: Any) -> None:
    """An event `given(...)` may add to the saga's history."""
    if type(event) not in _EVENT_MODELS:
        raise ScenarioError(f"given(...): {short(event)} is not a saga event (saga._events)")
    if not state.version and not isinstance(event, SagaStarted):
        raise ScenarioError(f"given(...): a saga's history starts with SagaStarted, not {short(event)}")
    if isinstance(event, SagaStarted) and state.version:
        raise ScenarioError("given(...): a second SagaStarted; the saga has started already")
    if isinstance(event, SagaStarted) and event.saga_type != saga.name:
        raise ScenarioError(f"given(...): SagaStarted of a {event.saga_type!r}, this is {saga.name!r}")


def rows_for(
    saga: type[Saga[Any]], state: SagaState, rows: Mapping[str, Deadline], now: datetime
) -> dict[str, Deadline]:
    """The deadline rows of what the saga awaits: a row it had stays, a new one counts from `now`."""
    new: dict[str, Deadline] = {}
    for w in state.waiting:
        row = rows.get(w.step)
        if row is None or (row.phase, row.attempt, row.kind) != (w.phase, w.attempt, w.kind):
            row = deadline_for(saga, w, now)
        if row is not None:
            new[w.step] = row
    return new


def check_started(saga: type[Saga[Any]], state: SagaState) -> None:
    if not state.version:
        raise ScenarioError(f"{saga.name} has not started: call started(data) or given(events...) first")


def running_local(saga: type[Saga[Any]], state: SagaState) -> Awaiting | None:
    """The local step the saga runs now: the decider asked for it and awaits its outcome."""
    for w in state.waiting:
        if w.kind == "reply" and saga.has_step(w.step) and issubclass(saga.step(w.step), LocalStep):
            return w
    return None


def check_ready(saga: type[Saga[Any]], state: SagaState, call: str) -> None:
    """Started, and not amid a local step (nothing comes between it and its outcome)."""
    check_started(saga, state)
    running = running_local(saga, state)
    if running is not None:
        raise ScenarioError(
            f"{call}(...): the saga runs local step {running.step} now, nothing can come before its "
            f"outcome: call when_local_done({running.step!r}) or when_local_failed({running.step!r}, reason)"
        )


def step_of(saga: type[Saga[Any]], name: str, call: str) -> type[Step[Any]]:
    if not saga.has_step(name):
        steps = ", ".join(s.name for s in saga.all_steps())
        raise ScenarioError(f"{call}({name!r}): {saga.name} has no step {name!r} (its steps: {steps})")
    return saga.step(name)


def step_of_kind(saga: type[Saga[Any]], state: SagaState, name: str, call: str, kind: type[Any]) -> Any:
    """The step `name`, ready for an input, of this kind (else: which call takes it)."""
    step = step_of(saga, name, call)
    check_ready(saga, state, call)
    if not issubclass(step, kind):
        how = next(h for k, h in _HOW.items() if issubclass(step, k))
        raise ScenarioError(f"{call}({name!r}): {name} is {how}")
    return step


def reply_phases(step: type[RemoteStep[Any]], message: BaseModel, call: str) -> list[Phase]:
    """The phases `message` answers on `step`, by its type (its `reply`, `compensation_reply`)."""
    pairs: list[tuple[Phase, type[BaseModel] | None]] = [
        ("action", step.reply),
        ("compensation", step.compensation_reply),
    ]
    declared = {p: t for p, t in pairs if t is not None}
    phases = [p for p, t in declared.items() if isinstance(message, t)]
    if not phases:
        takes = " or ".join(f"{t.__name__} ({p})" for p, t in declared.items())
        raise ScenarioError(f"{call}({step.name!r}, ...): {step.name} takes {takes}, got {short(message)}")
    return phases


def phase_of(state: SagaState, step: str) -> Phase:
    """The phase the saga awaits on `step`, else the latest it asked for."""
    waiting = state.waiting_on(step)
    if waiting is not None:
        return waiting.phase
    return "compensation" if state.attempt_of("compensation", step) else "action"


def attempt_of(state: SagaState, step: str, phase: Phase, attempt: int | None, call: str, awaits: str) -> int:
    """The attempt a reply answers: `attempt`, else the one awaited, else the latest sent;
    one never sent cannot be answered."""
    sent = state.attempt_of(phase, step)
    if attempt is None:
        waiting = state.waiting_on(step)
        awaited = waiting is not None and waiting.kind == "reply" and waiting.phase == phase
        attempt = waiting.attempt if waiting is not None and awaited else sent
    if not 1 <= attempt <= sent:
        never = f"attempt {attempt} of {step}/{phase}" if sent else f"{step}/{phase}"
        raise ScenarioError(
            f"{call}({step!r}, ...): {never} was never sent, so nothing can answer it; {awaits}"
        )
    return attempt


def check_signal(saga: type[Saga[Any]], message: Any) -> None:
    waits = [s for s in saga.all_steps() if issubclass(s, WaitStep)]
    if not isinstance(message, BaseModel) or not any(isinstance(message, w.signals) for w in waits):
        takes = sorted({m.__name__ for w in waits for m in w.signals})
        raise ScenarioError(
            f"when_signal(...): no step of {saga.name} waits for {short(message)} "
            f"(it waits for: {', '.join(takes) or 'no signal'})"
        )

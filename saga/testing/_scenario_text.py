"""Words for decision tests: what a saga awaits right now, what a decision did, and how a
decision differs from what a test expected (saga.testing._scenario)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, get_args

from pydantic import BaseModel

from saga import (
    ChildSaga,
    Deadline,
    Decision,
    LocalStep,
    Saga,
    SagaState,
    SendCommand,
    WaitStep,
    saga_event_registry,
)
from saga._state import Status

EventSpec = type[BaseModel] | BaseModel | str
CommandSpec = str | type[BaseModel] | BaseModel

_REGISTRY = saga_event_registry()
# An event by its class name ("StepSucceeded") or its stored type name ("saga.step_succeeded").
_EVENTS: dict[str, type[BaseModel]] = {
    **{m.__name__: m for m in _REGISTRY.models()},
    **{_REGISTRY.type_of_model(m).name: m for m in _REGISTRY.models()},
}
# "book_hotel", "book_hotel/compensation", "book_hotel #2", "book_flight/compensation #1"
_COMMAND = re.compile(r"^\s*([^/#\s]+)\s*(?:/\s*(action|compensation))?\s*(?:#\s*(\d+))?\s*$")
_LONG = 160
STATUSES: tuple[str, ...] = get_args(Status)
S = TypeVar("S")
T = TypeVar("T")


class ScenarioError(Exception):
    """A decision test drove the saga in a way nothing real could (a reply to a command never
    sent, a timeout of a step without a deadline, a message of a type the saga does not know):
    the message says what the saga awaits right now."""


class ExpectationFailed(AssertionError):
    """`Decided.expect`: the decision differs from what the test expected (the message shows both)."""


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _LONG else text[: _LONG - 3] + "..."


def seconds_from(now: datetime, due: datetime) -> str:
    left = (due - now).total_seconds()
    return f"due in {left:g}s" if left > 0 else "due now"


def awaiting(saga: type[Saga[Any]], state: SagaState, rows: Mapping[str, Deadline], now: datetime) -> str:
    """What the saga awaits right now, and the call that gives it."""
    if state.version == 0:
        return "it has not started (call started(data) or given(events...))"
    if not state.waiting:
        return f"it is {state.status} and awaits nothing"
    return f"it is {state.status}, awaiting " + "; ".join(
        _one_wait(saga, state, w.step, rows, now) for w in state.waiting
    )


def _one_wait(
    saga: type[Saga[Any]], state: SagaState, name: str, rows: Mapping[str, Deadline], now: datetime
) -> str:
    w = state.waiting_on(name)
    assert w is not None
    row = rows.get(name)
    due = f", {seconds_from(now, row.due_at)} (when_timeout)" if row is not None else ""
    if w.kind == "retry":
        return f"{name}/{w.phase} attempt {w.attempt}: a scheduled retry{due}"
    if w.kind == "timer":
        return f"{name}: a timer{due}"
    step = saga.step(name) if saga.has_step(name) else None
    if step is not None and issubclass(step, LocalStep):
        return f"{name}/{w.phase} #{w.attempt}: the local step to run (when_local_done / when_local_failed)"
    if step is not None and issubclass(step, WaitStep):
        signals = " or ".join(m.__name__ for m in step.signals)
        return f"{name}: a signal {signals} (when_signal){due}"
    if step is not None and issubclass(step, ChildSaga):
        child = state.children.get(name)
        return f"{name}/{w.phase} #{w.attempt}: the end of child saga {child} (when_child_completed/compensated){due}"
    return f"{name}/{w.phase} #{w.attempt}: a reply (when_reply / when_refused){due}"


def command_label(command: SendCommand) -> str:
    phase = "" if command.phase == "action" else f"/{command.phase}"
    return f"{command.step}{phase} #{command.attempt}"


def describe(decision: Decision, now: datetime) -> list[str]:
    """Every effect of a decision, one line each."""
    lines = ["  events:"] + [f"    {short(e)}" for e in decision.events]
    if not decision.events:
        lines.append("    (none)")
    lines.append("  commands:")
    lines += [
        f"    {command_label(c)} -> {c.participant or c.to_saga}: {short(c.message)}"
        for c in decision.commands
    ]
    if not decision.commands:
        lines.append("    (none)")
    lines += [
        f"  child saga: {c.saga_type} {c.child_id} for {c.step}: {short(c.data)}" for c in decision.children
    ]
    lines += [
        f"  deadline: {d.step}/{d.phase} #{d.attempt} ({d.kind}) {seconds_from(now, d.due_at)}"
        for d in decision.deadlines
    ]
    lines += [f"  deadline cleared: {step}" for step in decision.cleared]
    if decision.local is not None:
        run = decision.local
        lines.append(f"  local step to run: {run.step}/{run.phase} #{run.attempt}")
    return lines


# --- matching ------------------------------------------------------------------------------


def event_model(name: str) -> type[BaseModel]:
    try:
        return _EVENTS[name]
    except KeyError:
        known = ", ".join(sorted(n for n in _EVENTS if "." not in n))
        raise ScenarioError(
            f"expect(events=...): no saga event is named {name!r}; they are: {known}"
        ) from None


def check_specs(
    saga: type[Saga[Any]],
    events: Sequence[EventSpec] | None,
    commands: Sequence[CommandSpec] | None,
    status: str | None,
) -> None:
    """What `expect` is given names things that exist: a typo is the test's mistake, no failure."""
    models = set(_EVENTS.values())
    for spec in events or ():
        model = event_model(spec) if isinstance(spec, str) else spec if isinstance(spec, type) else type(spec)
        if model not in models:
            raise ScenarioError(f"expect(events=...): {event_spec_label(spec)} is not a saga event")
    for command in commands or ():
        step = parsed_command(command)[0] if isinstance(command, str) else None
        if step is not None and not saga.has_step(step):
            steps = ", ".join(s.name for s in saga.all_steps())
            raise ScenarioError(
                f"expect(commands=...): {saga.name} has no step {step!r} (its steps: {steps})"
            )
    if status is not None and status not in STATUSES:
        raise ScenarioError(f"expect(status=...): no status {status!r}; they are: {', '.join(STATUSES)}")


def event_matches(spec: EventSpec, event: BaseModel) -> bool:
    if isinstance(spec, str):
        return type(event) is event_model(spec)
    if isinstance(spec, type):
        return type(event) is spec
    return spec == event


def event_spec_label(spec: EventSpec) -> str:
    if isinstance(spec, str):
        return event_model(spec).__name__
    return spec.__name__ if isinstance(spec, type) else short(spec)


def event_label(event: BaseModel, specs: Sequence[EventSpec]) -> str:
    by_instance = any(isinstance(s, BaseModel) and type(s) is type(event) for s in specs)
    return short(event) if by_instance else type(event).__name__


def parsed_command(spec: str) -> tuple[str, str, int | None]:
    found = _COMMAND.match(spec)
    if found is None:
        raise ScenarioError(
            f"expect(commands=...): {spec!r} is no command; write a step's name, optionally its phase "
            "and attempt: 'book_hotel', 'book_hotel #2', 'book_flight/compensation'"
        )
    step, phase, attempt = found.groups()
    return step, phase or "action", None if attempt is None else int(attempt)


def command_matches(spec: CommandSpec, command: SendCommand) -> bool:
    if isinstance(spec, str):
        step, phase, attempt = parsed_command(spec)
        return (command.step, command.phase) == (step, phase) and attempt in (None, command.attempt)
    if isinstance(spec, type):
        return isinstance(command.message, spec)
    return spec == command.message


def command_spec_label(spec: CommandSpec) -> str:
    if isinstance(spec, str):
        return spec.strip()
    return spec.__name__ if isinstance(spec, type) else short(spec)


def command_natural(command: SendCommand, specs: Sequence[CommandSpec]) -> str:
    if specs and not isinstance(specs[0], str):
        return short(command.message) if isinstance(specs[0], BaseModel) else type(command.message).__name__
    return command_label(command)


def compared(
    what: str,
    specs: Sequence[S],
    got: Sequence[T],
    matches: Callable[[S, T], bool],
    spec_label: Callable[[S], str],
    natural: Callable[[T, Sequence[S]], str],
) -> list[str]:
    """Lines saying how `got` differs from `specs` (none when they match), as a diff: an item
    that matches a spec shows as that spec, so only what differs stands out."""
    if len(specs) == len(got) and all(matches(s, g) for s, g in zip(specs, got, strict=True)):
        return []
    expected = [spec_label(s) for s in specs]
    actual = [next((spec_label(s) for s in specs if matches(s, g)), None) or natural(g, specs) for g in got]
    lines = [f"  {what} (- expected, + got):"]
    for line in difflib.ndiff(expected, actual):
        if line[:1] in ("-", "+", " "):
            lines.append(f"    {line}")
    return lines

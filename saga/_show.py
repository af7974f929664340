"""What `saga show` says beyond the timeline: each parallel group's members and how far each
got, the waits and timers in flight and until when, the signals kept for a later wait, the
child sagas and the parent. Pure: built from what the caller read (the saga's definition, its
state, its timeline, its deadline rows, its children's rows)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from saga._definition import Saga
from saga._language import ChildSaga, TimerStep, WaitStep
from saga._state import SagaState

# How far a step got, from the last of its events that says.
_PROGRESS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "saga.step_requested": lambda e: "in_flight" if e["phase"] == "action" else "compensating",
    "saga.timer_set": lambda e: "in_flight",
    "saga.retry_scheduled": lambda e: "retry_due" if e["phase"] == "action" else "compensating",
    "saga.step_succeeded": lambda e: "done",
    "saga.step_failed": lambda e: "failed" if e["phase"] == "action" else None,
    "saga.step_timed_out": lambda e: "timed_out" if e["phase"] == "action" else None,
    "saga.step_compensated": lambda e: "compensated",
    "saga.compensation_failed": lambda e: "compensation_failed",
    "saga.wait_cancelled": lambda e: "cancelled",
}


def step_progress(state: SagaState, timeline: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each step the saga reached -> in_flight, retry_due, done, timed_out (may have acted),
    failed, compensating, compensated, compensation_failed or cancelled."""
    progress: dict[str, str] = {}
    for entry in timeline:
        event = entry["event"]
        says = _PROGRESS.get(entry["type"])
        word = says(event) if says is not None else None
        if word is not None:
            progress[event["step"]] = word
    for waiting in state.waiting:  # what the saga awaits now is the last word
        if waiting.phase == "compensation":
            progress[waiting.step] = "compensating"
        else:
            progress[waiting.step] = "retry_due" if waiting.kind == "retry" else "in_flight"
    return progress


@dataclass(frozen=True)
class Read:
    """What the caller read beside the state and the timeline."""

    deadlines: Sequence[Mapping[str, Any]] = ()  # saga_deadlines rows of the saga
    children: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict
    )  # child id -> its saga_instances row
    signal_name: Callable[[type[BaseModel]], str] = lambda model: model.__name__


def _groups(saga: type[Saga[Any]] | None, progress: Mapping[str, str]) -> list[dict[str, Any]]:
    if saga is None:
        return []
    groups = [node for node in saga.nodes() if len(node) > 1]
    return [
        {
            "group": number,
            "members": [{"step": s.name, "status": progress.get(s.name, "not_started")} for s in node],
        }
        for number, node in enumerate(groups, start=1)
    ]


def _until(step: str, due_at: datetime | None, read: Read) -> Any:
    if due_at is not None:
        return due_at.isoformat()
    due = next((row["due_at"] for row in read.deadlines if row.get("step") == step), None)
    return due.isoformat() if isinstance(due, datetime) else due


def _waits(saga: type[Saga[Any]] | None, state: SagaState, read: Read) -> tuple[list[Any], list[Any]]:
    waits: list[dict[str, Any]] = []
    timers: list[dict[str, Any]] = []
    for waiting in state.waiting:
        step = saga.step(waiting.step) if saga is not None and saga.has_step(waiting.step) else None
        if waiting.kind == "timer" or (step is not None and issubclass(step, TimerStep)):
            timers.append({"step": waiting.step, "until": _until(waiting.step, waiting.due_at, read)})
        elif step is not None and issubclass(step, WaitStep) and waiting.phase == "action":
            signals = [read.signal_name(signal) for signal in step.signals]
            until = _until(waiting.step, waiting.due_at, read) if step.timeout_s else None
            waits.append({"step": waiting.step, "signals": signals, "until": until})
    return waits, timers


def _children(saga: type[Saga[Any]] | None, state: SagaState, read: Read) -> list[dict[str, Any]]:
    children = []
    for step, child_id in state.children.items():
        row = read.children.get(child_id, {})
        declared = saga.step(step) if saga is not None and saga.has_step(step) else None
        saga_type = declared.saga.name if declared is not None and issubclass(declared, ChildSaga) else None
        children.append(
            {
                "step": step,
                "saga_id": child_id,
                "saga_type": row.get("saga_type", saga_type),
                "status": row.get("status"),
            }
        )
    return children


def language_view(
    saga: type[Saga[Any]] | None,
    state: SagaState,
    timeline: Sequence[Mapping[str, Any]],
    read: Read,
) -> dict[str, Any]:
    """The saga's groups, waits, timers, kept signals, children and parent, as JSON values.
    `saga` None: its type is not in the app, so groups and waits are not known."""
    waits, timers = _waits(saga, state, read)
    return {
        "groups": _groups(saga, step_progress(state, timeline)),
        "waits": waits,
        "timers": timers,
        "kept_signals": [signal.model_dump(mode="json") for signal in state.signals],
        "children": _children(saga, state, read),
        "parent": state.parent.model_dump(mode="json") if state.parent is not None else None,
    }

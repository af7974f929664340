"""A saga's events and the fold that turns them into its state.

The stream `saga:<id>` is the only source of truth; `saga_instances` is a projection of it
written in the same transaction. `fold` must stay free of I/O and of clocks: replaying the
same events always gives the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from saga._events import (
    CompensationAdded,
    CompensationFailed,
    CompensationRequested,
    CompensationStarted,
    InputDeferred,
    OperatorResumed,
    ReplyIgnored,
    RetryScheduled,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaMigrated,
    SagaParked,
    SagaStarted,
    SagaUnparked,
    SignalConsumed,
    SignalIgnored,
    SignalReceived,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    TimerSet,
    WaitCancelled,
)
from saga._state_model import (
    TERMINAL,
    Awaiting,
    KeptSignal,
    Parked,
    SagaState,
    StateFields,
    Status,
)


def _with(s: SagaState, waiting: Awaiting) -> list[Awaiting]:
    """`waiting` replaces what the saga awaited on that step (if anything)."""
    return [*(w for w in s.waiting if w.step != waiting.step), waiting]


def _without(s: SagaState, step: str) -> list[Awaiting]:
    return [w for w in s.waiting if w.step != step]


def _started(s: SagaState, e: SagaStarted) -> dict[str, Any]:
    return {
        "saga_type": e.saga_type,
        "key": e.key,
        "data": e.data,
        "status": "running",
        "parent": e.parent,
        "saga_version": e.saga_version,
        "fingerprint": e.fingerprint,
        "traceparent": e.traceparent,
    }


def _requested(s: SagaState, e: StepRequested) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "waiting": _with(s, Awaiting(step=e.step, phase=e.phase, attempt=e.attempt)),
        "attempts": {**s.attempts, f"{e.phase}:{e.step}": e.attempt},
        "last_step": _last_step(s, e.step),
    }
    if e.child_id is not None:
        changes["children"] = {**s.children, e.step: e.child_id}
    return changes


def _timer_set(s: SagaState, e: TimerSet) -> dict[str, Any]:
    waiting = Awaiting(step=e.step, phase="action", attempt=e.attempt, kind="timer", due_at=e.due_at)
    return {
        "waiting": _with(s, waiting),
        "attempts": {**s.attempts, f"action:{e.step}": e.attempt},
        "last_step": e.step,
    }


def _succeeded(s: SagaState, e: StepSucceeded) -> dict[str, Any]:
    done = s.done if e.step in s.done else [*s.done, e.step]
    timed_out = [step for step in s.timed_out if step != e.step]
    return {
        "data": e.data,
        "done": done,
        "timed_out": timed_out,
        "waiting": _without(s, e.step),
        "last_step": _last_step(s, e.step),
    }


def _last_step(s: SagaState, step: str) -> str | None:
    # A failed saga's last step is the one that stopped it, whatever members of its group
    # answer or retry after (a definition that lacks it parks the saga).
    return s.last_step if s.status == "failed" else step


def _failed(s: SagaState, e: StepFailed) -> dict[str, Any]:
    return {
        "waiting": _without(s, e.step),
        "last_error": f"{e.step}: {e.reason}",
        "last_step": _last_step(s, e.step),
    }


def _timed_out(s: SagaState, e: StepTimedOut) -> dict[str, Any]:
    # The participant may have acted: a remote action whose reply never came counts as done,
    # so that compensation undoes it (its compensation must tolerate "nothing to undo").
    if e.phase == "compensation" or e.step in s.done:
        done, timed_out = s.done, s.timed_out
    else:
        done, timed_out = [*s.done, e.step], [*s.timed_out, e.step]
    return {
        "waiting": _without(s, e.step),
        "done": done,
        "timed_out": timed_out,
        "last_error": f"{e.step}: timed out (attempt {e.attempt})",
    }


def _retry(s: SagaState, e: RetryScheduled) -> dict[str, Any]:
    waiting = Awaiting(step=e.step, phase=e.phase, attempt=e.attempt, kind="retry", due_at=e.due_at)
    return {"waiting": _with(s, waiting)}


def _compensation_started(s: SagaState, e: CompensationStarted) -> dict[str, Any]:
    # What is still in flight (a group's other members) stays awaited: it is undone once it answers.
    return {
        "status": "compensating",
        "to_compensate": e.steps,
        "last_error": e.reason,
        "compensation_reason": e.reason,
    }


def _compensated_step(s: SagaState, e: StepCompensated) -> dict[str, Any]:
    rest = [step for step in s.to_compensate if step != e.step]
    return {"to_compensate": rest, "waiting": _without(s, e.step), "last_step": e.step}


def _compensation_added(s: SagaState, e: CompensationAdded) -> dict[str, Any]:
    return {"to_compensate": [e.step, *(step for step in s.to_compensate if step != e.step)]}


def _ignored(s: SagaState, e: BaseModel) -> dict[str, Any]:
    return {}


def _completed(s: SagaState, e: SagaCompleted) -> dict[str, Any]:
    return {"status": "completed", "waiting": []}


def _compensated(s: SagaState, e: SagaCompensated) -> dict[str, Any]:
    return {"status": "compensated", "waiting": []}


def _compensation_failed(s: SagaState, e: CompensationFailed) -> dict[str, Any]:
    return {
        "status": "compensation_failed",
        "waiting": _without(s, e.step),
        "last_error": f"{e.step}: {e.reason}",
    }


def _saga_failed(s: SagaState, e: SagaFailed) -> dict[str, Any]:
    # Other members of a group still in flight stay awaited: their answers are still recorded.
    return {
        "status": "failed",
        "waiting": _without(s, e.step),
        "last_error": f"{e.step}: {e.reason}",
        "last_step": e.step,
    }


def _resumed(s: SagaState, e: OperatorResumed) -> dict[str, Any]:
    status = _RESUMED_AS.get(s.status, s.status)
    return {"status": status, "retry_base": dict(s.attempts)}


_RESUMED_AS: dict[str, str] = {"compensation_failed": "compensating", "failed": "running"}


def _parked(s: SagaState, e: SagaParked) -> dict[str, Any]:
    # No deadline while parked: what it awaited waits in `parked`, for the resume.
    parked = Parked(
        reason=e.reason,
        status=s.status,
        waiting=s.waiting,
        saga_version=e.saga_version,
        last_error=s.last_error,
    )
    return {"status": "parked", "parked": parked, "waiting": [], "last_error": e.reason}


def _unparked(s: SagaState, e: SagaUnparked) -> dict[str, Any]:
    # The deferred messages are decided on next, in the same decision (saga._orchestrator).
    if s.parked is None:
        return {"deferred": []}
    parked = s.parked
    return {
        "status": parked.status,
        "waiting": parked.waiting,
        "parked": None,
        "deferred": [],
        "last_error": parked.last_error,
    }


def _deferred(s: SagaState, e: InputDeferred) -> dict[str, Any]:
    return {"deferred": [*s.deferred, e]}


def _signal_received(s: SagaState, e: SignalReceived) -> dict[str, Any]:
    kept = KeptSignal(
        message_type=e.message_type, message_id=e.message_id, data=e.data, model=e.model, takers=e.takers
    )
    return {"signals": [*s.signals, kept]}


def _signal_gone(s: SagaState, e: SignalConsumed | SignalIgnored) -> dict[str, Any]:
    return {"signals": [k for k in s.signals if k.message_id != e.message_id]}


def _wait_cancelled(s: SagaState, e: WaitCancelled) -> dict[str, Any]:
    return {"waiting": _without(s, e.step)}


def _compensation_requested(s: SagaState, e: CompensationRequested) -> dict[str, Any]:
    if s.parent is None:
        return {}
    return {"parent": s.parent.model_copy(update={"step": e.step, "phase": e.phase, "attempt": e.attempt})}


def _migrated(s: SagaState, e: SagaMigrated) -> dict[str, Any]:
    """Every step the saga names takes its new name; a dropped step is forgotten."""
    gone = set(e.dropped)

    def new(name: str) -> str:
        return e.renamed.get(name, name)

    def steps(names: list[str]) -> list[str]:
        return [new(n) for n in names if n not in gone]

    def waits(waiting: list[Awaiting]) -> list[Awaiting]:
        return [w.model_copy(update={"step": new(w.step)}) for w in waiting if w.step not in gone]

    changes: dict[str, Any] = {
        "saga_version": e.to_version,
        "fingerprint": e.to_fingerprint,
        "done": steps(s.done),
        "timed_out": steps(s.timed_out),
        "to_compensate": steps(s.to_compensate),
        "waiting": waits(s.waiting),
        "attempts": {
            _renamed_key(k, e.renamed): n for k, n in s.attempts.items() if k.partition(":")[2] not in gone
        },
        "retry_base": {_renamed_key(k, e.renamed): n for k, n in s.retry_base.items()},
        "children": {new(step): child for step, child in s.children.items() if step not in gone},
        "signals": [k.model_copy(update={"takers": steps(k.takers)}) for k in s.signals],
        "renamed": {**{old: new(now) for old, now in s.renamed.items()}, **e.renamed},
        "last_step": None if s.last_step is None or s.last_step in gone else new(s.last_step),
    }
    if e.data is not None:
        changes["data"] = e.data
    if s.parked is not None:  # parked for its version: now for the new one (the migration takes it up)
        version = None if s.parked.saga_version is None else e.to_version
        changes["parked"] = s.parked.model_copy(
            update={"waiting": waits(s.parked.waiting), "saga_version": version}
        )
    return changes


def _renamed_key(key: str, renamed: dict[str, str]) -> str:
    phase, _, step = key.partition(":")
    return f"{phase}:{renamed.get(step, step)}"


# Each event's changes to the state; `apply` makes the new state in one copy.
_FOLD: dict[type[BaseModel], Callable[[SagaState, Any], dict[str, Any]]] = {
    SagaStarted: _started,
    StepRequested: _requested,
    StepSucceeded: _succeeded,
    StepFailed: _failed,
    StepTimedOut: _timed_out,
    RetryScheduled: _retry,
    CompensationStarted: _compensation_started,
    StepCompensated: _compensated_step,
    ReplyIgnored: _ignored,
    SagaCompleted: _completed,
    SagaCompensated: _compensated,
    CompensationFailed: _compensation_failed,
    SagaFailed: _saga_failed,
    OperatorResumed: _resumed,
    SagaParked: _parked,
    SagaUnparked: _unparked,
    TimerSet: _timer_set,
    SignalReceived: _signal_received,
    SignalConsumed: _signal_gone,
    SignalIgnored: _signal_gone,
    WaitCancelled: _wait_cancelled,
    CompensationAdded: _compensation_added,
    CompensationRequested: _compensation_requested,
    SagaMigrated: _migrated,
    InputDeferred: _deferred,
}


def apply(state: SagaState, event: BaseModel) -> SagaState:
    return state.model_copy(update={**_FOLD[type(event)](state, event), "version": state.version + 1})


def fold(saga_id: str, events: Iterable[BaseModel]) -> SagaState:
    state = SagaState(saga_id=saga_id)
    for event in events:
        state = apply(state, event)
    return state


__all__ = [
    "TERMINAL",
    "Awaiting",
    "KeptSignal",
    "Parked",
    "SagaState",
    "StateFields",
    "Status",
    "apply",
    "fold",
]

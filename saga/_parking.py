"""Which steps a saga needs that a definition lacks, and the reason a parked saga shows.

A step renamed or removed while sagas run leaves their events naming a step the deployed
definition does not have. The decider parks such a saga (`SagaParked`) instead of guessing.
A worker that lacks the saga's whole version parks it too (`park_for_version`), keeping the
messages that come meanwhile for the worker that has it.
"""

from __future__ import annotations

import logging
from functools import reduce
from typing import Any

from pydantic import BaseModel

from saga._decision import (
    CompensateRequest,
    DeadlineDue,
    Decision,
    Input,
    LocalDone,
    LocalFailed,
    Migrate,
    Reply,
    Resume,
    Signal,
    Start,
)
from saga._definition import Saga
from saga._errors import SagaError
from saga._events import InputDeferred, ReplyIgnored, SagaParked, SignalIgnored
from saga._state import SagaState, apply
from saga._versions import Versions

log = logging.getLogger("saga._orchestrator")  # where operators look for parked sagas


def missing_steps(saga: type[Saga[Any]], state: SagaState) -> list[str]:
    """The steps this saga awaits, has done, must undo or must run again that `saga` lacks."""
    before = state.parked
    waiting = before.waiting if before is not None else state.waiting
    status = before.status if before is not None else state.status
    wanted = [w.step for w in waiting]
    wanted += [*state.done, *state.to_compensate]
    if status == "failed" and state.last_step is not None:
        wanted.append(state.last_step)
    return list(dict.fromkeys(name for name in wanted if not saga.has_step(name)))


def park_reason(saga: type[Saga[Any]], state: SagaState, missing: list[str]) -> str:
    names = ", ".join(repr(name) for name in missing)
    which = f"step {names} of {saga.name} is" if len(missing) == 1 else f"steps {names} of {saga.name} are"
    has = ", ".join(step.name for step in saga.all_steps())
    them = "it" if len(missing) == 1 else "them"
    return (
        f"{which} not in the deployed definition (it has: {has}); "
        f"deploy a definition that has {them}, then `saga resume {state.saga_id} --note ...`"
    )


def park_for_version(state: SagaState, given: Input, reason: str) -> Decision:
    """A worker without the saga's version cannot decide for it: it parks the saga (once) and
    keeps what came (`InputDeferred`), so that a worker with that version decides on it later.
    A due deadline is not kept: unparking sets the saga's deadlines again. Pure."""
    if isinstance(given, Resume | Migrate | Start | LocalDone | LocalFailed):
        raise SagaError(f"saga {state.saga_id}: {reason}")
    events: list[BaseModel] = []
    compensate = isinstance(given, CompensateRequest)  # a completed child re-opens for it: kept
    if state.terminal and not compensate:
        events.append(_ignored(given, f"the saga is {state.status}"))
    else:
        if state.status != "parked":
            cause = _cause(given)
            events.append(SagaParked(missing=[], cause=cause, reason=reason, saga_version=state.saga_version))
        if not isinstance(given, DeadlineDue):
            events.append(_deferred(given))
    return Decision(state=reduce(apply, events, state), events=tuple(events))


def _cause(given: Reply | Signal | DeadlineDue | CompensateRequest) -> str:
    if isinstance(given, Reply):
        return f"reply {given.message_type} to {given.step}/{given.phase} #{given.attempt}"
    if isinstance(given, Signal):
        return f"signal {given.message_type} {given.message_id}"
    if isinstance(given, DeadlineDue):
        return f"{given.kind} deadline of {given.step}/{given.phase} #{given.attempt}"
    return f"the parent's request to compensate ({given.reason})"


def _ignored(given: Reply | Signal | DeadlineDue | CompensateRequest, why: str) -> BaseModel:
    if isinstance(given, Signal):
        return SignalIgnored(message_type=given.message_type, message_id=given.message_id, reason=why)
    if isinstance(given, Reply):
        return ReplyIgnored(step=given.step, phase=given.phase, attempt=given.attempt, reason=why)
    return ReplyIgnored(step=None, phase=None, attempt=None, reason=f"{_cause(given)}: {why}")


def _deferred(given: Reply | Signal | CompensateRequest) -> InputDeferred:
    if isinstance(given, Reply):
        return InputDeferred(
            kind="reply",
            message_type=given.message_type,
            message_id=given.message_id,
            data=given.message.model_dump(mode="json"),
            step=given.step,
            phase=given.phase,
            attempt=given.attempt,
        )
    if isinstance(given, Signal):
        return InputDeferred(
            kind="signal",
            message_type=given.message_type,
            message_id=given.message_id,
            data=given.message.model_dump(mode="json"),
        )
    request = {"reason": given.reason, "step": given.step, "phase": given.phase, "attempt": given.attempt}
    return InputDeferred(kind="compensate", message_type="", message_id=None, data=request)


def revived(deferred: InputDeferred, model: type[BaseModel] | None) -> Reply | Signal | CompensateRequest:
    """A deferred message as the decider's input again (`model`: its registered class)."""
    if deferred.kind == "compensate":
        return CompensateRequest(**deferred.data)
    if model is None:
        raise SagaError(f"deferred message {deferred.message_type} is no longer registered in the app")
    message = model.model_validate(deferred.data)
    if deferred.kind == "signal":
        return Signal(deferred.message_type, message, deferred.message_id or "")
    return Reply(
        deferred.message_type,
        message,
        deferred.step,
        deferred.phase,
        deferred.attempt,
        deferred.message_id,
    )


def absent_reason(versions: Versions, state: SagaState) -> str:
    """Why a saga whose version this worker lacks is parked, and what to do."""
    name, version = state.saga_type, state.saga_version
    newest = max(versions.of(name), default=version)
    return (
        f"version {version} of {name} is not deployed on this worker (it has: {versions.describe(name)}); "
        f"deploy {name} version {version} beside the newest (a worker with it takes the saga up by itself), "
        f"or move the saga: saga migrate {name}@{version} --to {newest} --apply"
    )


def log_parked(decision: Decision) -> None:
    """Once per parking: a parked saga takes no deadline, and ignores replies without a word."""
    for event in decision.events:
        if isinstance(event, SagaParked):
            state = decision.state
            log.warning(
                "saga %s (%s) parked on %s: %s", state.saga_id, state.saga_type, event.cause, event.reason
            )

"""Signals: a message to a running saga, sent from outside it in the caller's transaction.

A signal is one outbox row to the saga type's reply topic, keyed by the saga id (so it keeps
its order among the saga's replies), its envelope phase "signal". The orchestrator hands it to
the decider as `Signal`; a `WaitFor` step takes it, or the saga keeps it until one does. Being
an outbox row, a signal is sent only if the caller's transaction commits: one that starts the
saga may signal it at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import MessageRegistry, MessageTypeError, Outbox
from saga._definition import Saga
from saga._errors import UnknownSagaError
from saga._language import WaitStep
from saga._protocol import CHILD_ENDED, COMPENSATE_SAGA, STEP_REFUSED, Topics, saga_id_for
from saga._starting import MAX_KEY_LENGTH
from saga._versions import Versions

SIGNAL_PHASE = "signal"
_INTERNAL = frozenset({STEP_REFUSED, CHILD_ENDED, COMPENSATE_SAGA})


async def send_signal(
    conn: AsyncConnection,
    owner: str,
    sagas: Versions,
    outbox: Outbox,
    topics: Topics,
    saga: type[Saga[Any]],
    message: BaseModel,
    *,
    saga_id: str | None,
    key: str | None,
) -> str:
    """Put the signal in the outbox in the caller's transaction; the saga's id. `owner` names
    the App or Orchestrator in errors."""
    target = signal_target(owner, sagas, outbox.registry, saga, message, saga_id=saga_id, key=key)
    envelope = outbox.envelope(
        message,
        saga_id=target,
        saga_type=saga.name,
        phase=SIGNAL_PHASE,
        correlation_id=target,
    )
    await outbox.put(conn, message, topic=topics.replies(saga.name), key=target, envelope=envelope)
    return target


def signal_target(
    owner: str,
    sagas: Versions,
    messages: MessageRegistry,
    saga: type[Saga[Any]],
    message: BaseModel,
    *,
    saga_id: str | None,
    key: str | None,
) -> str:
    """The id of the saga a signal goes to, once the call is checked: ValueError for the
    wrong arguments, UnknownSagaError for a saga class not in `owner`, MessageTypeError for a
    message the saga cannot take."""
    if (saga_id is None) == (key is None):
        raise ValueError(
            f"signal to {getattr(saga, 'name', saga)!r}: pass exactly one of saga_id= (the id start returned) "
            f"or key= (the key it was started with), got saga_id={saga_id!r}, key={key!r}"
        )
    if not (isinstance(saga, type) and issubclass(saga, Saga)) or not sagas.has(saga):
        known = ", ".join(sagas.names()) or "none"
        raise UnknownSagaError(f"signal: {saga!r} is not one of the {owner}'s sagas (it has: {known})")
    if not isinstance(message, BaseModel):
        raise TypeError(f"signal to {saga.name}: the message must be a pydantic model, got {message!r:.120}")
    model = type(message)
    try:
        name = messages.type_of_model(model).name
    except MessageTypeError:
        raise MessageTypeError(
            f"signal to {saga.name}: {model.__name__} is not registered in the {owner}'s MessageRegistry; "
            f'register it: @messages.message("<service>.<name>") on the class'
        ) from None
    if name in _INTERNAL:
        raise MessageTypeError(
            f"signal to {saga.name}: {model.__name__} ({name}) is the saga runtime's own message"
        )
    if not any(issubclass(s, WaitStep) and model in s.signals for s in saga.all_steps()):
        waits = sorted({m.__name__ for s in saga.all_steps() if issubclass(s, WaitStep) for m in s.signals})
        raise MessageTypeError(
            f"signal to {saga.name}: no step of it waits for {model.__name__} "
            f"(it waits for: {', '.join(waits) or 'no signal'}); it would be kept and never taken"
        )
    if saga_id is not None:
        if not isinstance(saga_id, str) or not saga_id:
            raise ValueError(f"signal to {saga.name}: saga_id must be a non-empty string, got {saga_id!r}")
        return saga_id
    if not isinstance(key, str) or not key or "\x00" in key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"signal to {saga.name}: a key is a non-empty string of at most {MAX_KEY_LENGTH} "
            f"characters without NUL, got {key!r:.120}"
        )
    return saga_id_for(saga.name, key)

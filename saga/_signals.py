"""Signals for the decider: which waits take a signal, the signals kept for a wait, and the
message a wait takes back out of a kept signal. Pure."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from saga._definition import Saga
from saga._language import WaitStep
from saga._state import KeptSignal, SagaState


def takers(saga: type[Saga[Any]], state: SagaState, message: BaseModel) -> list[str]:
    """The waits that may still take `message`: those of its type not done yet, in step order.
    None while the saga is not going forward (compensating, ended); a failed saga goes on
    once resumed, so its signals are kept."""
    status = state.parked.status if state.parked is not None else state.status
    if status not in ("running", "failed"):
        return []
    done = set(state.done)
    return [
        step.name
        for step in saga.all_steps()
        if issubclass(step, WaitStep) and step.name not in done and isinstance(message, step.signals)
    ]


def kept_for(state: SagaState, step: str) -> list[KeptSignal]:
    """The kept signals a wait takes, oldest first."""
    return [kept for kept in state.signals if step in kept.takers]


def taken(step: type[WaitStep[Any]], kept: KeptSignal) -> BaseModel:
    """The signal as its model again, for `on_signal`."""
    model = next((m for m in step.signals if m.__name__ == kept.model), step.signals[0])
    return model.model_validate(kept.data)

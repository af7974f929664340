"""The checks of a saga start, before anything is written: the class is the newest deployed
version of its saga, the data is its model, the keys are usable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from saga._definition import Saga
from saga._errors import SagaError, UnknownSagaError
from saga._versions import Versions

MAX_KEY_LENGTH = 500


def check_start(
    versions: Versions, saga: type[Saga[Any]], data: Sequence[BaseModel], keys: Sequence[str] | None
) -> None:
    if saga.name not in versions.newest():
        raise UnknownSagaError(f"saga type {saga.name!r} is not registered with this orchestrator")
    newest = versions.newest()[saga.name]
    if saga is not newest:
        if not versions.has(saga):
            raise UnknownSagaError(
                f"{saga.__qualname__} (saga {saga.name} version {saga.version}) is not registered with "
                f"this orchestrator (it has: {versions.describe(saga.name)})"
            )
        raise SagaError(
            f"new {saga.name} sagas start on its newest version, {newest.version} ({newest.__qualname__}), "
            f"not version {saga.version} ({saga.__qualname__}): start {newest.__qualname__}"
        )
    for item in data:
        if not isinstance(item, saga.data_model):
            raise TypeError(
                f"saga {saga.name} takes {saga.data_model.__name__} data, got {type(item).__name__}"
            )
    if keys is not None and len(keys) != len(data):
        raise ValueError(f"start_many: {len(keys)} keys for {len(data)} sagas")
    for key in keys or ():
        if not isinstance(key, str) or not key or "\x00" in key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(
                f"saga {saga.name}: a start key is a non-empty string of at most {MAX_KEY_LENGTH} "
                f"characters without NUL, got {key!r:.120}"
            )

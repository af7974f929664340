"""The checks of a saga start, before anything is written: the class is the newest deployed
version of its saga, the data is its model, the keys are usable."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import EventStore, driver_connection
from saga import _repository as repo
from saga._definition import Saga
from saga._errors import SagaError, UnknownSagaError
from saga._protocol import saga_id_for, stream_of
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


async def new_saga_ids(
    conn: AsyncConnection, store: EventStore, saga: type[Saga[Any]], count: int, keys: Sequence[str] | None
) -> tuple[list[str], set[str]]:
    """The ids of `count` sagas to start, and those of them already started (with a key that
    named a saga before). Keyed ids are locked until the caller's transaction ends."""
    if keys is None:
        return [str(uuid.uuid4()) for _ in range(count)], set()
    ids = [saga_id_for(saga.name, key) for key in keys]
    # Under the sagas' locks a concurrent start with the same key has either committed (and
    # we see its stream) or not begun: same saga, started once.
    driver = await driver_connection(conn)
    async with driver.pipeline():
        await repo.lock(driver, sorted(set(ids)))
        versions = await store.stream_versions([stream_of(i) for i in ids], conn=conn)
    return ids, {i for i in ids if versions[stream_of(i)]}

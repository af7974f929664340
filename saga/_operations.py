"""What operators do: list, inspect, replay and rebuild sagas (drawing one: saga._graph). The CLI
only renders these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import driver_connection
from outbox import DeadLetterReader, KafkaConnection, Outbox
from saga import _repository as repo
from saga._errors import SagaError, UnknownSagaError
from saga._orchestrator import Orchestrator
from saga._protocol import DEAD_LETTER_SUFFIX, STREAM_PREFIX, saga_id_for, saga_id_of, stream_of
from saga._show import Read, language_view
from saga._state import SagaState, fold

INSTANCE_COLUMNS = repo.INSTANCE_COLUMNS
ACTIVE = repo.ACTIVE


async def list_sagas(
    engine: AsyncEngine,
    *,
    saga_type: str | None = None,
    status: str | None = None,
    older_than_s: float | None = None,
    stuck_after_s: float | None = None,
    limit: int = 100,
    key: str | None = None,
) -> list[dict[str, Any]]:
    """Sagas from the read model, newest first. `stuck_after_s`: active and unchanged that long,
    or stopped in compensation_failed / failed / parked. `key`: started with this key."""
    async with engine.connect() as conn:
        return await repo.list_instances(
            await driver_connection(conn),
            saga_type=saga_type,
            status=status,
            older_than_s=older_than_s,
            stuck_after_s=stuck_after_s,
            limit=limit,
            key=key,
        )


async def resolve(orchestrator: Orchestrator, ref: str, saga_type: str | None = None) -> str:
    """The id of the saga that `ref` names: its id, or the key it was started with. A key is
    unique per saga type (the id derives from both), so a key that started sagas of several
    types needs `saga_type`."""
    if saga_type is not None and saga_type not in orchestrator.sagas:
        known = ", ".join(sorted(orchestrator.sagas))
        raise UnknownSagaError(f"no saga type {saga_type!r} in the app (it has: {known})")
    if await _exists(orchestrator, ref):
        return ref
    found = []
    for name in [saga_type] if saga_type is not None else sorted(orchestrator.sagas):
        if await _exists(orchestrator, saga_id := saga_id_for(name, ref)):
            found.append((name, saga_id))
    if not found:
        raise UnknownSagaError(f"no saga with id or key {ref!r}")
    if len(found) > 1:
        listed = ", ".join(f"{name} ({saga_id})" for name, saga_id in found)
        raise SagaError(f"key {ref!r} started {len(found)} sagas: {listed}; pass --type to pick one")
    return found[0][1]


async def _exists(orchestrator: Orchestrator, saga_id: str) -> bool:
    return bool(await orchestrator.store.load(stream_of(saga_id), to_version=1))


def state_json(state: SagaState) -> dict[str, Any]:
    """The state as JSON, with `awaiting` (the first of `waiting`) for the scripts that read it."""
    awaiting = state.awaiting.model_dump(mode="json") if state.awaiting is not None else None
    return {**state.model_dump(mode="json"), "awaiting": awaiting}


def state_view(state: SagaState) -> dict[str, Any]:
    """The state as operators read it: `done` holds the steps that succeeded, `timed_out` the
    remote steps whose reply never came (they may have acted; compensation undoes them too)."""
    view = state_json(state)
    view["done"] = [step for step in state.done if step not in state.timed_out]
    return view


@dataclass
class SagaDetails:
    state: SagaState
    timeline: list[dict[str, Any]]
    in_flight: list[dict[str, Any]]
    deadlines: list[dict[str, Any]]  # one per step waited on, soonest first
    language: dict[str, Any]  # groups, waits, timers, kept signals, children, parent (saga._show)


async def show(orchestrator: Orchestrator, saga_id: str) -> SagaDetails:
    events = await orchestrator.store.load(stream_of(saga_id))
    if not events:
        raise UnknownSagaError(f"no saga with id {saga_id!r}")
    timeline = [
        {"version": e.version, "at": e.recorded_at, "type": e.type, "event": e.event.model_dump(mode="json")}
        for e in events
    ]
    state = fold(saga_id, (e.event for e in events))
    async with orchestrator.engine.connect() as conn:
        in_flight = await Outbox.pending(conn, saga_id)
        deadlines = await repo.deadline_rows(await driver_connection(conn), saga_id)
        children = await _children(await driver_connection(conn), state)
    read = Read(deadlines=deadlines, children=children, signal_name=_signal_name(orchestrator))
    return SagaDetails(
        state=state,
        timeline=timeline,
        in_flight=[
            {
                "topic": m.topic,
                "message_type": m.message_type,
                "step": m.step,
                "attempt": m.attempt,
                "queued_at": m.created_at,
            }
            for m in in_flight
        ],
        deadlines=deadlines,
        language=language_view(
            orchestrator.versions.get(state.saga_type, state.saga_version), state, timeline, read
        ),
    )


def _signal_name(orchestrator: Orchestrator) -> Callable[[type[BaseModel]], str]:
    """A signal's registered type name (what kept signals show), else its class name."""
    registered = set(orchestrator.messages.models())

    def name(model: type[BaseModel]) -> str:
        return orchestrator.messages.type_of_model(model).name if model in registered else model.__name__

    return name


async def _children(driver: Any, state: SagaState) -> dict[str, dict[str, Any]]:
    """The saga_instances rows of the saga's children, by child id."""
    if not state.children:
        return {}
    rows = await repo.instance_rows(driver, list(state.children.values()))
    return {row[0]: dict(zip(INSTANCE_COLUMNS, row, strict=True)) for row in rows}


async def replay(orchestrator: Orchestrator, saga_id: str, at_version: int | None = None) -> SagaState:
    """The saga's state as it was at `at_version` (all events when None): time travel."""
    events = await orchestrator.store.load(stream_of(saga_id), to_version=at_version)
    if not events:
        raise UnknownSagaError(f"no saga with id {saga_id!r}")
    if at_version is not None and events[-1].version < at_version:
        last = events[-1].version
        raise SagaError(
            f"saga {saga_id} has no version {at_version}: its last version is {last} "
            f"(replay --at 1 to {last})"
        )
    return fold(saga_id, (e.event for e in events))


@dataclass(frozen=True)
class Difference:
    saga_id: str
    column: str
    live: Any
    rebuilt: Any


def _comparable(row: Sequence[Any]) -> tuple[Any, ...]:
    values = list(row)
    values[6] = orjson.loads(values[6]) if isinstance(values[6], str) else values[6]
    return tuple(values)


def _compare(saga_id: str, live: tuple[Any, ...] | None, state: SagaState | None) -> list[Difference]:
    if live is None and state is None:
        return []
    if live is None:
        return [Difference(saga_id, "row", None, "missing from saga_instances")]
    if state is None:
        return [Difference(saga_id, "row", "present", "no events for it")]
    want = _comparable(repo.instance_row(state))
    return [
        Difference(saga_id, column, have, should)
        for column, have, should in zip(INSTANCE_COLUMNS, live, want, strict=True)
        if have != should
    ]


async def _state_or_none(orchestrator: Orchestrator, saga_id: str, conn: Any = None) -> SagaState | None:
    events = await orchestrator.store.load(stream_of(saga_id), conn=conn)
    return fold(saga_id, (e.event for e in events)) if events else None


async def _recheck(orchestrator: Orchestrator, saga_id: str) -> list[Difference]:
    """A saga's row against its events in one snapshot: a saga that a live worker moved (or
    started) between the two reads of the first pass is no difference."""
    async with orchestrator.engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            driver = await driver_connection(conn)
            await repo.lock_one(driver, saga_id)
            rows = {r[0]: _comparable(r) for r in await repo.instance_rows(driver, [saga_id])}
            state = await _state_or_none(orchestrator, saga_id, conn)
    return _compare(saga_id, rows.get(saga_id), state)


async def _rebuild_one(orchestrator: Orchestrator, saga_id: str) -> None:
    """Under the saga's own lock, read and write see one consistent version: a worker deciding
    on this saga waits, and the rebuilt row replaces whatever the row held. A row whose saga
    has no events (checked under the lock, so not one being started now) is deleted."""
    async with orchestrator.engine.begin() as conn:
        driver = await driver_connection(conn)
        await repo.lock_one(driver, saga_id)
        state = await _state_or_none(orchestrator, saga_id, conn)
        if state is None:
            await repo.delete_instances(driver, [saga_id])
        else:
            await repo.replace_instance(driver, state)


async def rebuild(
    orchestrator: Orchestrator, *, verify: bool = False, progress: Callable[[int, int], None] | None = None
) -> list[Difference]:
    """Recompute saga_instances from the event store alone; safe beside live workers.

    With `verify`, nothing is written: a first pass compares each row with its events, and
    each difference it finds is checked again in one snapshot under the saga's lock, so
    sagas that moved meanwhile are not reported."""
    async with orchestrator.engine.connect() as conn:
        live = {r[0]: _comparable(r) for r in await repo.all_instance_rows(await driver_connection(conn))}
    streams = await orchestrator.store.stream_ids(STREAM_PREFIX)
    saga_ids = [saga_id_of(s) for s in streams]
    # Rows of sagas with no stream in the list: deleted only if, under the lock, they still have none.
    candidates = [*saga_ids, *sorted(set(live) - set(saga_ids))]
    differences: list[Difference] = []
    for done, saga_id in enumerate(candidates, start=1):
        if verify:
            state = await _state_or_none(orchestrator, saga_id)
            if _compare(saga_id, live.get(saga_id), state):
                differences += await _recheck(orchestrator, saga_id)
        else:
            await _rebuild_one(orchestrator, saga_id)
        if progress is not None:
            progress(done, len(candidates))
    return differences


async def status(engine: AsyncEngine) -> dict[str, Any]:
    """Relay lag, sagas per status, the oldest active saga."""
    async with engine.connect() as conn:
        lag = await Outbox.counts(conn)
        driver = await driver_connection(conn)
        per_status = await repo.count_by_status(driver)
        oldest = await repo.oldest_active(driver)
    return {
        "outbox_pending": lag.pending,
        "outbox_oldest_age_s": lag.oldest_age_s,
        "sagas": per_status,
        "oldest_active": oldest,
    }


async def dead_letter_counts(kafka: str | KafkaConnection, prefix: str) -> dict[str, int]:
    """Records in each dead-letter topic under the prefix: end minus beginning offsets of each
    partition, so records deleted by retention are not counted; nothing is consumed."""
    async with DeadLetterReader(kafka, suffix=DEAD_LETTER_SUFFIX) as reader:
        return {t.topic: t.records for t in await reader.topics(prefix)}

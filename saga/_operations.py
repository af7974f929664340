"""What operators do: list, inspect, replay, rebuild and draw sagas. The CLI only renders these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import driver_connection
from saga._definition import LocalStep, RemoteStep, Saga, StepKind
from saga._orchestrator import _LOCK_SAGA, Orchestrator, UnknownSagaError, instance_row, stream_of
from saga._state import SagaState, fold

INSTANCE_COLUMNS = ("saga_id", "saga_type", "key", "status", "step", "version", "data", "last_error")
ACTIVE = ("running", "compensating")


async def list_sagas(
    engine: AsyncEngine,
    *,
    saga_type: str | None = None,
    status: str | None = None,
    older_than_s: float | None = None,
    stuck_after_s: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Sagas from the read model, newest first. `stuck_after_s`: active and unchanged that long,
    or stopped in compensation_failed / failed."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if saga_type:
        where.append("saga_type = :saga_type")
        params["saga_type"] = saga_type
    if status:
        where.append("status = :status")
        params["status"] = status
    if older_than_s is not None:
        where.append("created_at < now() - make_interval(secs => :older)")
        params["older"] = older_than_s
    if stuck_after_s is not None:
        where.append(
            "(status IN ('compensation_failed', 'failed') OR "
            "(status IN ('running', 'compensating') AND updated_at < now() - make_interval(secs => :stuck)))"
        )
        params["stuck"] = stuck_after_s
    sql = (
        "SELECT saga_id, saga_type, key, status, step, version, last_error, created_at, updated_at "
        f"FROM saga_instances WHERE {' AND '.join(where)} ORDER BY created_at DESC, saga_id LIMIT :limit"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql), params)).mappings().all()
    return [dict(r) for r in rows]


@dataclass
class SagaDetails:
    state: SagaState
    timeline: list[dict[str, Any]]
    in_flight: list[dict[str, Any]]
    deadline: dict[str, Any] | None


async def show(orchestrator: Orchestrator, saga_id: str) -> SagaDetails:
    events = await orchestrator.store.load(stream_of(saga_id))
    if not events:
        raise UnknownSagaError(f"no saga with id {saga_id!r}")
    timeline = [
        {"version": e.version, "at": e.recorded_at, "type": e.type, "event": e.event.model_dump(mode="json")}
        for e in events
    ]
    async with orchestrator.engine.connect() as conn:
        driver = await driver_connection(conn)
        outbox = await (
            await driver.execute(
                "SELECT topic, headers->>'message_type', headers->>'step', headers->>'attempt', created_at "
                "FROM outbox WHERE key = %s ORDER BY id",
                (saga_id,),
            )
        ).fetchall()
        deadline = await (
            await driver.execute(
                "SELECT step, phase, attempt, kind, due_at FROM saga_deadlines WHERE saga_id = %s", (saga_id,)
            )
        ).fetchone()
    return SagaDetails(
        state=fold(saga_id, (e.event for e in events)),
        timeline=timeline,
        in_flight=[
            {"topic": t, "message_type": m, "step": s, "attempt": a, "queued_at": at}
            for t, m, s, a, at in outbox
        ],
        deadline=dict(zip(("step", "phase", "attempt", "kind", "due_at"), deadline, strict=True))
        if deadline
        else None,
    )


async def replay(orchestrator: Orchestrator, saga_id: str, at_version: int | None = None) -> SagaState:
    """The saga's state as it was at `at_version` (all events when None): time travel."""
    events = await orchestrator.store.load(stream_of(saga_id), to_version=at_version)
    if not events:
        raise UnknownSagaError(f"no saga with id {saga_id!r}")
    return fold(saga_id, (e.event for e in events))


@dataclass(frozen=True)
class Difference:
    saga_id: str
    column: str
    live: Any
    rebuilt: Any


_REBUILD_UPSERT = """
    INSERT INTO saga_instances (saga_id, saga_type, key, status, step, version, data, last_error)
    VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)
    ON CONFLICT (saga_id) DO UPDATE SET
        saga_type = excluded.saga_type, key = excluded.key, status = excluded.status, step = excluded.step,
        version = excluded.version, data = excluded.data, last_error = excluded.last_error, updated_at = now()
"""


def _comparable(row: Sequence[Any]) -> tuple[Any, ...]:
    values = list(row)
    values[6] = orjson.loads(values[6]) if isinstance(values[6], str) else values[6]
    return tuple(values)


async def rebuild(
    orchestrator: Orchestrator, *, verify: bool = False, progress: Callable[[int, int], None] | None = None
) -> list[Difference]:
    """Recompute saga_instances from the event store alone.

    Each saga is rebuilt under the same per-saga lock the orchestrator takes for a decision,
    so running this beside live workers never undoes their work: a worker deciding on that
    saga waits a moment, or has already written and the rebuild reads its events. Rows with
    no events are deleted. With `verify`, nothing is written; the differences are returned.
    """
    engine = orchestrator.engine
    async with engine.connect() as conn:
        streams = (
            (
                await conn.execute(
                    text("SELECT DISTINCT stream_id FROM es_events WHERE stream_id LIKE 'saga:%' ORDER BY 1")
                )
            )
            .scalars()
            .all()
        )
        live_rows = (
            await conn.execute(
                text(f"SELECT {', '.join(INSTANCE_COLUMNS[:-2])}, data::text, last_error FROM saga_instances")
            )
        ).all()
    live = {row[0]: _comparable(row) for row in live_rows}
    differences: list[Difference] = []
    for done, stream in enumerate(streams, start=1):
        saga_id = stream.removeprefix("saga:")
        state = fold(saga_id, (e.event for e in await orchestrator.store.load(stream)))
        expected = instance_row(state)
        if verify:
            current = live.pop(saga_id, None)
            if current is None:
                differences.append(Difference(saga_id, "row", None, "missing from saga_instances"))
            else:
                want = _comparable(expected)
                differences += [
                    Difference(saga_id, column, have, should)
                    for column, have, should in zip(INSTANCE_COLUMNS, current, want, strict=True)
                    if have != should
                ]
        else:
            async with engine.begin() as conn:
                # Under the saga's own lock, read and write see one consistent version: a worker
                # deciding on this saga waits, and the rebuilt row can overwrite any bad row.
                driver = await driver_connection(conn)
                await driver.execute(_LOCK_SAGA, (saga_id,))
                locked_state = fold(
                    saga_id, (e.event for e in await orchestrator.store.load(stream, conn=conn))
                )
                await driver.execute(_REBUILD_UPSERT, instance_row(locked_state))
        if progress is not None:
            progress(done, len(streams))
    orphans = [saga_id for saga_id in live if f"saga:{saga_id}" not in set(streams)]
    if verify:
        differences += [Difference(saga_id, "row", "present", "no events for it") for saga_id in live]
    elif orphans:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM saga_instances WHERE saga_id = ANY(:ids)"), {"ids": orphans})
    return differences


def graph(saga: type[Saga[Any]]) -> str:
    """A Mermaid flowchart: steps forward, compensations backward, the pivot, the timeouts."""
    lines = ["flowchart TD", "    start([start])"]

    def label(step: Any) -> str:
        where = f"remote: {step.participant}" if issubclass(step, RemoteStep) else "local"
        extra = [where, step.kind.value]
        if step.timeout_s:
            extra.append(f"timeout {step.timeout_s:g}s")
        if step.retry.attempts > 1:
            extra.append(f"{step.retry.attempts} attempts")
        return f"{step.name}<br/>{' · '.join(extra)}"

    previous = "start"
    for step in saga.steps:
        shape = ("{{", "}}") if step.kind is StepKind.PIVOT else ("[", "]")
        lines.append(f'    {step.name}{shape[0]}"{label(step)}"{shape[1]}')
        lines.append(f"    {previous} --> {step.name}")
        previous = step.name
    lines.append("    completed([completed])")
    lines.append(f"    {previous} --> completed")
    undoable = [s for s in saga.steps if s.has_compensation()]
    if undoable:
        lines.append("    compensated([compensated])")
    for step in undoable:
        how = f"remote: {step.participant}" if issubclass(step, RemoteStep) else "local"
        lines.append(f'    undo_{step.name}["undo {step.name}<br/>{how}"]')
    pivot = saga.pivot_index()
    last_undoable = len(saga.steps) if pivot is None else pivot + 1
    for i, step in enumerate(saga.steps[:last_undoable]):
        before = [s for s in saga.steps[:i] if s.has_compensation()]
        target = f"undo_{before[-1].name}" if before else "compensated"
        lines.append(f"    {step.name} -. fails .-> {target}")
    for later, earlier in zip(undoable[::-1], undoable[::-1][1:], strict=False):
        lines.append(f"    undo_{later.name} -.-> undo_{earlier.name}")
    if undoable:
        lines.append(f"    undo_{undoable[0].name} -.-> compensated")
    local = [s.name for s in saga.steps if issubclass(s, LocalStep)]
    if local:
        lines.append(f"    classDef local stroke-dasharray: 4 2\n    class {','.join(local)} local")
    return "\n".join(lines)


async def status(engine: AsyncEngine) -> dict[str, Any]:
    """Relay lag, sagas per status, the oldest active saga."""
    async with engine.connect() as conn:
        pending, oldest_outbox = (
            await conn.execute(text("SELECT count(*), min(created_at) FROM outbox"))
        ).one()
        per_status: dict[str, int] = dict(
            (await conn.execute(text("SELECT status, count(*) FROM saga_instances GROUP BY 1"))).all()
        )
        oldest = (
            (
                await conn.execute(
                    text(
                        "SELECT saga_id, saga_type, status, created_at FROM saga_instances "
                        "WHERE status IN ('running', 'compensating') ORDER BY created_at LIMIT 1"
                    )
                )
            )
            .mappings()
            .first()
        )
        now: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
    return {
        "outbox_pending": pending,
        "outbox_oldest_age_s": (now - oldest_outbox).total_seconds() if oldest_outbox else 0.0,
        "sagas": per_status,
        "oldest_active": dict(oldest) if oldest else None,
    }


async def dead_letter_counts(bootstrap_servers: str, prefix: str) -> dict[str, int]:
    """Records in each dead-letter topic under the prefix (end offsets; nothing is consumed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await consumer.start()
    try:
        topics = sorted(
            t for t in await consumer.topics() if t.startswith(f"{prefix}.") and t.endswith(".dlq")
        )
        counts: dict[str, int] = {}
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            begin = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
            counts[topic] = sum(end[tp] - begin[tp] for tp in partitions)
        return counts
    finally:
        await consumer.stop()

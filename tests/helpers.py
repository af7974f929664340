"""Test helpers: waiting on conditions with deadlines, collecting Kafka records, and checking
the saga read model against the events."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import Envelope
from saga import Orchestrator, instance_row

_READ_MODEL = (
    "SELECT saga_id, saga_type, key, status, step, version, data::text, last_error FROM saga_instances"
)


def kafka_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """An envelope as the Kafka record headers the relay writes."""
    return [(k, v.encode()) for k, v in envelope.to_headers().items()]


async def wait_for(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], deadline_s: float, what: str
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `deadline_s` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        await asyncio.sleep(0.02)


class Collector:
    """Reads topics from the beginning into `records` until stopped."""

    def __init__(self, bootstrap: str, topics: Sequence[str], **options: Any) -> None:
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=f"collector-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            **options,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend(records)

    def headers(self, index: int) -> dict[str, str]:
        return {k: v.decode() for k, v in self.records[index].headers}


async def assert_read_model_matches_events(engine: AsyncEngine, orchestrator: Orchestrator) -> int:
    """For every saga: the state folded from its events equals its saga_instances row; returns
    how many sagas."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(_READ_MODEL))).all()
    for row in rows:
        expected = instance_row(await orchestrator.load_raw(row[0]))
        assert (*row[:6], orjson.loads(row[6]), row[7]) == (
            *expected[:6],
            orjson.loads(expected[6]),
            expected[7],
        )
    return len(rows)

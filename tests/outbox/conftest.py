from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database
from outbox import MessageRegistry, Outbox, Relay
from tests.outbox.messages import make_registry


@pytest.fixture
def registry() -> MessageRegistry:
    return make_registry()


@pytest.fixture
def outbox(registry: MessageRegistry) -> Outbox:
    return Outbox(registry)


@pytest.fixture
async def relay(database: Database, kafka_bootstrap: str) -> AsyncIterator[Relay]:
    worker = Relay(database, kafka_bootstrap, poll_interval_s=0.2, rebalance_interval_s=0.2)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@pytest.fixture
async def effects(engine: AsyncEngine) -> AsyncEngine:
    """The test database with a table `effects` for handlers to write to."""
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE effects (key text, seq int, applied int NOT NULL, PRIMARY KEY (key, seq))")
        )
    return engine

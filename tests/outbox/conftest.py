from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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
    worker = Relay(database, kafka_bootstrap, poll_interval_s=0.2, standby_interval_s=0.2)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()

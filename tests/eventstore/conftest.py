from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import EventRegistry, EventStore
from tests.eventstore.events import make_registry


@pytest.fixture
def registry() -> EventRegistry:
    return make_registry()


@pytest.fixture
async def store(engine: AsyncEngine, registry: EventRegistry) -> AsyncIterator[EventStore]:
    async with EventStore(engine, registry) as store:
        yield store

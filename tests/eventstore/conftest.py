from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import EventRegistry, EventStore
from tests.eventstore.events import make_registry


@pytest.fixture
def registry() -> EventRegistry:
    return make_registry()


@pytest.fixture
def store(engine: AsyncEngine, registry: EventRegistry) -> EventStore:
    return EventStore(engine, registry)

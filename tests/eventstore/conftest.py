from __future__ import annotations

import pytest

from eventstore import Database, EventRegistry, EventStore
from tests.eventstore.events import make_registry


@pytest.fixture
def registry() -> EventRegistry:
    return make_registry()


@pytest.fixture
def store(database: Database, registry: EventRegistry) -> EventStore:
    return EventStore(database, registry)

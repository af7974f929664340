"""Fixtures of the CLI tests: a run's own topics, the `saga` command on them, and an
orchestrator of the order app on the same topics (to make sagas in-process)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from eventstore import Database
from examples.orders.app import app as shop
from examples.orders.services import create_schema
from saga import Orchestrator
from tests.cli.test_cli import Cli


@pytest.fixture
def topic_prefix() -> str:
    return f"cli{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cli(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> Cli:
    return Cli(database_url, kafka_bootstrap, topic_prefix)


@pytest.fixture
async def orchestrator(database: Database, topic_prefix: str) -> AsyncIterator[Orchestrator]:
    await create_schema(database.engine)
    orch = shop.with_topic_prefix(topic_prefix).orchestrator(database)
    try:
        yield orch
    finally:
        await orch.aclose()

"""An orchestrator worker whose reply consumer dies fails, rather than fire deadlines without
ever reading a reply again (found by the testing kit's crash exploration)."""

from __future__ import annotations

import asyncio

import pytest

from saga import OrchestratorWorker
from saga.testing import System
from tests.testing.giftcards import app, create_tables

saga_app = app
saga_schema = create_tables


async def test_a_worker_whose_reply_consumer_died_fails_naming_it(saga_system: System) -> None:
    worker = OrchestratorWorker(
        saga_system.orchestrator,
        saga_system.config.services.kafka_bootstrap,
        deadline_interval_s=0.05,
        group_id=f"{saga_system.prefix}.second-orchestrator",
    )
    await worker.start()
    try:
        task = worker.replies._task  # the consumer's own task, as a bug or a kill would end it
        assert task is not None
        task.cancel()
        with pytest.raises(RuntimeError, match="the reply consumer was cancelled; the worker stops"):
            await asyncio.wait_for(worker.wait(), timeout=30)
    finally:
        with pytest.raises(RuntimeError, match="the reply consumer was cancelled"):
            await worker.stop()  # says again why it ended, and releases everything

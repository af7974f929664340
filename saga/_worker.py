"""The orchestrator worker: consumes replies and fires deadlines. Run several for availability."""

from __future__ import annotations

import logging
from typing import Any

from eventstore import Worker, driver_connection
from outbox import Consumer
from saga import _repository as repo
from saga._decision import DeadlineDue
from saga._orchestrator import Orchestrator

log = logging.getLogger(__name__)


async def fire_due_deadlines(orchestrator: Orchestrator, limit: int = 100) -> int:
    """Act on deadlines that are due (timeouts, scheduled retries), each in a transaction of
    its own. Safe from many workers: a saga another worker is deciding on is skipped."""
    engine = orchestrator.engine
    async with engine.connect() as conn:
        rows = await repo.due_deadlines(await driver_connection(conn), limit)
        await conn.rollback()
    fired = 0
    for due in rows:
        try:
            async with engine.begin() as conn:
                driver = await driver_connection(conn)
                if not await repo.try_lock(driver, due.saga_id):
                    continue  # another worker (or a reply) is on this saga right now
                if not await repo.still_due(driver, due):
                    continue
                given = DeadlineDue(due.step, due.phase, due.attempt, due.kind)
                await orchestrator.on_deadline(conn, due.saga_id, given)
                # When the saga had moved on, nothing was persisted: drop the stale row here.
                await repo.drop_deadline(driver, due)
                fired += 1
        except Exception:
            log.exception("saga %s: deadline %s failed; it stays due", due.saga_id, due)
    return fired


class OrchestratorWorker(Worker):
    """Replies drive sagas forward; due deadlines time steps out and run scheduled retries."""

    name = "orchestrator"

    def __init__(
        self,
        orchestrator: Orchestrator,
        bootstrap_servers: str,
        *,
        deadline_interval_s: float = 0.5,
        group_id: str | None = None,
        **consumer_options: Any,
    ) -> None:
        if deadline_interval_s <= 0:
            raise ValueError(f"deadline_interval_s must be > 0, got {deadline_interval_s}")
        super().__init__()
        self.orchestrator = orchestrator
        self.deadline_interval_s = deadline_interval_s
        self.replies = Consumer(
            orchestrator.database,
            bootstrap_servers,
            group_id=group_id or orchestrator.topics.orchestrator_group(),
            topics=orchestrator.reply_topics(),
            registry=orchestrator.messages,
            handlers=dict.fromkeys(orchestrator.messages.models(), orchestrator.handle_reply),
            batch_handler=orchestrator.handle_replies,
            **consumer_options,
        )

    async def _open(self) -> None:
        await self.replies.start()

    async def _close(self) -> None:
        await self.replies.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                fired = await fire_due_deadlines(self.orchestrator)
            except Exception:
                log.exception("orchestrator: firing deadlines failed; retrying")
                fired = 0
            if not fired:
                await self._backoff(self.deadline_interval_s)

"""The orchestrator worker: consumes replies and fires deadlines. Run several for availability."""

from __future__ import annotations

import logging
from typing import Any

from eventstore import Worker
from outbox import Consumer
from saga._orchestrator import Orchestrator

log = logging.getLogger(__name__)


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
            group_id=group_id or f"{orchestrator.topics.prefix}.orchestrator",
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
                fired = await self.orchestrator.fire_due_deadlines()
            except Exception:
                log.exception("orchestrator: firing deadlines failed; retrying")
                fired = 0
            if not fired:
                await self._backoff(self.deadline_interval_s)

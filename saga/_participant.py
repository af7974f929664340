"""Participants: a service's handlers for the commands that saga steps send.

Each handler runs in one transaction with the service's own effects, the inbox row, and the
reply in the outbox. A handler returns the success reply; raising `Refused(reason)` sends a
failure reply instead (its writes are rolled back to a savepoint first). Any other exception
is retried by the consumer runtime and then dead-lettered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox import Consumer, Envelope, MessageDecodeError, MessageRegistry, Outbox, child_traceparent
from saga._definition import Refused
from saga._orchestrator import StepRefused, Topics, with_saga_messages

CommandHandler = Callable[[AsyncConnection, Any, Envelope], Awaitable[BaseModel]]


class Participant(Consumer):
    """`Participant(engine, bootstrap, service="customers", messages=..., handlers={ReserveCredit: reserve})`."""

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str,
        *,
        service: str,
        messages: MessageRegistry,
        handlers: Mapping[type[BaseModel], CommandHandler],
        topic_prefix: str = "saga",
        **consumer_options: Any,
    ) -> None:
        self.service = service
        self.outbox = Outbox(with_saga_messages(messages))
        super().__init__(
            engine,
            bootstrap_servers,
            group_id=f"{topic_prefix}.{service}",
            topics=[Topics(topic_prefix).commands(service)],
            registry=messages,
            handlers={model: self._replying(handler) for model, handler in handlers.items()},
            **consumer_options,
        )

    def _replying(
        self, handler: CommandHandler
    ) -> Callable[[AsyncConnection, Any, Envelope], Awaitable[None]]:
        async def handle(conn: AsyncConnection, command: Any, envelope: Envelope) -> None:
            if not envelope.reply_topic or not envelope.saga_id:
                raise MessageDecodeError(
                    f"command {envelope.message_type} {envelope.message_id} has no reply topic"
                )
            try:
                async with conn.begin_nested():
                    reply = await handler(conn, command, envelope)
            except Refused as refusal:
                reply = StepRefused(reason=refusal.reason)
            reply_envelope = self.outbox.envelope(
                reply,
                saga_id=envelope.saga_id,
                saga_type=envelope.saga_type,
                step=envelope.step,
                phase=envelope.phase,
                attempt=envelope.attempt,
                correlation_id=envelope.correlation_id,
                causation_id=str(envelope.message_id),
                traceparent=child_traceparent(envelope.traceparent),
            )
            await self.outbox.put(
                conn, reply, topic=envelope.reply_topic, key=envelope.saga_id, envelope=reply_envelope
            )

        return handle

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

from outbox import (
    Consumer,
    Delivery,
    Envelope,
    MessageDecodeError,
    MessageRegistry,
    Outbox,
    Outgoing,
    child_traceparent,
)
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
        self.command_handlers = {messages.type_of_model(model).name: h for model, h in handlers.items()}
        super().__init__(
            engine,
            bootstrap_servers,
            group_id=f"{topic_prefix}.{service}",
            topics=[Topics(topic_prefix).commands(service)],
            registry=messages,
            handlers={model: self._replying(handler) for model, handler in handlers.items()},
            batch_handler=self._reply_all,
            **consumer_options,
        )

    def _replying(
        self, handler: CommandHandler
    ) -> Callable[[AsyncConnection, Any, Envelope], Awaitable[None]]:
        async def handle(conn: AsyncConnection, command: Any, envelope: Envelope) -> None:
            await self.outbox.put_many(conn, [await self._reply(conn, handler, command, envelope)])

        return handle

    async def _reply_all(self, conn: AsyncConnection, deliveries: list[Delivery]) -> None:
        """A fetch's commands in turn, then all their replies in one outbox statement."""
        replies = [
            await self._reply(conn, self.command_handlers[d.envelope.message_type], d.message, d.envelope)
            for d in deliveries
        ]
        await self.outbox.put_many(conn, replies)

    async def _reply(
        self, conn: AsyncConnection, handler: CommandHandler, command: Any, envelope: Envelope
    ) -> Outgoing:
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
        return Outgoing(reply, envelope.reply_topic, envelope.saga_id, reply_envelope)

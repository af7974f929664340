"""Participants: a service's handlers for the commands that saga steps send.

Each handler runs in one transaction with the service's own effects, the inbox row, and the
reply in the outbox (the commands of one fetch share that transaction). A handler returns the
success reply; raising `Refused(reason)` sends a failure reply instead (its writes are rolled
back to a savepoint first). Any other exception is retried by the consumer runtime and then
dead-lettered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import Database, crash_point, driver_connection
from outbox import (
    Consumer,
    Delivery,
    Envelope,
    KafkaConnection,
    MessageDecodeError,
    MessageRegistry,
    Outbox,
    Outgoing,
    caused_by,
    in_context,
    log_context_of,
)
from saga._definition import Refused
from saga._protocol import StepRefused, Topics, with_saga_messages
from saga._savepoint import StepSavepoint

CommandHandler = Callable[[AsyncConnection, Any, Envelope], Awaitable[BaseModel]]


class Participant(Consumer):
    """`Participant(database, bootstrap, service="customers", messages=..., handlers={ReserveCredit: reserve})`."""

    def __init__(
        self,
        database: Database,
        kafka: str | KafkaConnection,
        *,
        service: str,
        messages: MessageRegistry,
        handlers: Mapping[type[BaseModel], CommandHandler],
        topic_prefix: str = "saga",
        **consumer_options: Any,
    ) -> None:
        self.service = service
        self.naming = Topics(topic_prefix)
        self.outbox = Outbox(with_saga_messages(messages))
        self.command_handlers = {messages.type_of_model(model).name: h for model, h in handlers.items()}
        super().__init__(
            database,
            kafka,
            group_id=Topics(topic_prefix).participant_group(service),
            topics=[Topics(topic_prefix).commands(service)],
            registry=messages,
            handlers=dict.fromkeys(handlers, self._reply_one),
            batch_handler=self._reply_all,
            after_commit_point="participant.after_commit",
            **consumer_options,
        )

    def _addressed(self, envelope: Envelope) -> tuple[str, str]:
        """A command says which saga asks and where to answer (its saga id and reply topic);
        one that does not is dead-lettered."""
        what = f"command {envelope.message_type} {envelope.message_id}"
        if not envelope.saga_id:
            raise MessageDecodeError(f"{what} names no saga (no saga_id header)")
        if not envelope.reply_topic:
            raise MessageDecodeError(f"{what} has no reply topic (no reply_topic header)")
        if not self.naming.is_reply_topic(envelope.reply_topic):
            raise MessageDecodeError(
                f"{what} asks for replies on {envelope.reply_topic[:300]!r}, which is not a reply topic "
                f"under the prefix {self.naming.prefix!r} (<prefix>.<saga type>.replies)"
            )
        return envelope.saga_id, envelope.reply_topic

    async def _reply_one(self, conn: AsyncConnection, command: Any, envelope: Envelope) -> None:
        await self._reply_all(conn, [Delivery(self._reply_one, command, envelope)])

    async def _reply_all(self, conn: AsyncConnection, deliveries: list[Delivery]) -> None:
        """Each command's handler, a refusal undoing just its own writes; then all the
        replies in one outbox statement.

        Refusals are rare, so the handlers first run after one savepoint for them all: a
        savepoint per command would cost a round trip each and, past 64 in a transaction,
        slow every snapshot on the server (subtransactions overflow). At the first refusal,
        everything goes back to that savepoint and the commands run again, each after a
        savepoint of its own."""
        savepoint = StepSavepoint(await driver_connection(conn), "saga_participant_command")
        replies = await self._all_accepted(conn, savepoint, deliveries) if len(deliveries) > 1 else None
        if replies is None:
            replies = []
            for d in deliveries:
                with log_context_of(d.envelope), in_context(d.envelope.traceparent):
                    replies.append(await self._reply(conn, savepoint, d))
        await self.outbox.put_many(conn, replies)
        crash_point("participant.before_commit")

    async def _all_accepted(
        self, conn: AsyncConnection, savepoint: StepSavepoint, deliveries: list[Delivery]
    ) -> list[Outgoing] | None:
        """The replies when no command is refused; None, with their writes undone, when one is."""
        await savepoint.take()
        replies = []
        for d in deliveries:
            with log_context_of(d.envelope), in_context(d.envelope.traceparent):
                saga_id, reply_topic = self._addressed(d.envelope)
                try:
                    reply = await self.command_handlers[d.envelope.message_type](conn, d.message, d.envelope)
                except Refused:
                    await savepoint.roll_back()
                    return None
                replies.append(self._reply_to(d.envelope, reply, saga_id, reply_topic))
        return replies

    async def _reply(self, conn: AsyncConnection, savepoint: StepSavepoint, d: Delivery) -> Outgoing:
        envelope = d.envelope
        saga_id, reply_topic = self._addressed(envelope)
        await savepoint.take()
        try:
            reply = await self.command_handlers[envelope.message_type](conn, d.message, envelope)
        except Refused as refusal:
            await savepoint.roll_back()
            reply = StepRefused(reason=refusal.reason)
        return self._reply_to(envelope, reply, saga_id, reply_topic)

    def _reply_to(self, envelope: Envelope, reply: BaseModel, saga_id: str, reply_topic: str) -> Outgoing:
        reply_envelope = self.outbox.envelope(
            reply,
            saga_id=saga_id,
            saga_type=envelope.saga_type,
            step=envelope.step,
            phase=envelope.phase,
            attempt=envelope.attempt,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.message_id),
            traceparent=caused_by(envelope.traceparent),
        )
        return Outgoing(reply, reply_topic, saga_id, reply_envelope)

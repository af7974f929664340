"""What crosses between the decider and Kafka: the messages a decision sends, and the decider
input a consumed message becomes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import NO_STREAM, EventStore, NewEvents, RecordedEvent, driver_connection
from outbox import Envelope, MessageRegistry, Outbox, Outgoing, caused_by
from saga import _repository as repo
from saga._decision import CompensateRequest, Decision, Reply, SendCommand, Signal
from saga._definition import Saga
from saga._errors import UnknownSagaError
from saga._metrics import record_decisions
from saga._protocol import CompensateSaga, Topics, stream_of
from saga._signal import SIGNAL_PHASE
from saga._wiring import check_command


@dataclass
class Pending:
    """Decisions on one saga so far in this transaction, and what caused the latest. `before`
    is the stream's version when loaded: 0 for a saga started in this transaction."""

    saga: type[Saga[Any]]
    before: int
    decision: Decision
    causes: list[Envelope | None] = field(default_factory=list)
    traceparents: list[str | None] = field(default_factory=list)  # of the commands' step spans
    lacks_version: bool = False  # `saga` is the newest version, not the saga's own: it is parked
    history: Sequence[RecordedEvent] = ()  # the stream as loaded (the metrics' step request times)


def outbox_rows(entry: Pending, outbox: Outbox, topics: Topics, messages: MessageRegistry) -> list[Outgoing]:
    """The decision's commands as outbox rows: to a participant's command topic, or (`to_saga`)
    to another saga's reply topic, answering that saga's step request (a child's end to its
    parent, a parent's compensation request to its child)."""
    state = entry.decision.state
    rows = []
    commands = zip(entry.decision.commands, entry.causes, entry.traceparents, strict=True)
    for command, cause, traceparent in commands:
        check_command(entry.saga, command.step, command.message, messages)
        target, saga_type, topic = _addressee(command, state.saga_id, entry.saga.name, topics)
        envelope = outbox.envelope(
            command.message,
            message_id=command.message_id,
            saga_id=target,
            saga_type=saga_type,
            step=command.step,
            phase=command.phase,
            attempt=command.attempt,
            correlation_id=state.saga_id,
            causation_id=str(cause.message_id) if cause else None,
            reply_topic=topics.replies(entry.saga.name),
            traceparent=traceparent or caused_by(cause.traceparent if cause else None),
        )
        rows.append(Outgoing(command.message, topic, target, envelope))
    return rows


def _addressee(command: SendCommand, saga_id: str, saga_type: str, topics: Topics) -> tuple[str, str, str]:
    """(saga id, saga type, topic) of the envelope: the sender's own for a participant's command."""
    if command.to_saga is None:
        return saga_id, saga_type, topics.commands(command.participant)
    if not command.saga_id:
        raise ValueError(f"saga {saga_id}: a message to saga type {command.to_saga} names no saga id")
    return command.saga_id, command.to_saga, topics.replies(command.to_saga)


def saga_of(envelope: Envelope) -> str:
    if envelope.saga_id is None:
        raise UnknownSagaError(f"reply {envelope.message_type} {envelope.message_id} names no saga")
    return envelope.saga_id


def input_of(message: BaseModel, envelope: Envelope) -> Reply | Signal | CompensateRequest:
    """A message from a saga's reply topic as the decider's input: a signal from outside, a
    parent's request to undo this child, or a reply (a child's end is its parent's reply)."""
    if envelope.phase == SIGNAL_PHASE:
        return Signal(envelope.message_type, message, str(envelope.message_id))
    if isinstance(message, CompensateSaga):
        return CompensateRequest(message.reason, message.step, message.phase, message.attempt)
    return Reply(
        envelope.message_type,
        message,
        envelope.step,
        envelope.phase,
        envelope.attempt,
        str(envelope.message_id),
    )


async def flush_decisions(
    conn: AsyncConnection,
    store: EventStore,
    outbox: Outbox,
    topics: Topics,
    messages: MessageRegistry,
    pending: Iterable[Pending],
) -> None:
    """Write the decisions of a transaction: their events appended with the expected version,
    their commands in the outbox, the sagas' deadlines and rows. Pipelined: the statements go
    out together, one round trip. A failed expectation (a writer that skipped the saga lock)
    fails the whole transaction. Its metrics count once the transaction commits."""
    pending = list(pending)
    outgoing: list[Outgoing] = []
    appends: list[NewEvents] = []
    writes = repo.SagaWrites.empty()
    for entry in pending:
        decision = entry.decision
        if not decision.events:
            continue
        state = decision.state
        outgoing += outbox_rows(entry, outbox, topics, messages)
        writes.add(state, decision.deadlines, decision.cleared)
        expected = entry.before if entry.before else NO_STREAM
        appends.append(
            NewEvents(stream_of(state.saga_id), list(decision.events), expected, correlation_id=state.saga_id)
        )
    if not appends:
        return
    driver = await driver_connection(conn)
    async with driver.pipeline():
        # The events first: what they cannot hold (a NUL in the data) is refused before any
        # statement of the decision is sent.
        await store.append_many(appends, conn=conn)
        await outbox.put_many(conn, outgoing)
        await writes.execute(driver)
    record_decisions(conn, pending)

"""The orchestrator: every decision is an event, written in one transaction with its effects.

One decision = load the saga (fold its stream), decide, then in the caller's transaction:
append the new events with the expected version, put the commands in the outbox, set or
clear the saga's deadline, and upsert its `saga_instances` row. A concurrent decision on the
same saga (a reply racing a timeout) makes the append fail on the version; the decision is
then retried from a fresh load inside a savepoint.

Replies carry (saga id, step, phase, attempt) in their envelope. A reply that does not match
what the saga awaits right now (a duplicate, a late reply after a timeout re-sent the command,
a reply after compensation began, one for a finished saga) is recorded as `ReplyIgnored`
and changes nothing else: a saga never moves twice on one outcome. A late success reply
after a timeout is safe because the timed-out step is compensated anyway (its outcome was
unknown), so compensations must accept "nothing to undo".
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import NO_STREAM, ConcurrencyError, EventStore, driver_connection
from outbox import Envelope, MessageRegistry, Outbox, child_traceparent
from saga._definition import LocalStep, RemoteStep, Saga, Step, StepKind
from saga._state import (
    CompensationFailed,
    CompensationStarted,
    OperatorResumed,
    Phase,
    ReplyIgnored,
    RetryScheduled,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaStarted,
    SagaState,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    apply,
    fold,
    saga_event_registry,
)

log = logging.getLogger(__name__)

SAGA_ID_NAMESPACE = uuid.UUID("5a9a0000-0000-4000-8000-000000000001")


class StepRefused(BaseModel):
    """The failure reply a participant sends when it refuses a command."""

    model_config = ConfigDict(frozen=True)
    reason: str


class SagaError(Exception):
    retriable = False


class UnknownSagaError(SagaError):
    pass


def stream_of(saga_id: str) -> str:
    return f"saga:{saga_id}"


def saga_id_for(saga_type: str, key: str) -> str:
    """Starting twice with the same key names the same saga: that is what makes start idempotent."""
    return str(uuid.uuid5(SAGA_ID_NAMESPACE, f"{saga_type}\x00{key}"))


class Topics:
    """Topic names, all under one prefix: commands per participant, replies per saga type."""

    def __init__(self, prefix: str = "saga") -> None:
        self.prefix = prefix

    def commands(self, participant: str) -> str:
        return f"{self.prefix}.{participant}.commands"

    def replies(self, saga_type: str) -> str:
        return f"{self.prefix}.{saga_type}.replies"


def with_saga_messages(registry: MessageRegistry) -> MessageRegistry:
    if "saga.step_refused" not in registry:
        registry.register(StepRefused, "saga.step_refused")
    return registry


_UPSERT_INSTANCE = """
    INSERT INTO saga_instances (saga_id, saga_type, key, status, step, version, data, last_error)
    VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)
    ON CONFLICT (saga_id) DO UPDATE SET
        status = excluded.status, step = excluded.step, version = excluded.version, data = excluded.data,
        last_error = excluded.last_error, updated_at = now()
    WHERE saga_instances.version < excluded.version
"""
_SET_DEADLINE = """
    INSERT INTO saga_deadlines (saga_id, saga_type, step, phase, attempt, kind, due_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (saga_id) DO UPDATE SET
        step = excluded.step, phase = excluded.phase, attempt = excluded.attempt, kind = excluded.kind,
        due_at = excluded.due_at
"""
_CLEAR_DEADLINE = "DELETE FROM saga_deadlines WHERE saga_id = %s"
_DROP_DEADLINE = "DELETE FROM saga_deadlines WHERE saga_id = %s AND step = %s AND phase = %s AND attempt = %s AND kind = %s"
_DUE = "SELECT saga_id, step, phase, attempt, kind FROM saga_deadlines WHERE due_at <= now() ORDER BY due_at LIMIT %s"
# Every decision on a saga first takes this lock, and takes no other lock before it. One
# order for all lockers (reply handlers, deadline workers, operators) means no deadlock
# between a reply and a timeout of the same saga; it also saves the version-conflict retry.
_LOCK_SAGA = "SELECT pg_advisory_xact_lock(hashtext('saga:' || %s))"
_TRY_LOCK_SAGA = "SELECT pg_try_advisory_xact_lock(hashtext('saga:' || %s))"
_STILL_DUE = (
    "SELECT 1 FROM saga_deadlines WHERE saga_id = %s AND step = %s AND phase = %s AND attempt = %s AND kind = %s "
    "AND due_at <= now()"
)


def instance_row(state: SagaState) -> tuple[Any, ...]:
    """The saga_instances row a state projects to (also what `rebuild --verify` compares)."""
    return (
        state.saga_id,
        state.saga_type,
        state.key,
        state.status,
        state.last_step,
        state.version,
        orjson.dumps(state.data).decode(),
        state.last_error,
    )


class _Decision:
    """One decision on one saga: events emitted so far, and the messages they send."""

    def __init__(
        self, orchestrator: Orchestrator, conn: AsyncConnection, saga: type[Saga[Any]], state: SagaState
    ):
        self.o = orchestrator
        self.conn = conn
        self.saga = saga
        self.before = state.version
        self.awaiting_before = state.awaiting
        self.state = state
        self.events: list[BaseModel] = []
        self.outgoing: list[tuple[BaseModel, str, Envelope]] = []
        self.causation: Envelope | None = None

    def emit(self, event: BaseModel) -> None:
        self.events.append(event)
        self.state = apply(self.state, event)

    def data(self) -> Any:
        return self.saga.data_model.model_validate(self.state.data)

    # --- forward -----------------------------------------------------------------------

    async def advance(self) -> None:
        """Run steps until one waits for a reply or a retry, or the saga ends."""
        while self.state.status == "running" and self.state.awaiting is None:
            pending = [s for s in self.saga.steps if s.name not in self.state.done]
            if not pending:
                self.emit(SagaCompleted())
                return
            step = pending[0]
            await self.run(step, "action", self.state.attempt_of("action", step.name) + 1)

    async def run(self, step: type[Step[Any]], phase: Phase, attempt: int) -> None:
        """Start `attempt` of a step's action or compensation."""
        if issubclass(step, RemoteStep):
            await self._send(step, phase, attempt)
        elif issubclass(step, LocalStep):
            await self._run_local(step, phase, attempt)

    async def _send(self, step: type[RemoteStep[Any]], phase: Phase, attempt: int) -> None:
        command = step().command(self.data()) if phase == "action" else step().compensation(self.data())
        if command is None:  # nothing to undo for this data
            self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt))
            self.emit(StepCompensated(step=step.name, attempt=attempt))
            return
        saga_id = self.state.saga_id
        envelope = self.o.outbox.envelope(
            command,
            saga_id=saga_id,
            saga_type=self.saga.name,
            step=step.name,
            phase=phase,
            attempt=attempt,
            correlation_id=saga_id,
            causation_id=str(self.causation.message_id) if self.causation else None,
            reply_topic=self.o.topics.replies(self.saga.name),
            traceparent=child_traceparent(self.causation.traceparent if self.causation else None),
        )
        self.outgoing.append((command, self.o.topics.commands(step.participant), envelope))
        self.emit(
            StepRequested(step=step.name, phase=phase, attempt=attempt, message_id=str(envelope.message_id))
        )

    async def _run_local(self, step: type[LocalStep[Any]], phase: Phase, attempt: int) -> None:
        self.emit(StepRequested(step=step.name, phase=phase, attempt=attempt))
        try:
            async with self.conn.begin_nested():  # a failing step leaves none of its writes
                if phase == "action":
                    new = await step().action(self.conn, self.data())
                else:
                    await step().compensate(self.conn, self.data())
        except ConcurrencyError:
            raise
        except Exception as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            await self.failed(step, phase, attempt, reason)
            return
        if phase == "action":
            data = (new if new is not None else self.data()).model_dump(mode="json")
            self.emit(StepSucceeded(step=step.name, attempt=attempt, data=data))
        else:
            self.emit(StepCompensated(step=step.name, attempt=attempt))

    async def succeeded(self, step: type[Step[Any]], phase: Phase, attempt: int, reply: BaseModel) -> None:
        if phase == "compensation":
            self.emit(StepCompensated(step=step.name, attempt=attempt))
            await self.compensate()
            return
        data = self.data()
        if issubclass(step, RemoteStep):
            data = step().on_reply(data, reply)
        self.emit(StepSucceeded(step=step.name, attempt=attempt, data=data.model_dump(mode="json")))
        await self.advance()

    async def failed(self, step: type[Step[Any]], phase: Phase, attempt: int, reason: str) -> None:
        self.emit(StepFailed(step=step.name, phase=phase, attempt=attempt, reason=reason))
        if phase == "compensation":
            await self._retry_or(step, phase, attempt, step.compensation_retry, CompensationFailed, reason)
        elif step.kind is StepKind.RETRIABLE:
            await self._retry_or(step, phase, attempt, step.retry, SagaFailed, reason)
        else:
            await self.begin_compensation(f"{step.name} failed: {reason}")

    async def timed_out(self, step: type[Step[Any]], phase: Phase, attempt: int) -> None:
        self.emit(StepTimedOut(step=step.name, phase=phase, attempt=attempt))
        reason = f"no reply within {step.timeout_s}s"
        if phase == "compensation":
            await self._retry_or(step, phase, attempt, step.compensation_retry, CompensationFailed, reason)
        elif self._budget_left(step, phase, attempt, step.retry):
            await self.run(step, phase, attempt + 1)  # send again: participants are idempotent per saga
        elif step.kind is not StepKind.COMPENSATABLE:
            # A pivot or retriable step may have taken effect and cannot be undone: stop where
            # an operator sees it rather than compensate around an outcome nobody knows.
            self.emit(
                SagaFailed(step=step.name, reason=f"{reason}; outcome unknown after {attempt} attempt(s)")
            )
        else:
            await self.begin_compensation(f"{step.name} timed out after {attempt} attempt(s)")

    def _budget_left(self, step: type[Step[Any]], phase: Phase, attempt: int, policy: Any) -> bool:
        base = self.state.retry_base.get(f"{phase}:{step.name}", 0)
        return bool(attempt - base < policy.attempts)

    async def _retry_or(
        self,
        step: type[Step[Any]],
        phase: Phase,
        attempt: int,
        policy: Any,
        give_up: type[CompensationFailed] | type[SagaFailed],
        reason: str,
    ) -> None:
        if self._budget_left(step, phase, attempt, policy):
            delay = policy.delay_s(attempt + 1, random.random())
            due = datetime.now(UTC) + timedelta(seconds=delay)
            self.emit(RetryScheduled(step=step.name, phase=phase, attempt=attempt + 1, due_at=due))
        else:
            self.emit(give_up(step=step.name, reason=reason))

    async def continue_(self) -> None:
        """Go on in whichever direction the saga is going."""
        await (self.compensate() if self.state.status == "compensating" else self.advance())

    # --- backward ----------------------------------------------------------------------

    async def begin_compensation(self, reason: str) -> None:
        undo = [s for s in reversed(self.state.done) if self.saga.step(s).has_compensation()]
        self.emit(CompensationStarted(steps=undo, reason=reason))
        await self.compensate()

    async def compensate(self) -> None:
        """Undo the next step that took effect, in reverse order, until none is left."""
        while self.state.status == "compensating" and self.state.awaiting is None:
            if not self.state.to_compensate:
                self.emit(SagaCompensated())
                return
            step = self.saga.step(self.state.to_compensate[0])
            await self.run(step, "compensation", self.state.attempt_of("compensation", step.name) + 1)

    # --- persisting --------------------------------------------------------------------

    async def persist(self) -> None:
        if not self.events:
            return
        o, state = self.o, self.state
        expected = self.before if self.before else NO_STREAM
        driver = await driver_connection(self.conn)
        # Pipelined: the writes go out together and the append's result (read last) brings
        # them all back in one round trip. A failed expectation fails the whole transaction.
        async with driver.pipeline():
            for message, topic, envelope in self.outgoing:
                await o.outbox.put(self.conn, message, topic=topic, key=state.saga_id, envelope=envelope)
            if (
                self.state.awaiting != self.awaiting_before
            ):  # a decision that only recorded keeps its deadline
                deadline = self._deadline()
                if deadline is None:
                    await driver.execute(_CLEAR_DEADLINE, (state.saga_id,))
                else:
                    await driver.execute(_SET_DEADLINE, deadline)
            await driver.execute(_UPSERT_INSTANCE, instance_row(state))
            await o.store.append(
                stream_of(state.saga_id), self.events, expected, conn=self.conn, correlation_id=state.saga_id
            )

    def _deadline(self) -> tuple[Any, ...] | None:
        waiting = self.state.awaiting
        if waiting is None:
            return None
        if waiting.kind == "retry":
            due = waiting.due_at
        else:
            timeout = self.saga.step(waiting.step).timeout_s
            if timeout is None:
                return None
            due = datetime.now(UTC) + timedelta(seconds=timeout)
        return (
            self.state.saga_id,
            self.saga.name,
            waiting.step,
            waiting.phase,
            waiting.attempt,
            waiting.kind,
            due,
        )


class Orchestrator:
    """Starts sagas and drives them on replies, deadlines and operator calls."""

    def __init__(
        self,
        engine: AsyncEngine,
        sagas: Sequence[type[Saga[Any]]],
        messages: MessageRegistry,
        *,
        topic_prefix: str = "saga",
    ) -> None:
        names = [s.name for s in sagas]
        if len(set(names)) != len(names):
            raise ValueError(f"two sagas share a name: {names}")
        self.engine = engine
        self.sagas = {s.name: s for s in sagas}
        self.messages = with_saga_messages(messages)
        self.topics = Topics(topic_prefix)
        self.store = EventStore(engine, saga_event_registry())
        self.outbox = Outbox(self.messages)

    async def aclose(self) -> None:
        await self.store.aclose()

    def saga_class(self, saga_type: str) -> type[Saga[Any]]:
        try:
            return self.sagas[saga_type]
        except KeyError:
            raise UnknownSagaError(
                f"saga type {saga_type!r} is not registered with this orchestrator"
            ) from None

    def reply_topics(self) -> list[str]:
        return [self.topics.replies(name) for name in self.sagas]

    async def load(self, saga_id: str, conn: AsyncConnection | None = None) -> SagaState:
        events = await self.store.load(stream_of(saga_id), conn=conn)
        if not events:
            raise UnknownSagaError(f"no saga with id {saga_id!r}")
        return fold(saga_id, (e.event for e in events))

    async def start(
        self, conn: AsyncConnection, saga: type[Saga[Any]], data: BaseModel, *, key: str | None = None
    ) -> str:
        """Start a saga in the caller's transaction; with a key, starting again returns the same id."""
        self.saga_class(saga.name)
        if not isinstance(data, saga.data_model):
            raise TypeError(
                f"saga {saga.name} takes {saga.data_model.__name__} data, got {type(data).__name__}"
            )
        saga_id = saga_id_for(saga.name, key) if key is not None else str(uuid.uuid4())
        try:
            async with conn.begin_nested():
                if key is not None and await self.store.stream_version(stream_of(saga_id), conn=conn):
                    return saga_id
                decision = _Decision(self, conn, saga, SagaState(saga_id=saga_id))
                decision.emit(SagaStarted(saga_type=saga.name, key=key, data=data.model_dump(mode="json")))
                await decision.advance()
                await decision.persist()
        except ConcurrencyError:
            if key is None:
                raise
            # A concurrent start with the same key won: same saga, started once.
        return saga_id

    async def _decide(self, conn: AsyncConnection, saga_id: str, act: Any, *, locked: bool = False) -> None:
        """Lock the saga, load it, decide with `act(decision)`, persist.

        Under the saga's lock no other decision can interleave, so the append's expected
        version holds; a ConcurrencyError would mean a writer that skipped the lock, and is
        raised (the consumer retries the message)."""
        driver = await driver_connection(conn)
        async with driver.pipeline():  # the lock and the load: one round trip
            if not locked:
                await driver.execute(_LOCK_SAGA, (saga_id,))
            state = await self.load(saga_id, conn)
        decision = _Decision(self, conn, self.saga_class(state.saga_type), state)
        await act(decision)
        await decision.persist()

    async def handle_reply(self, conn: AsyncConnection, reply: BaseModel, envelope: Envelope) -> None:
        """The reply consumer's handler (runs in the consumer's transaction with its inbox row)."""
        if envelope.saga_id is None:
            raise UnknownSagaError(f"reply {envelope.message_type} {envelope.message_id} names no saga")

        async def act(d: _Decision) -> None:
            d.causation = envelope
            waiting = d.state.awaiting
            got = (envelope.step, envelope.phase, envelope.attempt)
            if (
                d.state.terminal
                or waiting is None
                or waiting.kind != "reply"
                or got != (waiting.step, waiting.phase, waiting.attempt)
            ):
                now = (
                    "nothing"
                    if waiting is None
                    else f"{waiting.step}/{waiting.phase} attempt {waiting.attempt} ({waiting.kind})"
                )
                d.emit(
                    ReplyIgnored(
                        step=envelope.step,
                        phase=envelope.phase,
                        attempt=envelope.attempt,
                        reason=f"{envelope.message_type} while {d.state.status}, awaiting {now}",
                    )
                )
                return
            step = d.saga.step(waiting.step)
            if isinstance(reply, StepRefused):
                await d.failed(step, waiting.phase, waiting.attempt, reply.reason)
            else:
                await d.succeeded(step, waiting.phase, waiting.attempt, reply)

        await self._decide(conn, envelope.saga_id, act)

    async def fire_due_deadlines(self, limit: int = 100) -> int:
        """Act on deadlines that are due (timeouts, scheduled retries), each in a transaction
        of its own. Safe from many workers: a saga another worker is deciding on is skipped."""
        async with self.engine.connect() as conn:
            rows = await (await (await driver_connection(conn)).execute(_DUE, (limit,))).fetchall()
            await conn.rollback()
        fired = 0
        for saga_id, step_name, phase, attempt, kind in rows:
            due = (step_name, phase, attempt, kind)
            try:
                async with self.engine.begin() as conn:
                    driver = await driver_connection(conn)
                    locked = await (await driver.execute(_TRY_LOCK_SAGA, (saga_id,))).fetchone()
                    if not (locked and locked[0]):
                        continue  # another worker (or a reply) is on this saga right now
                    if await (await driver.execute(_STILL_DUE, (saga_id, *due))).fetchone() is None:
                        continue
                    await self._decide(
                        conn, saga_id, lambda d, due=due: self._on_deadline(d, *due), locked=True
                    )
                    # When the saga had moved on, nothing was persisted: drop the stale row here.
                    await driver.execute(_DROP_DEADLINE, (saga_id, *due))
                    fired += 1
            except Exception:
                log.exception("saga %s: deadline %s failed; it stays due", saga_id, due)
        return fired

    async def _on_deadline(self, d: _Decision, step_name: str, phase: Phase, attempt: int, kind: str) -> None:
        waiting = d.state.awaiting
        if waiting is None or (waiting.step, waiting.phase, waiting.attempt, waiting.kind) != (
            step_name,
            phase,
            attempt,
            kind,
        ):
            return
        step = d.saga.step(step_name)
        if kind == "retry":
            await d.run(step, phase, attempt)
        else:
            await d.timed_out(step, phase, attempt)
        await d.continue_()

    async def resume(self, saga_id: str, note: str, conn: AsyncConnection | None = None) -> SagaState:
        """Operator call: a saga stopped in compensation_failed or failed goes on, with fresh
        retry budgets; one still waiting on a reply has its current step sent again."""
        if conn is None:
            async with self.engine.begin() as own:
                return await self.resume(saga_id, note, own)

        async def act(d: _Decision) -> None:
            waiting = d.state.awaiting
            if d.state.status in ("compensation_failed", "failed"):
                d.emit(OperatorResumed(note=note))
            elif d.state.status in ("running", "compensating") and waiting is not None:
                d.emit(OperatorResumed(note=note))
                await d.run(d.saga.step(waiting.step), waiting.phase, waiting.attempt + 1)
            else:
                raise SagaError(f"saga {saga_id} is {d.state.status}: there is nothing to resume or retry")
            await d.continue_()

        await self._decide(conn, saga_id, act)
        return await self.load(saga_id, conn)

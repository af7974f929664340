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
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import (
    NO_STREAM,
    Database,
    ErrorKind,
    EventStore,
    NewEvents,
    Refusal,
    classify_error,
    driver_connection,
)
from outbox import Delivery, Envelope, MessageRegistry, Outbox, Outgoing, child_traceparent
from saga._definition import LocalStep, RemoteStep, Saga, Step, StepKind
from saga._savepoint import StepSavepoint
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


# Many sagas a statement: one row per saga, as columns (arrays), so the text never changes.
_UPSERT_INSTANCES = """
    INSERT INTO saga_instances (saga_id, saga_type, key, status, step, version, data, last_error)
    SELECT * FROM unnest(
        %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::jsonb[], %b::text[]
    )
    ON CONFLICT (saga_id) DO UPDATE SET
        status = excluded.status, step = excluded.step, version = excluded.version, data = excluded.data,
        last_error = excluded.last_error, updated_at = now()
    WHERE saga_instances.version < excluded.version
"""
_SET_DEADLINES = """
    INSERT INTO saga_deadlines (saga_id, saga_type, step, phase, attempt, kind, due_at)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::timestamptz[])
    ON CONFLICT (saga_id) DO UPDATE SET
        step = excluded.step, phase = excluded.phase, attempt = excluded.attempt, kind = excluded.kind,
        due_at = excluded.due_at
"""
_CLEAR_DEADLINES = "DELETE FROM saga_deadlines WHERE saga_id = ANY(%b::text[])"
_DROP_DEADLINE = "DELETE FROM saga_deadlines WHERE saga_id = %s AND step = %s AND phase = %s AND attempt = %s AND kind = %s"
_LOCAL_STEP = "saga_local_step"  # the savepoint local steps run in
_DUE = "SELECT saga_id, step, phase, attempt, kind FROM saga_deadlines WHERE due_at <= now() ORDER BY due_at LIMIT %s"
# Every decision on a saga first takes this lock, and takes no other lock before it. One
# order for all lockers (reply handlers, deadline workers, operators) means no deadlock
# between a reply and a timeout of the same saga; it also saves the version-conflict retry.
_LOCK_SAGA = "SELECT pg_advisory_xact_lock(hashtext('saga:' || %s))"
# Several sagas: always in the order of the lock keys, so two lockers of overlapping sets
# cannot each hold a lock the other waits for. (A subquery with ORDER BY is not flattened:
# the locks are taken row by row in that order.)
_LOCK_SAGAS = (
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT DISTINCT hashtext('saga:' || s) AS k FROM unnest(%b::text[]) AS s ORDER BY k) AS keys"
)
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
        self,
        orchestrator: Orchestrator,
        conn: AsyncConnection,
        savepoint: StepSavepoint,
        saga: type[Saga[Any]],
        state: SagaState,
    ):
        self.o = orchestrator
        self.conn = conn
        self.savepoint = savepoint
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
        await self.savepoint.take()  # a failing step leaves none of its writes
        try:
            if phase == "action":
                new = await step().action(self.conn, self.data())
            else:
                await step().compensate(self.conn, self.data())
        except Exception as exc:
            if classify_error(exc) in (ErrorKind.CONTENTION, ErrorKind.CONNECTION_LOST):
                raise  # not the step's failure: the whole decision runs again
            await self.savepoint.roll_back()
            reason = exc.reason if isinstance(exc, Refusal) else f"{type(exc).__name__}: {exc}"
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


# What a caller decides on one saga: emits events (and so sends messages) on the decision.
Act = Callable[["_Decision"], Awaitable[None]]


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


class _Writes:
    """What decisions write, gathered so that any number of them go out in one pipelined
    round trip of five statements at most (see `flush`)."""

    def __init__(self) -> None:
        self.outgoing: list[Outgoing] = []
        self.deadlines: list[tuple[Any, ...]] = []
        self.cleared: list[str] = []
        self.instances: list[tuple[Any, ...]] = []
        self.appends: list[NewEvents] = []

    def add(self, d: _Decision) -> None:
        if not d.events:
            return
        state = d.state
        self.outgoing += (Outgoing(m, topic, state.saga_id, env) for m, topic, env in d.outgoing)
        if state.awaiting != d.awaiting_before:  # a decision that only recorded keeps its deadline
            deadline = d._deadline()
            if deadline is None:
                self.cleared.append(state.saga_id)
            else:
                self.deadlines.append(deadline)
        self.instances.append(instance_row(state))
        expected = d.before if d.before else NO_STREAM
        self.appends.append(
            NewEvents(stream_of(state.saga_id), d.events, expected, correlation_id=state.saga_id)
        )

    async def flush(self, o: Orchestrator, conn: AsyncConnection) -> None:
        """Pipelined: the statements go out together, one round trip. A failed expectation
        (a writer that skipped the saga lock) fails the whole transaction."""
        if not self.appends:
            return
        driver = await driver_connection(conn)
        async with driver.pipeline():
            await o.outbox.put_many(conn, self.outgoing)
            if self.deadlines:
                await driver.execute(_SET_DEADLINES, _columns(self.deadlines))
            if self.cleared:
                await driver.execute(_CLEAR_DEADLINES, (self.cleared,))
            await driver.execute(_UPSERT_INSTANCES, _columns(self.instances))
            await o.store.append_many(self.appends, conn=conn)


class Orchestrator:
    """Starts sagas and drives them on replies, deadlines and operator calls."""

    def __init__(
        self,
        database: Database,
        sagas: Sequence[type[Saga[Any]]],
        messages: MessageRegistry,
        *,
        topic_prefix: str = "saga",
    ) -> None:
        names = [s.name for s in sagas]
        if len(set(names)) != len(names):
            raise ValueError(f"two sagas share a name: {names}")
        self.database = database
        self.engine = database.engine
        self.sagas = {s.name: s for s in sagas}
        self.messages = with_saga_messages(messages)
        self.topics = Topics(topic_prefix)
        self.store = EventStore(database, saga_event_registry())
        self.outbox = Outbox(self.messages)

    async def aclose(self) -> None:
        """Nothing to close: the database is the caller's."""

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
        return (await self.start_many(conn, saga, [data], keys=None if key is None else [key]))[0]

    async def start_many(
        self,
        conn: AsyncConnection,
        saga: type[Saga[Any]],
        data: Sequence[BaseModel],
        *,
        keys: Sequence[str] | None = None,
    ) -> list[str]:
        """`start` for several sagas of one type in the caller's transaction, with two round
        trips in all. Returns their ids in order; a key that names a saga already started (or
        one earlier in `data`) gives that saga's id and starts nothing."""
        self.saga_class(saga.name)
        for item in data:
            if not isinstance(item, saga.data_model):
                raise TypeError(
                    f"saga {saga.name} takes {saga.data_model.__name__} data, got {type(item).__name__}"
                )
        if keys is not None and len(keys) != len(data):
            raise ValueError(f"start_many: {len(keys)} keys for {len(data)} sagas")
        if keys is None:
            ids = [str(uuid.uuid4()) for _ in data]
            started: set[str] = set()
        else:
            ids = [saga_id_for(saga.name, key) for key in keys]
            # Under the sagas' locks a concurrent start with the same key has either committed
            # (and we see its stream) or not begun: same saga, started once.
            driver = await driver_connection(conn)
            async with driver.pipeline():
                await driver.execute(_LOCK_SAGAS, (sorted(set(ids)),))
                versions = await self.store.stream_versions([stream_of(i) for i in ids], conn=conn)
            started = {i for i in ids if versions[stream_of(i)]}
        savepoint = StepSavepoint(await driver_connection(conn), _LOCAL_STEP)
        writes = _Writes()
        for i, (saga_id, item) in enumerate(zip(ids, data, strict=True)):
            if saga_id in started:
                continue
            started.add(saga_id)
            key = None if keys is None else keys[i]
            decision = _Decision(self, conn, savepoint, saga, SagaState(saga_id=saga_id))
            decision.emit(SagaStarted(saga_type=saga.name, key=key, data=item.model_dump(mode="json")))
            await decision.advance()
            writes.add(decision)
        await savepoint.release()  # starts in one caller's transaction do not nest
        await writes.flush(self, conn)
        return ids
        savepoint = StepSavepoint(await driver_connection(conn), _LOCAL_STEP)
        decision = _Decision(self, conn, savepoint, saga, SagaState(saga_id=saga_id))
        decision.emit(SagaStarted(saga_type=saga.name, key=key, data=data.model_dump(mode="json")))
        await decision.advance()
        await savepoint.release()  # starts in one caller's transaction do not nest
        writes = _Writes()
        writes.add(decision)
        await writes.flush(self, conn)
        return saga_id

    async def _decide(self, conn: AsyncConnection, saga_id: str, act: Act, *, locked: bool = False) -> None:
        await self._decide_many(conn, [(saga_id, act)], locked=locked)

    async def _decide_many(
        self, conn: AsyncConnection, work: Sequence[tuple[str, Act]], *, locked: bool = False
    ) -> None:
        """Lock the sagas, load them, decide with each `act(decision)` in order, persist.

        One round trip for the locks and the loads, one for all the writes. Several acts on
        one saga see each other's outcome (they share its decision). Under the sagas' locks
        no other decision can interleave, so the appends' expected versions hold; a
        ConcurrencyError would mean a writer that skipped the lock, and is raised (the
        consumer retries the messages)."""
        saga_ids = sorted({saga_id for saga_id, _ in work})
        driver = await driver_connection(conn)
        async with driver.pipeline():
            if not locked:
                await driver.execute(_LOCK_SAGAS, (saga_ids,))
            streams = await self.store.load_many([stream_of(s) for s in saga_ids], conn=conn)
        decisions: dict[str, _Decision] = {}
        savepoint = StepSavepoint(driver, _LOCAL_STEP)
        for saga_id, act in work:
            d = decisions.get(saga_id)
            if d is None:
                events = streams[stream_of(saga_id)]
                if not events:
                    raise UnknownSagaError(f"no saga with id {saga_id!r}")
                state = fold(saga_id, (e.event for e in events))
                d = decisions[saga_id] = _Decision(
                    self, conn, savepoint, self.saga_class(state.saga_type), state
                )
            await act(d)
        writes = _Writes()
        for d in decisions.values():
            writes.add(d)
        await writes.flush(self, conn)

    async def handle_reply(self, conn: AsyncConnection, reply: BaseModel, envelope: Envelope) -> None:
        """The reply consumer's handler (runs in the consumer's transaction with its inbox row)."""
        await self._decide(conn, _saga_of(envelope), partial(_on_reply, reply=reply, envelope=envelope))

    async def handle_replies(self, conn: AsyncConnection, deliveries: list[Delivery]) -> None:
        """The reply consumer's batch handler: all the replies of one fetch, in one decision
        round (the consumer falls back to `handle_reply` one by one if this raises)."""
        work = [
            (_saga_of(d.envelope), partial(_on_reply, reply=d.message, envelope=d.envelope))
            for d in deliveries
        ]
        await self._decide_many(conn, work)

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
                    await self._decide(conn, saga_id, partial(self._on_deadline, due=due), locked=True)
                    # When the saga had moved on, nothing was persisted: drop the stale row here.
                    await driver.execute(_DROP_DEADLINE, (saga_id, *due))
                    fired += 1
            except Exception:
                log.exception("saga %s: deadline %s failed; it stays due", saga_id, due)
        return fired

    async def _on_deadline(self, d: _Decision, due: tuple[str, Phase, int, str]) -> None:
        waiting = d.state.awaiting
        if waiting is None or (waiting.step, waiting.phase, waiting.attempt, waiting.kind) != due:
            return
        step_name, phase, attempt, kind = due
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


def _saga_of(envelope: Envelope) -> str:
    if envelope.saga_id is None:
        raise UnknownSagaError(f"reply {envelope.message_type} {envelope.message_id} names no saga")
    return envelope.saga_id


async def _on_reply(d: _Decision, *, reply: BaseModel, envelope: Envelope) -> None:
    """A reply moves the saga only if it answers what the saga awaits right now."""
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

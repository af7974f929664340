"""The orchestrator: lock, load, decide, run a local step, decide again, flush.

What a saga does is decided by the pure decider (`saga._decide`); this module is the loop
around it. One decision is written in the caller's transaction: the new events appended with
the expected version, the commands put in the outbox, the saga's deadline set or cleared, its
`saga_instances` row upserted; all in one pipelined round trip. Every decision first takes the
saga's advisory lock, so no two decisions on one saga interleave.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, overload

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import (
    Database,
    EventStore,
    driver_connection,
)
from outbox import Delivery, Envelope, MessageRegistry, Outbox
from saga import _repository as repo
from saga._clock import Clock, SystemClock, check_clock
from saga._decide import decide
from saga._decision import (
    DeadlineDue,
    Decision,
    Input,
    Migrate,
    Resume,
    Start,
    StartChild,
)
from saga._definition import D, Saga
from saga._errors import SagaError, UnknownSagaError
from saga._events import SagaUnparked, saga_event_registry
from saga._hooks import run_end_hooks
from saga._local import run_local
from saga._logs import saga_log_context
from saga._migrate import MigrationPlan, plan_migration
from saga._outgoing import Pending, flush_decisions, input_of, saga_of
from saga._parking import absent_reason, log_parked, park_for_version, revived
from saga._protocol import Topics, stream_of, with_saga_messages
from saga._savepoint import StepSavepoint
from saga._signal import send_signal
from saga._starting import check_start, new_saga_ids
from saga._state import SagaState, fold
from saga._streams import StreamCache
from saga._tracing import local_step_span, step_traceparents, traced_start
from saga._typed import TypedSagaState, class_for, typed_state, until_ended
from saga._versions import Migration, Versions, version_problems
from saga._wiring import child_problems, message_problems, raise_problems

log = logging.getLogger(__name__)

_LOCAL_STEP = "saga_local_step"  # the savepoint local steps run in


class Orchestrator:
    """Starts sagas and drives them on replies, deadlines and operator calls."""

    def __init__(
        self,
        database: Database,
        sagas: Sequence[type[Saga[Any]]],
        messages: MessageRegistry,
        *,
        topic_prefix: str = "saga",
        clock: Clock | None = None,
    ) -> None:
        raise_problems(
            [*version_problems(sagas), *message_problems(sagas, messages), *child_problems(sagas)],
            "Orchestrator",
        )
        self.database = database
        self.engine = database.engine
        self.versions = Versions(sagas)
        self.sagas = self.versions.newest()  # by name: new sagas start on the newest version
        self.messages = with_saga_messages(messages)
        self.topics = Topics(topic_prefix)
        self.store = EventStore(database, saga_event_registry())
        self.outbox = Outbox(self.messages)
        self.streams = StreamCache()  # what decisions read of the saga streams, held between them
        # What decisions are made at, and deadlines fired by (a test gives a virtual one).
        self.clock = SystemClock() if clock is None else check_clock(clock, "Orchestrator")

    async def aclose(self) -> None:
        """Nothing to close: the database is the caller's."""

    def saga_class(self, saga_type: str) -> type[Saga[Any]]:
        """The newest version of a saga type."""
        try:
            return self.sagas[saga_type]
        except KeyError:
            raise UnknownSagaError(
                f"saga type {saga_type!r} is not registered with this orchestrator"
            ) from None

    def definition_of(self, state: SagaState) -> type[Saga[Any]] | None:
        """The class of the version the saga runs on, None when this orchestrator lacks it."""
        self.saga_class(state.saga_type)
        return self.versions.get(state.saga_type, state.saga_version)

    def _typing(self, state: SagaState) -> dict[str, type[Saga[Any]]]:
        """The class that types a saga's data: its version's, else the newest."""
        if state.saga_type not in self.sagas:
            return self.sagas  # `class_for` says which types there are
        return {**self.sagas, state.saga_type: self.definition_of(state) or self.saga_class(state.saga_type)}

    def reply_topics(self) -> list[str]:
        return [self.topics.replies(name) for name in self.sagas]

    @overload
    async def load(
        self, saga_id: str, saga: None = None, *, conn: AsyncConnection | None = None
    ) -> TypedSagaState[Any]: ...
    @overload
    async def load(
        self, saga_id: str, saga: type[Saga[D]], *, conn: AsyncConnection | None = None
    ) -> TypedSagaState[D]: ...
    async def load(
        self, saga_id: str, saga: type[Saga[Any]] | None = None, *, conn: AsyncConnection | None = None
    ) -> TypedSagaState[Any]:
        """The saga's state, its `data` an instance of its data model. Pass the saga class
        (`load(saga_id, TravelSaga)`) for a precise type; SagaDataError when the stored data
        no longer fits the model."""
        state = await self.load_raw(saga_id, conn)
        return typed_state(class_for(self._typing(state), state, saga), state)

    async def load_raw(self, saga_id: str, conn: AsyncConnection | None = None) -> SagaState:
        """The fold of the saga's events, its data as stored (JSON): what `saga show` prints."""
        events = await self.store.load(stream_of(saga_id), conn=conn)
        if not events:
            raise UnknownSagaError(f"no saga with id {saga_id!r}")
        return fold(saga_id, (e.event for e in events))

    @overload
    async def wait(
        self, saga_id: str, saga: None = None, *, timeout_s: float = 30.0
    ) -> TypedSagaState[Any]: ...
    @overload
    async def wait(
        self, saga_id: str, saga: type[Saga[D]], *, timeout_s: float = 30.0
    ) -> TypedSagaState[D]: ...
    async def wait(
        self, saga_id: str, saga: type[Saga[Any]] | None = None, *, timeout_s: float = 30.0
    ) -> TypedSagaState[Any]:
        """Wait until the saga has ended or stopped (completed, compensated, failed,
        compensation_failed, parked) and return its state as `load` does; TimeoutError, naming its
        status then, after `timeout_s`."""

        async def look() -> SagaState:
            state = await self.load_raw(saga_id)
            class_for(self._typing(state), state, saga)  # a saga it cannot type fails now, not at the end
            return state

        state = await until_ended(look, timeout_s)
        return typed_state(class_for(self._typing(state), state, saga), state)

    # --- inputs ------------------------------------------------------------------------------

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
        check_start(self.versions, saga, data, keys)
        driver = await driver_connection(conn)
        ids, started = await new_saga_ids(conn, self.store, saga, len(data), keys)
        pending: dict[str, Pending] = {}
        savepoint = StepSavepoint(driver, _LOCAL_STEP)
        for i, (saga_id, item) in enumerate(zip(ids, data, strict=True)):
            if saga_id in started:
                continue
            started.add(saga_id)
            given = Start(saga.name, item.model_dump(mode="json"), None if keys is None else keys[i])
            entry = pending[saga_id] = Pending(saga, 0, Decision(SagaState(saga_id=saga_id)))
            with saga_log_context(saga_id, saga.name, given, None):
                await self._decide(conn, savepoint, pending, entry, given, None)
        await savepoint.release()  # starts in one caller's transaction do not nest
        await self._flush(conn, pending.values())
        return ids

    async def signal(
        self,
        conn: AsyncConnection,
        saga: type[Saga[Any]],
        message: BaseModel,
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Signal a saga (by `saga_id`, or the `key` it was started with) in the caller's
        transaction: sent if that commits. A wait of the saga takes it, now or once the saga
        gets there. Returns the saga's id."""
        return await send_signal(
            conn,
            "Orchestrator",
            self.versions,
            self.outbox,
            self.topics,
            saga,
            message,
            saga_id=saga_id,
            key=key,
        )

    async def handle_reply(self, conn: AsyncConnection, reply: BaseModel, envelope: Envelope) -> None:
        """The reply consumer's handler (runs in the consumer's transaction with its inbox row)."""
        await self.decide_many(conn, [(saga_of(envelope), input_of(reply, envelope), envelope)])

    async def handle_replies(self, conn: AsyncConnection, deliveries: list[Delivery]) -> None:
        """The reply consumer's batch handler: all the replies of one fetch, in one decision
        round (the consumer falls back to `handle_reply` one by one if this raises)."""
        work = [(saga_of(d.envelope), input_of(d.message, d.envelope), d.envelope) for d in deliveries]
        await self.decide_many(conn, work)

    async def on_deadline(self, conn: AsyncConnection, saga_id: str, due: DeadlineDue) -> None:
        """A deadline fell due; the caller holds the saga's lock (see the worker's deadline loop)."""
        await self.decide_many(conn, [(saga_id, due, None)], locked=True)

    async def resume(self, saga_id: str, note: str, conn: AsyncConnection | None = None) -> SagaState:
        """Operator call: a saga stopped in compensation_failed or failed goes on, with fresh
        retry budgets; one still waiting on a reply has its current step sent again. A parked
        saga goes on where it was parked once the definition has its steps (SagaError until then)."""
        if conn is None:
            async with self.engine.begin() as own:
                return await self.resume(saga_id, note, own)
        await self.decide_many(conn, [(saga_id, Resume(note), None)])
        return await self.load_raw(saga_id, conn)

    async def migrate(
        self,
        conn: AsyncConnection,
        saga_id: str,
        target: type[Saga[Any]],
        migration: Migration,
        *,
        note: str,
        apply: bool = True,
    ) -> MigrationPlan:
        """Move a running saga to `target`, a deployed version of its saga, as `migration` says:
        planned under the saga's lock and, when `apply` and the plan has no problems, recorded
        as `saga.migrated` in the caller's transaction. A saga parked for its version goes on.
        Returns the plan (its `problems` say why nothing was written)."""
        if not self.versions.has(target):
            raise UnknownSagaError(
                f"{target.__qualname__} ({target.name} version {target.version}) is not registered with "
                f"this orchestrator (it has: {self.versions.describe(target.name)})"
            )
        driver = await driver_connection(conn)
        await repo.lock_one(driver, saga_id)
        state = await self.load_raw(saga_id, conn)
        plan = plan_migration(
            self.versions.get(state.saga_type, state.saga_version), target, state, migration
        )
        if apply and plan.ok:
            pending = {saga_id: Pending(target, state.version, Decision(state))}
            savepoint = StepSavepoint(driver, _LOCAL_STEP)
            await self._decide(conn, savepoint, pending, pending[saga_id], Migrate(plan, note), None)
            await self._flush(conn, pending.values())
        return plan

    # --- the loop ----------------------------------------------------------------------------

    async def decide_many(
        self,
        conn: AsyncConnection,
        work: Sequence[tuple[str, Input, Envelope | None]],
        *,
        locked: bool = False,
    ) -> None:
        """Lock the sagas, load them, decide on each input in order, flush.

        One round trip for the locks and the loads, one for all the writes. Several inputs for
        one saga see each other's outcome. Under the sagas' locks no other decision can
        interleave, so the appends' expected versions hold; a ConcurrencyError would mean a
        writer that skipped the lock, and is raised (the consumer retries the messages)."""
        saga_ids = sorted({saga_id for saga_id, _, _ in work})
        driver = await driver_connection(conn)
        async with driver.pipeline():
            if not locked:
                await repo.lock(driver, saga_ids)
            streams = await self.streams.load(self.store, saga_ids, conn)
        pending: dict[str, Pending] = {}
        savepoint = StepSavepoint(driver, _LOCAL_STEP)
        for saga_id, given, cause in work:
            entry = pending.get(saga_id)
            if entry is None:
                events, state = streams[saga_id]
                if not events:
                    raise UnknownSagaError(f"no saga with id {saga_id!r}")
                saga = self.definition_of(state)
                entry = pending[saga_id] = Pending(
                    saga or self.saga_class(state.saga_type),
                    state.version,
                    Decision(state),
                    lacks_version=saga is None,
                    history=events,
                )
            with saga_log_context(saga_id, entry.saga.name, given, cause):
                await self._decide(conn, savepoint, pending, entry, given, cause)
        await self._flush(conn, pending.values())

    async def _decide(
        self,
        conn: AsyncConnection,
        savepoint: StepSavepoint,
        pending: dict[str, Pending],
        entry: Pending,
        given: Input,
        cause: Envelope | None,
    ) -> None:
        """Decide on one input; run the local step it asks for and decide again, until none is
        left; then start the child sagas the decision asks for. A saga whose version this
        orchestrator lacks is parked instead; one parked so, whose version it has, is taken up
        first (and the messages deferred meanwhile are decided on)."""
        before = entry.decision.state
        if entry.lacks_version:
            decision = park_for_version(before, given, absent_reason(self.versions, before))
            entry.decision = entry.decision.then(decision)
            log_parked(decision)
            return
        if (
            before.parked is not None
            and before.parked.saga_version is not None
            and not isinstance(given, Resume | Migrate)  # those take it up themselves
        ):
            taken_up = Resume(f"version {before.saga_version} is deployed here")
            await self._decide(conn, savepoint, pending, entry, taken_up, None)
        now = self.clock.now()
        given = traced_start(given, entry.saga.name, before.saga_id, cause)
        decision = decide(entry.saga, entry.decision.state, given, now)
        while decision.local is not None:
            with local_step_span(decision.state, decision.local, cause, given):
                result = await run_local(conn, savepoint, entry.saga, decision.state, decision.local)
            decision = decision.then(decide(entry.saga, decision.state, result, now))
        await run_end_hooks(conn, entry.saga, decision.events, decision.state)
        entry.decision = entry.decision.then(decision)
        entry.causes += [cause] * len(decision.commands)
        entry.traceparents += step_traceparents(decision.state, decision.commands, cause, given)
        if not isinstance(given, Resume):  # a resume's caller gets the parked state back
            log_parked(decision)
        for child in decision.children:
            await self._start_child(conn, savepoint, pending, child, cause)
        if any(isinstance(e, SagaUnparked) for e in decision.events):
            for deferred in before.deferred:
                registered = deferred.message_type in self.messages
                model = self.messages.get(deferred.message_type).model if registered else None
                await self._decide(conn, savepoint, pending, entry, revived(deferred, model), None)

    async def _start_child(
        self,
        conn: AsyncConnection,
        savepoint: StepSavepoint,
        pending: dict[str, Pending],
        child: StartChild,
        cause: Envelope | None,
    ) -> None:
        """A child saga starts in its parent's transaction, flushed with it as a new stream. It
        takes no lock: its id is derived from the parent's step, which nobody else can decide
        on before this commits; a stream that exists anyway fails the append (NO_STREAM)."""
        if child.child_id in pending:
            raise SagaError(f"saga {child.parent.saga_id}: child {child.child_id} is started twice")
        saga = self.versions.get(child.saga_type, child.saga_version)
        if saga is None:
            raise SagaError(
                f"saga {child.parent.saga_id}: its child saga {child.saga_type} version {child.saga_version} "
                f"is not registered (it has: {self.versions.describe(child.saga_type)})"
            )
        entry = pending[child.child_id] = Pending(saga, 0, Decision(SagaState(saga_id=child.child_id)))
        given = Start(child.saga_type, child.data, parent=child.parent)
        await self._decide(conn, savepoint, pending, entry, given, cause)

    async def _flush(self, conn: AsyncConnection, pending: Iterable[Pending]) -> None:
        await flush_decisions(conn, self.store, self.outbox, self.topics, self.messages, pending)


__all__ = ["Orchestrator", "SagaError"]

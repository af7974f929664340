"""A running system for one app, in the test's own process: the relay, the orchestrator
worker and the app's participants, on a fresh database and topics of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, Worker
from outbox import Outbox, Relay
from saga import App, Orchestrator, OrchestratorWorker, Participant, Saga, TypedSagaState, fire_due_deadlines
from saga.testing._clock import VirtualClock
from saga.testing._crashes import Crashes, running_as
from saga.testing._databases import clone_database, drop_database, with_database
from saga.testing._faults import FaultFilter
from saga.testing._services import Services
from saga.testing._skipping import next_skip, waits_of

if TYPE_CHECKING:
    from saga.testing._explore import Exploration, Invariant

log = logging.getLogger(__name__)

# A handler of a participant: (conn, command, envelope) -> reply.
Handlers = Mapping[str, Mapping[type[BaseModel], Callable[..., Awaitable[BaseModel]]]]
ENDED = ("completed", "compensated", "failed", "compensation_failed", "parked")
WAIT_S = 30.0


@dataclass(frozen=True)
class SystemConfig:
    """What a system runs: the app, on these services, each time on a fresh clone of
    `template`. `handlers`: the participants to run in-process (default: those the app
    serves; give handlers for an external participant to stand in for it)."""

    app: App
    services: Services
    template: str
    handlers: Handlers | None = None


class System:
    """One app running in-process. Start sagas, wait for them, move the clock, explore faults.
    Get one from the `saga_system` fixture, or `async with open_system(config) as system`."""

    def __init__(self, config: SystemConfig, database: Database, prefix: str, clock: VirtualClock) -> None:
        self.config = config
        self.app = config.app.with_topic_prefix(prefix)
        self.database = database
        self.engine: AsyncEngine = database.engine
        self.prefix = prefix
        self.clock = clock
        self.orchestrator: Orchestrator = self.app.orchestrator(database, clock=clock)
        self.handlers: Handlers = self.app.participants if config.handlers is None else config.handlers
        self.crashes = Crashes(self)
        self.workers: dict[str, Worker] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._failures: list[BaseException] = []
        clock.attach(self._advance_to)

    # --- what a test calls ------------------------------------------------------------

    async def start(self, saga: type[Saga[Any]], data: BaseModel, *, key: str | None = None) -> str:
        """Start a saga (committed at once); returns its id."""
        async with self.engine.begin() as conn:
            return await self.orchestrator.start(conn, saga, data, key=key)

    async def signal(
        self, saga: type[Saga[Any]], message: BaseModel, *, saga_id: str | None = None, key: str | None = None
    ) -> str:
        """Send a signal to a saga (by id, or the key it was started with)."""
        async with self.engine.begin() as conn:
            return await self.orchestrator.signal(conn, saga, message, saga_id=saga_id, key=key)

    async def state(self, saga_id: str) -> TypedSagaState[Any]:
        """The saga's state now, its data typed with its data model."""
        return await self.orchestrator.load(saga_id)

    async def wait(
        self,
        saga_id: str,
        *statuses: str,
        step: str | None = None,
        deadline_s: float = WAIT_S,
        skip_time: bool = False,
    ) -> TypedSagaState[Any]:
        """Wait until the saga is in one of `statuses` (default: ended or parked), and, with
        `step`, waits on that step (its reply, signal, timer or retry); return its typed state.
        AssertionError naming where it is after `deadline_s` seconds. Time does not move by
        itself here: `await system.clock.advance(s)` moves it; or `skip_time=True` moves it
        as `run` does (a saga started some other way, e.g. in the test's own transaction)."""
        wanted = statuses or (("running", "compensating") if step else ENDED)
        return await self._until(saga_id, wanted, step, deadline_s, skip_time=skip_time)

    async def run(
        self, saga: type[Saga[Any]], data: BaseModel, *, key: str | None = None, deadline_s: float = WAIT_S
    ) -> TypedSagaState[Any]:
        """Start a saga and wait until it ends (or parks). While it waits only for time (a
        retry, a timer, the reply of a participant nobody runs here), the clock jumps to its
        next deadline: a saga with an hour's timer ends in a moment."""
        saga_id = await self.start(saga, data, key=key)
        return await self._until(saga_id, ENDED, None, deadline_s, skip_time=True)

    async def settle(self, deadline_s: float = WAIT_S) -> None:
        """Wait until every message written so far has been published to Kafka."""
        await self._poll(self._outbox_empty, deadline_s, "the outbox to be published")

    @asynccontextmanager
    async def paused(self, worker: str) -> AsyncIterator[None]:
        """Stop one worker for the block ("relay", "orchestrator", "participant:<service>"):
        a participant that does not answer, a relay that does not publish. It starts again,
        where it left off, at the end."""
        if worker not in self.workers:
            raise ValueError(f"no worker {worker!r} in this system; it runs: {', '.join(self.workers)}")
        watcher = self._watchers.pop(worker)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await self.workers.pop(worker).stop()
        try:
            yield
        finally:
            await self._start_worker(worker, self._factories()[worker])

    async def explore(
        self,
        saga: type[Saga[Any]],
        data: BaseModel,
        *,
        invariant: Invariant,
        faults: FaultFilter | None = None,
        check: bool = True,
        deadline_s: float = WAIT_S,
    ) -> Exploration:
        """Run `saga` with `data` once per fault, each time on a fresh system like this one,
        and `await invariant(system, state)` after each run (raise AssertionError when it
        does not hold). The faults, found by a first run without any: each command and each
        reply delivered twice, each step with a timeout timing out (its command arriving
        late), each worker killed at each crash point it passed. `faults`: the kinds to try
        ("command", "reply", "timeout", "crash") or a predicate on `Fault`. Raises
        AssertionError naming each fault that broke the invariant; `check=False` returns
        the `Exploration` instead."""
        from saga.testing._explore import explore

        return await explore(
            self.config, saga, data, invariant, faults=faults, check=check, deadline_s=deadline_s
        )

    async def scalar(self, sql: str, **params: Any) -> Any:
        """One value of a query on the system's database (`text()` SQL with :params)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection to the system's database, in a transaction that commits at the end."""
        async with self.engine.begin() as conn:
            yield conn

    # --- internals ----------------------------------------------------------------------

    async def _until(
        self, saga_id: str, wanted: tuple[str, ...], step: str | None, deadline_s: float, *, skip_time: bool
    ) -> TypedSagaState[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while True:
            self._raise_failures()
            state = await self.orchestrator.load_raw(saga_id)
            if state.status in wanted and (step is None or any(w.step == step for w in state.waiting)):
                return await self.state(saga_id)
            if skip_time:
                due = await next_skip(self, state)
                if due is not None:
                    await self.clock.advance(due)
                    continue
            if loop.time() > deadline:
                waits = waits_of(state)
                on = f" waiting on {step}" if step else ""
                raise AssertionError(
                    f"saga {saga_id} ({state.saga_type}) is {state.status} after {deadline_s:g}s, not "
                    f"{' or '.join(wanted)}{on}; it waits for: {waits}; last error: {state.last_error or 'none'}"
                )
            await asyncio.sleep(0.02)

    async def _poll(self, condition: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while not await condition():
            self._raise_failures()
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}")
            await asyncio.sleep(0.02)

    async def _outbox_empty(self) -> bool:
        return (await Outbox.counts(self.database)).pending == 0

    async def _advance_to(self, target: datetime) -> None:
        """What the clock's `advance` does here: let what is written reach Kafka first (a reply
        timeout counts from the command's publication), then fire each deadline that falls
        due before `target` at its own time, in order, and settle after each."""
        await self.settle()
        while (due := await self._next_due()) is not None and due <= target:
            self.clock.move_to(max(due, self.clock.now()))
            if not await self._fire_due() and not await self._moved_on(due):
                break  # due, yet nobody fires it (its command is not published): at `target`, then
            await self.settle()
        self.clock.move_to(target)
        await self._fire_due()
        await self.settle()

    async def _fire_due(self) -> int:
        fired = 0
        while n := await fire_due_deadlines(self.orchestrator):
            fired += n
        return fired

    async def _moved_on(self, due: datetime, deadline_s: float = 2.0) -> bool:
        """Whether the soonest deadline is no longer `due` within `deadline_s` (the worker
        fired it meanwhile, or is deciding on it)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        while loop.time() < until:
            if await self._next_due() != due:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _next_due(self) -> datetime | None:
        due: datetime | None = await self.scalar(
            "SELECT min(due_at) FROM saga_deadlines WHERE parked_at IS NULL"
        )
        return due

    def _raise_failures(self) -> None:
        if self._failures:
            raise AssertionError(f"a worker of the system failed: {self._failures[0]!r}") from self._failures[
                0
            ]

    def _factories(self) -> dict[str, Callable[[], Worker]]:
        db, bootstrap = self.database, self.config.services.kafka_bootstrap
        factories: dict[str, Callable[[], Worker]] = {
            "relay": lambda: Relay(db, bootstrap, poll_interval_s=0.05, rebalance_interval_s=0.1),
            "orchestrator": lambda: OrchestratorWorker(
                self.orchestrator, bootstrap, deadline_interval_s=0.05, retry_backoff_s=0.05
            ),
        }
        for service, handlers in self.handlers.items():
            factories[f"participant:{service}"] = _participant(self, service, handlers)
        return factories

    async def start_workers(self) -> None:
        for name, factory in self._factories().items():
            await self._start_worker(name, factory)

    async def _start_worker(self, name: str, factory: Callable[[], Worker]) -> None:
        worker = factory()
        dying = self.crashes.killing(name)
        with running_as(self, name):
            await worker.start()
        self.workers[name] = worker
        self._watchers[name] = asyncio.create_task(self._watch(name, factory, worker, dying))

    async def _watch(
        self, name: str, factory: Callable[[], Worker], worker: Worker, dying: asyncio.Event
    ) -> None:
        """A worker killed at a crash point (in any of its tasks) is replaced by a new one,
        as a supervisor would."""
        killed = asyncio.create_task(dying.wait())
        ended = asyncio.create_task(worker.wait())
        try:
            await asyncio.wait({killed, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (killed, ended):
                task.cancel()
            await asyncio.gather(killed, ended, return_exceptions=True)
        failure = None if ended.cancelled() else ended.exception()
        if killed.cancelled() and failure is None:
            return
        with contextlib.suppress(BaseException):
            await worker.stop()  # its connections and Kafka client go; nothing is committed
        if failure is not None and not self.crashes.is_kill(failure):
            log.error("saga.testing: worker %s failed: %r", name, failure)
            self._failures.append(failure)
            return
        await self._start_worker(name, factory)

    async def stop_workers(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        for worker in reversed(list(self.workers.values())):
            with contextlib.suppress(BaseException):
                await worker.stop()

    def topic_names(self) -> list[str]:
        topics = self.orchestrator.topics
        services = {*self.handlers, *self.app.participants, *self.app.external_participants}
        return [*self.orchestrator.reply_topics(), *(topics.commands(s) for s in sorted(services))]


def _participant(
    system: System, service: str, handlers: Mapping[type[BaseModel], Any]
) -> Callable[[], Worker]:
    def make() -> Worker:
        return Participant(
            system.database,
            system.config.services.kafka_bootstrap,
            service=service,
            messages=system.app.messages,
            handlers=handlers,
            topic_prefix=system.prefix,
            retry_backoff_s=0.05,
        )

    return make


async def _topics(bootstrap: str, create: list[str] | None = None, delete: list[str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(n, num_partitions=2, replication_factor=1) for n in create])
        if delete:
            existing = set(await admin.list_topics())
            gone = [n for n in delete if n in existing]
            if gone:
                await admin.delete_topics(gone)
    finally:
        await admin.close()


@asynccontextmanager
async def open_system(config: SystemConfig, *, clock: VirtualClock | None = None) -> AsyncIterator[System]:
    """A running system on a fresh clone of the template and topics of its own; everything
    is stopped, dropped and deleted at the end."""
    server = config.services.database_url
    name = await clone_database(server, config.template)
    try:
        async with Database(with_database(server, name)) as database:
            system = System(config, database, f"t{uuid.uuid4().hex[:10]}", clock or VirtualClock())
            topics = system.topic_names()
            await _topics(config.services.kafka_bootstrap, create=topics)
            try:
                await system.start_workers()
                yield system
            finally:
                await system.stop_workers()
                await _topics(
                    config.services.kafka_bootstrap, delete=[*topics, *(f"{t}.dlq" for t in topics)]
                )
    finally:
        await drop_database(server, name)

"""An app for the saga language's tests on the real services: four participants that reserve
and cancel (recording each in `lang_effects`), and a saga per construct.

A participant refuses a trip whose name holds `refuse-<service>`, and holds its answer while
`Controls.held[<service>]` is an unset event (so a test can keep a step in flight).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import Database, RecordedEvent, Worker
from outbox import Envelope, MessageRegistry, Relay
from saga import (
    App,
    ChildSaga,
    Delay,
    Orchestrator,
    OrchestratorWorker,
    Parallel,
    Refused,
    RemoteStep,
    Saga,
    Topics,
    TypedSagaState,
    WaitFor,
    WaitForAny,
    stream_of,
)
from tests.helpers import wait_for

SERVICES = ("flight", "hotel", "car", "tour")
messages = MessageRegistry()


@messages.message("lang.reserve")
class Reserve(BaseModel):
    service: str
    trip: str
    note: str = ""


@messages.message("lang.reserved")
class Reserved(BaseModel):
    service: str
    trip: str
    ref: str


@messages.message("lang.cancel")
class Cancel(BaseModel):
    service: str
    trip: str


@messages.message("lang.cancelled")
class Cancelled(BaseModel):
    service: str
    trip: str


@messages.message("lang.picked")
class Picked(BaseModel):
    by: str


@messages.message("lang.approved")
class Approved(BaseModel):
    by: str


@messages.message("lang.rejected")
class Rejected(BaseModel):
    by: str


@messages.message("lang.go")
class Go(BaseModel):
    pass


class TripData(BaseModel):
    trip: str
    refs: dict[str, str] = {}
    picked_by: str | None = None
    decision: str | None = None


class ReserveStep(RemoteStep[TripData]):
    """Reserves at its participant; the command's note carries the refs so far."""

    compensation_reply = Cancelled

    def command(self, data: TripData) -> Reserve:
        note = ",".join(f"{k}={v}" for k, v in sorted(data.refs.items()))
        return Reserve(service=self.participant, trip=data.trip, note=note)

    def on_reply(self, data: TripData, reply: Reserved) -> TripData:
        return data.model_copy(update={"refs": {**data.refs, reply.service: reply.ref}})

    def compensation(self, data: TripData) -> Cancel:
        return Cancel(service=self.participant, trip=data.trip)


class ReserveFlight(ReserveStep):
    participant = "flight"


class ReserveHotel(ReserveStep):
    participant = "hotel"


class ReserveCar(ReserveStep):
    participant = "car"


class ReserveTour(ReserveStep):
    participant = "tour"


class ParallelTrip(Saga[TripData]):
    steps = (ReserveFlight, Parallel(ReserveHotel, ReserveCar, ReserveTour))


class WaitPicked(WaitFor(Picked)):  # type: ignore[misc]
    def on_signal(self, data: TripData, signal: Picked) -> TripData:
        return data.model_copy(update={"picked_by": signal.by})


class PickedTrip(Saga[TripData]):
    steps = (ReserveFlight, WaitPicked)


class WaitVerdict(WaitForAny(Approved, Rejected)):  # type: ignore[misc]
    def on_signal(self, data: TripData, signal: Approved | Rejected) -> TripData:
        verdict = "approved" if isinstance(signal, Approved) else "rejected"
        return data.model_copy(update={"decision": f"{verdict} by {signal.by}"})


class VerdictTrip(Saga[TripData]):
    steps = (WaitVerdict, ReserveHotel)


class ImpatientTrip(Saga[TripData]):
    steps = (ReserveFlight, WaitFor(Picked, timeout_s=0.5, name="wait_briefly"))


DELAY_S = 5  # room for the test to kill the worker after it set the timer, before it is due


class DelayedTrip(Saga[TripData]):
    steps = (WaitFor(Go), Delay(DELAY_S))


class HotelTrip(Saga[TripData]):
    """The child: no pivot, so a parent can have it undone once it completed."""

    steps = (ReserveHotel,)


class BookHotel(ChildSaga[TripData]):
    saga = HotelTrip

    def start(self, data: TripData) -> TripData:
        return TripData(trip=data.trip)

    def on_child_completed(self, data: TripData, child: TripData) -> TripData:
        return data.model_copy(update={"refs": {**data.refs, **child.refs}})


class ParentTrip(Saga[TripData]):
    steps = (ReserveFlight, BookHotel, ReserveTour)


class HotelFirstTrip(Saga[TripData]):
    """Starts its child in the transaction that starts it."""

    steps = (BookHotel, ReserveTour)


SAGAS: Sequence[type[Saga[Any]]] = (
    ParallelTrip,
    PickedTrip,
    VerdictTrip,
    ImpatientTrip,
    DelayedTrip,
    HotelTrip,
    ParentTrip,
    HotelFirstTrip,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS lang_effects (
    position bigserial PRIMARY KEY, trip text NOT NULL, service text NOT NULL, action text NOT NULL,
    note text NOT NULL DEFAULT ''
)
"""
EFFECT = text("INSERT INTO lang_effects (trip, service, action, note) VALUES (:t, :s, :a, :n)")


@dataclass
class Controls:
    """What a test changes in the participants: the services whose answer waits on an event."""

    held: dict[str, asyncio.Event] = field(default_factory=dict)


def participants(controls: Controls) -> dict[str, dict[type[BaseModel], Any]]:
    async def reserve(conn: AsyncConnection, cmd: Reserve, envelope: Envelope) -> Reserved:
        hold = controls.held.get(cmd.service)
        if hold is not None:
            await hold.wait()
        if f"refuse-{cmd.service}" in cmd.trip:
            raise Refused(f"{cmd.service}: nothing free for {cmd.trip}")
        await conn.execute(EFFECT, {"t": cmd.trip, "s": cmd.service, "a": "reserve", "n": cmd.note})
        return Reserved(service=cmd.service, trip=cmd.trip, ref=f"{cmd.service}-{cmd.trip}")

    async def cancel(conn: AsyncConnection, cmd: Cancel, envelope: Envelope) -> Cancelled:
        await conn.execute(EFFECT, {"t": cmd.trip, "s": cmd.service, "a": "cancel", "n": ""})
        return Cancelled(service=cmd.service, trip=cmd.trip)

    return {service: {Reserve: reserve, Cancel: cancel} for service in SERVICES}


def build_app(controls: Controls | None = None, prefix: str = "lang") -> App:
    return App(
        sagas=SAGAS, messages=messages, participants=participants(controls or Controls()), topic_prefix=prefix
    )


@dataclass
class Trips:
    """The language app running: relay, orchestrator worker (unless left out), participants."""

    app: App
    engine: AsyncEngine
    orchestrator: Orchestrator
    controls: Controls
    bootstrap: str

    async def start(self, saga: type[Saga[Any]], trip: str, *signals: BaseModel) -> str:
        """Start the saga, and send it `signals`, in one transaction."""
        async with self.engine.begin() as conn:
            saga_id = await self.orchestrator.start(conn, saga, TripData(trip=trip), key=trip)
            for signal in signals:
                await self.app.signal(conn, saga, signal, key=trip)
        return saga_id

    async def state(self, saga_id: str) -> TypedSagaState[Any]:
        return await self.orchestrator.load(saga_id)

    async def wait_status(self, saga_id: str, *statuses: str, deadline_s: float = 60) -> TypedSagaState[Any]:
        async def reached() -> bool:
            return (await self.state(saga_id)).status in statuses

        await wait_for(reached, deadline_s, f"saga {saga_id} to reach {statuses}")
        return await self.state(saga_id)

    async def events(self, saga_id: str) -> list[RecordedEvent]:
        return await self.orchestrator.store.load(stream_of(saga_id))

    async def wait_event(self, saga_id: str, kind: type[BaseModel], deadline_s: float = 60) -> list[Any]:
        """Until the saga has recorded an event of this type; all of them."""

        async def found() -> bool:
            return any(isinstance(e.event, kind) for e in await self.events(saga_id))

        await wait_for(found, deadline_s, f"saga {saga_id} to record {kind.__name__}")
        return [e.event for e in await self.events(saga_id) if isinstance(e.event, kind)]

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def effects(self, trip: str) -> list[tuple[str, str, str]]:
        """(service, action, note) the participants recorded for the trip, in order."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT service, action, note FROM lang_effects WHERE trip = :t ORDER BY position"),
                {"t": trip},
            )
            return [(r[0], r[1], r[2]) for r in rows]


async def prepare(database: Database, bootstrap: str, prefix: str) -> None:
    """The effects table and the app's topics."""
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql(SCHEMA)
    topics = Topics(prefix)
    names = [*(topics.replies(s.name) for s in SAGAS), *(topics.commands(s) for s in SERVICES)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=2, replication_factor=1) for n in names])
    finally:
        await admin.close()


@asynccontextmanager
async def running(
    database: Database, bootstrap: str, *, orchestrator_worker: bool = True
) -> AsyncIterator[Trips]:
    prefix = f"l{uuid.uuid4().hex[:10]}"
    await prepare(database, bootstrap, prefix)
    controls = Controls()
    app = build_app(controls, prefix)
    orchestrator = app.orchestrator(database)
    workers: list[Worker] = [Relay(database, bootstrap, poll_interval_s=0.2)]
    if orchestrator_worker:
        workers.append(
            OrchestratorWorker(orchestrator, bootstrap, deadline_interval_s=0.1, retry_backoff_s=0.05)
        )
    workers += [app.participant(database, bootstrap, s, retry_backoff_s=0.05) for s in SERVICES]
    for worker in workers:
        await worker.start()
    try:
        yield Trips(app, database.engine, orchestrator, controls, bootstrap)
    finally:
        for event in controls.held.values():
            event.set()  # a held handler must not keep its participant from stopping
        for worker in reversed(workers):
            await worker.stop()
        await orchestrator.aclose()

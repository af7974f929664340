"""The `eventsourcing` library against our event store, on the same Postgres server (a database
each), in this process: append N events to M streams, then replay every stream and fold it.

Each side as its users write it: theirs an `Aggregate` whose `deposit` method triggers an event,
saved by an `Application` (one transaction per save, the library's own table, its notification
ids); ours pydantic events appended with `EventStore.append` at the stream's known version (one
transaction per append). Both keep the M accounts in memory while appending, as a command handler
that holds the aggregate would, so no append reads first. Replay: their repository's `get` (no
snapshots, no cache) against our `read_stream` folded into a balance. Both single-threaded.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from bench._scratch import ScratchDatabase
from eventstore import NO_STREAM, Database, EventRegistry, EventStore, eventstore_migrations, libpq_url


@dataclass
class Rates:
    append_per_s: float
    replay_per_s: float


def amount(i: int) -> Decimal:
    return Decimal(i % 1000) / 100


def reference(i: int) -> str:
    return f"ref-{i:08d}"


# --- ours ------------------------------------------------------------------------------------


class Deposited(BaseModel):
    amount: Decimal
    reference: str


registry = EventRegistry()
registry.register(Deposited, "peers.deposited")


async def ours(server: str, events: int, streams: int, batch: int) -> Rates:
    async with ScratchDatabase(server, eventstore_migrations()) as scratch:
        database = Database(scratch.url)
        try:
            store = EventStore(database, registry)
            versions = dict.fromkeys(range(streams), 0)
            started = time.perf_counter()
            for i in range(0, events, batch):
                s = (i // batch) % streams
                new = [Deposited(amount=amount(j), reference=reference(j)) for j in range(i, i + batch)]
                await store.append(f"account-{s}", new, versions[s] or NO_STREAM)
                versions[s] += batch
            append = events / (time.perf_counter() - started)

            started = time.perf_counter()
            balances, read = {}, 0
            for s in range(streams):
                balance = Decimal(0)
                async for recorded in store.read_stream(f"account-{s}"):
                    assert isinstance(recorded.event, Deposited)
                    balance += recorded.event.amount
                    read += 1
                balances[s] = balance
            replay = read / (time.perf_counter() - started)
        finally:
            await database.aclose()
    _check("ours", balances, read, events, streams, batch)
    return Rates(append, replay)


# --- eventsourcing ---------------------------------------------------------------------------


class Account(Aggregate):
    def __init__(self, number: int) -> None:
        self.number = number
        self.balance = Decimal(0)

    @event("Deposited")
    def deposit(self, amount: Decimal, reference: str) -> None:
        self.balance += amount


class Bank(Application[uuid.UUID]):
    name = "Bank"


def _environment(server: str, database: str) -> dict[str, str]:
    """Their settings for one database on our server (libpq's host may be a socket folder)."""
    url = make_url(server)
    info = psycopg.conninfo.conninfo_to_dict(libpq_url(server))
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": database,
        "POSTGRES_HOST": str(info.get("host") or "localhost"),
        "POSTGRES_PORT": str(info.get("port") or url.port or 5432),
        "POSTGRES_USER": str(info.get("user") or url.username or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or url.password or ""),
    }


async def theirs(server: str, events: int, streams: int, batch: int) -> Rates:
    # Their tables: the library creates them (CREATE_TABLE defaults to yes).
    async with ScratchDatabase(server, []) as scratch:
        app = Bank(env=_environment(server, scratch.name))
        try:
            accounts: dict[int, Account] = {}
            started = time.perf_counter()
            written = 0
            for i in range(0, events, batch):
                s = (i // batch) % streams
                account = accounts.get(s)
                first = account is None
                if account is None:
                    account = accounts[s] = Account(s)  # its Created event is one of the batch
                for j in range(i + first, i + batch):
                    account.deposit(amount(j), reference(j))
                written += len(app.save(account))
            append = written / (time.perf_counter() - started)

            started = time.perf_counter()
            balances: dict[int, Decimal] = {}
            read = 0
            for s, account in accounts.items():
                replayed: Any = app.repository.get(account.id)
                balances[s] = replayed.balance
                read += replayed.version
            replay = read / (time.perf_counter() - started)
        finally:
            app.close()
    # Their first event of each account is Created, not a deposit of that order's amount.
    firsts = sum((amount(s * batch) for s in range(min(streams, events // batch))), Decimal(0))
    _check("eventsourcing", balances, read, events, streams, batch, created=firsts)
    return Rates(append, replay)


def _check(
    side: str,
    balances: dict[int, Decimal],
    read: int,
    events: int,
    streams: int,
    batch: int,
    created: Decimal = Decimal(0),
) -> None:
    want = sum((amount(i) for i in range(events)), Decimal(0)) - created
    if read != events or sum(balances.values()) != want:
        raise SystemExit(
            f"{side}: read back {read} events (expected {events}), balances {sum(balances.values())} "
            f"(expected {want}): no figures printed"
        )

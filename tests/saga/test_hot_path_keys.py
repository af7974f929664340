"""Every statement the saga runtime runs on its tables during a run filters by the saga's key
(or inserts it), unless an entry of ALLOWED says why it may not: so the tables can be
distributed and co-located by that key (Citus, the README's "The path past one machine").

The statements come from pg_stat_statements after a handful of order sagas ran to the end
through the real relay, orchestrator worker and participants: completed, refused by payments,
refused by the stock, and timed out at the wait for the warehouse (a deadline that fires).
The test's own statements (its waits load sagas by id, it pulls a deadline forward by saga id)
are classified with the rest. The check reads the statement text; it cannot see an OR that
undoes a key filter."""

from __future__ import annotations

import os
import re
import uuid
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import libpq_url
from examples.orders.messages import Picked
from examples.orders.saga import OrderData, OrderSaga, WaitForPicked
from examples.orders.shop import place_orders
from tests.helpers import wait_for
from tests.saga.conftest import System

# The runtime's tables and the column that keeps a statement on one saga's rows (the column a
# distributed table would be distributed by). None: no statement on it is keyed by a saga, each
# must be on ALLOWED.
HOT_TABLES: dict[str, str | None] = {
    "es_events": "stream_id",  # 'saga:' || saga_id
    "es_snapshots": "stream_id",
    "saga_instances": "saga_id",
    "saga_deadlines": "saga_id",
    "outbox": "key",  # the Kafka key: the saga id
    "outbox_dead": "key",
    "inbox": None,  # (consumer group, message id)
    "es_checkpoints": None,  # per subscriber
    "saga_outage_credit": None,  # one row
}

# Statements that may span sagas, each with why that is acceptable: none runs once per saga
# or per message. Patterns match the statement text with its whitespace collapsed (constants
# show as $n). Some entries cover statements a run meets only sometimes (a gauge's refresh, a
# retention pass, a refusal by Kafka), so that the test does not depend on timing.
ALLOWED: list[tuple[str, str]] = [
    # The relay (outbox/_relay.py)
    (
        r"^SELECT .* FROM outbox WHERE (bucket = ANY\(\S+\) AND )?topic <> ALL\(\S+\) ORDER BY id LIMIT",
        "the relay's claim: the oldest rows of its buckets (a bucket is derived from the key), or "
        "of the whole outbox; one statement per batch of messages, not per saga",
    ),
    (
        r"^DELETE FROM outbox WHERE (bucket = ANY\(\S+\) AND )?id = ANY\(",
        "the relay removes the rows it just published, by id; one statement per batch",
    ),
    (
        r"^SELECT .* FROM outbox WHERE (bucket = ANY\(\S+\) AND )?topic = \$\d+ ORDER BY id LIMIT",
        "the relay's recheck of a topic Kafka did not have; only while one is missing",
    ),
    (
        r"^INSERT INTO outbox_dead .* FROM outbox o JOIN unnest\(",
        "rows Kafka refused for good move out of the outbox, by id; only on such a refusal",
    ),
    # The inbox (outbox/_inbox.py)
    (
        r"^INSERT INTO inbox \(consumer_group, message_id, message_type\)",
        "the effectively-once guard is keyed by (consumer group, message id): one row per message; "
        "a command's id is derived from the saga id, but the row does not carry the saga id",
    ),
    (
        r"^DELETE FROM inbox WHERE \(consumer_group, message_id\) IN \( SELECT .* handled_at <",
        "inbox retention: old rows of a group, in small batches, once a minute",
    ),
    # The orchestrator worker (saga/_repository.py, _repository_reads.py, _metrics.py)
    (
        r"^SELECT .* FROM saga_deadlines WHERE due_at <= .* ORDER BY due_at LIMIT",
        "the deadline loop's poll for the due deadlines of any saga, by time",
    ),
    (
        r"^SELECT count\(\*\) FROM saga_deadlines WHERE due_at <=",
        "a gauge: how many deadlines are due",
    ),
    (
        r"^WITH credit AS \( SELECT covered_until FROM saga_outage_credit",
        "after an outage of the worker's own side, every pending reply deadline moves later once",
    ),
    (
        r"^SELECT i\.saga_id FROM saga_instances i JOIN unnest\(.*\) AS v\(saga_type, version\)",
        "the worker's periodic look for sagas parked for a version it has (a partial index)",
    ),
    (
        r"^SELECT status, count\(\*\) FROM saga_instances GROUP BY",
        "a gauge: sagas by status",
    ),
    (
        r"^SELECT .* FROM saga_instances WHERE status IN \(.*\) ORDER BY created_at LIMIT",
        "a gauge: the oldest active saga",
    ),
    # Outbox and event store gauges and checks (outbox/_outbox.py, eventstore/_queries.py)
    (r"^SELECT count\(\*\), .* FROM outbox$", "a gauge: the outbox's length and age"),
    (
        r"^SELECT count\(\*\) FROM es_events WHERE tx_id >= pg_snapshot_xmin",
        "a gauge: how far the feed's line trails the newest event",
    ),
    (
        r"^SELECT \(SELECT max\(tx_id\) FROM es_events\), pg_snapshot_xmax",
        "a startup check: the events were written by this cluster",
    ),
    (
        r"^SELECT .* FROM es_events WHERE \(tx_id, position\) > .* ORDER BY tx_id, position LIMIT",
        "catch-up readers follow the global order of all streams, by position",
    ),
    (
        r"^(SELECT .* FROM|INSERT INTO) es_checkpoints",
        "a catch-up reader's checkpoint: one row per subscriber",
    ),
]

SAGAS_TOUCH = {"es_events", "saga_instances", "saga_deadlines", "outbox", "inbox"}
NEW_ORDER = text(
    "INSERT INTO orders (order_id, customer_id, sku, quantity, amount) VALUES (:o, :c, :s, 1, 10)"
)
STATEMENTS_OF_THIS_DATABASE = """
    SELECT query FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
NOT_LOADED = (
    "pg_stat_statements is not loaded on the test Postgres (shared_preload_libraries = {!r}), so "
    "this test cannot see which statements ran. The local services add it to postgresql.conf on "
    "`make services` (scripts/services up); restart them to load it: `scripts/services down` then "
    "`scripts/services up`. Another server: set shared_preload_libraries = 'pg_stat_statements' "
    "and restart it."
)


@pytest.fixture
def database_url(database_url: str) -> str:
    """The test's database, its statements tracked from the first connection on (the local
    server tracks none by default: see PG_SETTINGS in saga/testing/_local_services.py)."""
    name = make_url(database_url).database
    with psycopg.connect(libpq_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET pg_stat_statements.track = 'top'")
    return database_url


def tables_in(statement: str) -> set[str]:
    return {
        table
        for table in HOT_TABLES
        if re.search(rf"\b(FROM|JOIN|INTO|UPDATE|USING)\s+{table}\b", statement, re.IGNORECASE)
    }


def keyed(statement: str, table: str) -> bool:
    """The statement inserts the table's key column, or filters on it."""
    column = HOT_TABLES[table]
    if column is None:
        return False
    inserted = re.search(rf"\bINSERT INTO {table}\s*\(([^)]*)\)", statement, re.IGNORECASE)
    if inserted and column in re.split(r"\s*,\s*", inserted.group(1).strip()):
        return True
    filtered = rf"\b(WHERE|AND|ON)\s+\(?(\w+\.)?{column}\s*(=|IN\b)"
    return re.search(filtered, statement, re.IGNORECASE) is not None


def unkeyed(statements: list[str]) -> list[str]:
    """The statements on hot tables neither keyed nor allowed, each with the tables it misses."""
    found = []
    for statement in statements:
        missing = sorted(t for t in tables_in(statement) if not keyed(statement, t))
        if missing and not any(re.search(pattern, statement) for pattern, _ in ALLOWED):
            found.append(f"on {', '.join(missing)}: {statement}")
    return found


async def begin_statistics(conn: AsyncConnection) -> None:
    loaded = (await conn.execute(text("SELECT current_setting('shared_preload_libraries')"))).scalar()
    assert "pg_stat_statements" in str(loaded), NOT_LOADED.format(loaded)
    await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    await conn.execute(
        text(
            "SELECT pg_stat_statements_reset(0, "
            "(SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
        )
    )


def order(customer: str, sku: str) -> OrderData:
    return OrderData(
        order_id=f"hot-{uuid.uuid4().hex[:8]}", customer_id=customer, sku=sku, quantity=1, amount=Decimal(10)
    )


async def start_one(system: System, data: OrderData, *, picked: bool) -> str:
    """An order and its saga in one transaction, alone; with its Picked signal when `picked`."""
    async with system.engine.begin() as conn:
        await conn.execute(NEW_ORDER, {"o": data.order_id, "c": data.customer_id, "s": data.sku})
        saga_id = await system.orchestrator.start(conn, OrderSaga, data, key=data.order_id)
        if picked:
            await system.orchestrator.signal(conn, OrderSaga, Picked(order_id=data.order_id), saga_id=saga_id)
    return saga_id


async def run_sagas(system: System) -> None:
    """Five order sagas to their ends: two started together and completed, one refused by
    payments, one by the stock, one timed out at its wait (its deadline pulled forward)."""
    async with system.engine.begin() as conn:
        together = [order("alice", "widget"), order("alice", "widget")]
        ids = await place_orders(conn, system.orchestrator, together, pick_at_once=lambda _: True)
    ids.append(await start_one(system, order("declined", "widget"), picked=True))
    ids.append(await start_one(system, order("alice", "scarce"), picked=True))
    ids.append(lost_id := await start_one(system, order("alice", "widget"), picked=False))

    async def wait_due_now() -> bool:
        async with system.engine.begin() as conn:
            pulled = await conn.execute(
                text(
                    "UPDATE saga_deadlines SET due_at = now() - interval '1 second' "
                    "WHERE saga_id = :s AND step = :step"
                ),
                {"s": lost_id, "step": WaitForPicked.name},
            )
        return bool(pulled.rowcount == 1)

    await wait_for(wait_due_now, 30, "the lost order's saga to wait for the warehouse")

    async def all_ended() -> bool:
        states = [await system.state(saga_id) for saga_id in ids]
        return all(s.status in ("completed", "compensated") for s in states)

    await wait_for(all_ended, 60, f"the sagas {ids} to end")
    assert [(await system.state(saga_id)).status for saga_id in ids] == [
        "completed",
        "completed",
        "compensated",
        "compensated",
        "compensated",
    ]


async def test_every_hot_path_statement_filters_by_the_sagas_key_or_says_why_not(system: System) -> None:
    async with system.engine.begin() as conn:
        await conn.execute(text("INSERT INTO stock VALUES ('scarce', 0)"))
        await begin_statistics(conn)
    await run_sagas(system)
    async with system.engine.connect() as conn:
        ran = (await conn.execute(text(STATEMENTS_OF_THIS_DATABASE))).scalars().all()
    statements = [" ".join(s.split()) for s in ran]
    seen = set().union(*map(tables_in, statements))
    assert seen >= SAGAS_TOUCH, (  # not a vacuous pass
        f"pg_stat_statements recorded no statement of the run on {sorted(SAGAS_TOUCH - seen)} "
        "(is pg_stat_statements.track 'none' for this database?); it recorded:\n" + "\n".join(statements)
    )
    found = unkeyed(statements)
    assert found == [], (
        "Statements on the saga runtime's tables that do not filter by the saga's key (stream id, "
        "saga id, outbox key) nor insert it. Add the key to the statement, or, if it must span "
        "sagas, an entry to ALLOWED with the reason:\n" + "\n".join(found)
    )


@pytest.mark.pure
def test_the_classification_tells_keyed_from_unkeyed_statements() -> None:
    assert (
        unkeyed(
            [
                "SELECT 1 FROM es_events WHERE stream_id = ANY($1::text[])",
                "DELETE FROM saga_deadlines d USING unnest($1::text[]) AS c(saga_id) WHERE d.saga_id = c.saga_id",
                "INSERT INTO outbox (message_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5)",
                "SELECT id, topic FROM outbox WHERE topic <> ALL($1::text[]) ORDER BY id LIMIT $2",
                "SELECT id, topic FROM outbox WHERE bucket = ANY($1::int[]) AND topic <> ALL($2::text[]) ORDER BY id LIMIT $3",
                "BEGIN",
            ]
        )
        == []
    )
    assert unkeyed(
        [
            "SELECT count(*) FROM saga_instances WHERE status = $1",
            "INSERT INTO es_snapshots (version, data) VALUES ($1, $2)",
            "UPDATE saga_instances SET saga_id = $1 WHERE status = $2",
        ]
    ) == [
        "on saga_instances: SELECT count(*) FROM saga_instances WHERE status = $1",
        "on es_snapshots: INSERT INTO es_snapshots (version, data) VALUES ($1, $2)",
        "on saga_instances: UPDATE saga_instances SET saga_id = $1 WHERE status = $2",
    ]

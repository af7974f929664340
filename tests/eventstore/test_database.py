"""Database: the one owner of connections, on the real Postgres."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from eventstore import Database, create_engine
from tests.helpers import wait_for


async def backends(database: Database) -> int:
    """Sessions connected to this test's database, other than the one asking."""
    async with database.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int((await conn.execute(query)).scalar_one())


async def backend_pid(database: Database) -> int:
    async with database.autocommit() as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    return int(row[0])


async def test_url_xor_engine_and_engine_options_only_with_a_url(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with pytest.raises(ValueError, match="takes a url or an engine"):
            Database()
        with pytest.raises(ValueError, match="takes a url or an engine"):
            Database(database_url, engine=engine)
        with pytest.raises(ValueError, match=r"engine options \(pool_size\) apply only with a url"):
            Database(engine=engine, pool_size=3)
        with pytest.raises(ValueError, match="autocommit_size must be >= 1, got 0"):
            Database(database_url, autocommit_size=0)
    finally:
        await engine.dispose()


async def test_aclose_twice_disposes_its_own_engine_and_closes_its_connections(
    database_url: str, database: Database
) -> None:
    db = Database(database_url)
    async with db.begin() as conn:
        await conn.execute(text("SELECT 1"))
    await backend_pid(db)
    assert await backends(database) >= 2  # db's pooled connection and its autocommit one
    await db.aclose()
    await db.aclose()
    assert db.closed

    async def none_left() -> bool:
        return await backends(database) == 0

    await wait_for(none_left, 10, "the closed database's sessions to end")
    with pytest.raises(RuntimeError, match=r"the Database was closed \(aclose was called\)"):
        db.connect()
    with pytest.raises(RuntimeError, match="the Database was closed"):
        await backend_pid(db)


async def test_an_engine_passed_in_is_not_disposed(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        db = Database(engine=engine)
        async with db.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await db.aclose()
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedin() == 1  # a disposed engine's pool would start empty
        async with engine.connect() as conn:  # the same pooled session, still open
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() == pid
    finally:
        await engine.dispose()


async def test_autocommit_connections_are_reused_unless_left_mid_transaction(database: Database) -> None:
    first = await backend_pid(database)
    assert await backend_pid(database) == first
    async with database.autocommit() as conn:
        await conn.execute("BEGIN")  # handed back inside a transaction: not fit to reuse
    async with database.autocommit() as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    assert row[0] != first


async def test_a_killed_autocommit_connection_is_reported_and_replaced(database: Database) -> None:
    from eventstore import StoreUnavailableError

    victim = await backend_pid(database)
    async with database.connect() as admin:
        # With a timeout, pg_terminate_backend returns once the session has ended.
        assert (
            await admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": victim})
        ).scalar()
    with pytest.raises(StoreUnavailableError, match="Postgres is unavailable"):
        await backend_pid(database)
    assert await backend_pid(database) != victim


async def test_listening_wakes_on_notify_and_comes_back_after_its_connection_is_killed(
    database: Database,
) -> None:
    wakeup = asyncio.Event()

    async def listener_pid() -> int | None:
        async with database.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query = 'LISTEN db_test'"
                )
            )
            return found.scalar_one_or_none()

    async def notify() -> None:
        async with database.autocommit() as conn:
            await conn.execute("NOTIFY db_test")

    async with database.listening("db_test", wakeup, retry_s=0.05):
        await wait_for(wakeup.is_set, 20, "LISTEN to be established")
        wakeup.clear()
        await notify()
        await wait_for(wakeup.is_set, 20, "the NOTIFY to set the event")

        pid = await listener_pid()
        assert pid is not None
        wakeup.clear()
        async with database.connect() as admin:
            assert (
                await admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
            ).scalar()
        await wait_for(wakeup.is_set, 20, "LISTEN to be established again")
        again = await listener_pid()
        assert again not in (None, pid)
        wakeup.clear()
        await notify()
        await wait_for(wakeup.is_set, 20, "the NOTIFY on the new connection")

    async def not_listening() -> bool:
        return await listener_pid() is None

    await wait_for(not_listening, 10, "leaving the block to close the LISTEN connection")


async def test_listening_refuses_a_channel_it_would_have_to_quote(database: Database) -> None:
    with pytest.raises(ValueError, match=r"LISTEN channel 'Bad-Name': use a lower-case identifier"):
        async with database.listening("Bad-Name", asyncio.Event()):
            pass


async def test_a_session_is_its_own_and_ends_with_its_lock(database: Database) -> None:
    async with database.session(application_name="db-test-session") as conn:
        row = await (
            await conn.execute("SELECT pg_try_advisory_lock(42), current_setting('application_name')")
        ).fetchone()
        assert row == (True, "db-test-session")
        async with database.session() as other:
            taken = await (await other.execute("SELECT pg_try_advisory_lock(42)")).fetchone()
            assert taken == (False,)
    async with database.session() as later:
        assert await (await later.execute("SELECT pg_try_advisory_lock(42)")).fetchone() == (True,)

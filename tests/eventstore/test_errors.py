"""classify_error and is_retriable on errors the real driver raises, and on our own."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import (
    ConcurrencyError,
    ConnectionRefusal,
    Database,
    DuplicateEventError,
    ErrorKind,
    Refusal,
    StoreUnavailableError,
    classify_error,
    connection_refusal,
    is_retriable,
    libpq_url,
    translate_errors,
)
from tests.helpers import wait_for


@pytest.fixture
async def rows(database: Database) -> Database:
    async with database.begin() as conn:
        await conn.execute(text("CREATE TABLE rows (id int PRIMARY KEY, v int NOT NULL)"))
        await conn.execute(text("INSERT INTO rows VALUES (1, 0), (2, 0)"))
    return database


async def waiting_on_a_lock(database: Database) -> bool:
    async with database.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
        return bool(found.scalar_one())


async def test_a_lock_timeout_is_contention(rows: Database) -> None:
    """Through SQLAlchemy: the driver's error arrives wrapped, and is classified by its cause."""
    async with rows.connect() as holder, rows.connect() as waiter:
        await holder.execute(text("UPDATE rows SET v = 1 WHERE id = 1"))
        await waiter.execute(text("SET LOCAL lock_timeout = '50ms'"))
        with pytest.raises(sa_exc.OperationalError) as info:
            await waiter.execute(text("UPDATE rows SET v = 2 WHERE id = 1"))
    assert isinstance(info.value.orig, psycopg.errors.LockNotAvailable)
    assert classify_error(info.value) is ErrorKind.CONTENTION
    assert is_retriable(info.value)


async def test_a_deadlock_is_contention(rows: Database) -> None:
    """Each session holds the row the other wants; the second to wait is the victim (the
    first waits with a long deadlock_timeout, so only the second runs the detector)."""
    async with rows.session() as first, rows.session() as second:
        await first.execute("BEGIN")
        await first.execute("SET LOCAL deadlock_timeout = '30s'")
        await second.execute("BEGIN")
        await first.execute("UPDATE rows SET v = 1 WHERE id = 1")
        await second.execute("UPDATE rows SET v = 1 WHERE id = 2")
        blocked = asyncio.create_task(first.execute("UPDATE rows SET v = 2 WHERE id = 2"))
        await wait_for(lambda: waiting_on_a_lock(rows), 20, "the first session to wait for row 2")
        with pytest.raises(psycopg.errors.DeadlockDetected) as info:
            await second.execute("UPDATE rows SET v = 2 WHERE id = 1")
        await second.execute("ROLLBACK")
        await blocked
        await first.execute("COMMIT")
    assert classify_error(info.value) is ErrorKind.CONTENTION
    assert is_retriable(info.value)


async def test_a_bad_statement_is_a_statement_error_and_not_retriable(rows: Database) -> None:
    failures: list[BaseException] = []
    for sql in (
        "SELECT * FROM no_such_table",  # 42P01
        "SELECT 1 / 0",  # 22012
        "INSERT INTO rows VALUES (1, 0)",  # 23505
    ):
        async with rows.connect() as conn:
            with pytest.raises(sa_exc.DBAPIError) as info:
                await conn.execute(text(sql))
        failures.append(info.value)
        async with rows.autocommit() as raw:
            with pytest.raises(psycopg.Error) as raw_info:
                await raw.execute(sql)
        failures.append(raw_info.value)
    assert [classify_error(f) for f in failures] == [ErrorKind.STATEMENT] * 6
    assert not any(is_retriable(f) for f in failures)


async def test_a_killed_connection_is_connection_lost(database: Database) -> None:
    async def killed(conn: AsyncConnection) -> None:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with database.connect() as admin:
            ended = await admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
            assert ended.scalar_one()

    async with database.connect() as conn:
        await killed(conn)
        with pytest.raises(sa_exc.DBAPIError) as wrapped:
            await conn.execute(text("SELECT 1"))
    assert classify_error(wrapped.value) is ErrorKind.CONNECTION_LOST

    async with database.session() as raw:
        async with database.connect() as admin:
            ended = await admin.execute(
                text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": raw.info.backend_pid}
            )
            assert ended.scalar_one()
        with pytest.raises(psycopg.OperationalError) as direct:
            await raw.execute("SELECT 1")
    assert classify_error(direct.value) is ErrorKind.CONNECTION_LOST
    assert is_retriable(direct.value)

    async with database.connect() as conn:
        await killed(conn)
        with (
            pytest.raises(StoreUnavailableError, match="Postgres is unavailable") as translated,
            translate_errors(),
        ):
            await conn.execute(text("SELECT 1"))
    assert classify_error(translated.value) is ErrorKind.CONNECTION_LOST


class OutOfStock(Refusal):
    pass


class NotForNow(Exception):
    retriable = False


@pytest.mark.parametrize(
    ("exc", "kind", "retriable"),
    [
        (ConcurrencyError("s", 1, 2), ErrorKind.CONTENTION, True),
        (StoreUnavailableError("gone"), ErrorKind.CONNECTION_LOST, True),
        (sa_exc.TimeoutError("pool exhausted"), ErrorKind.CONNECTION_LOST, True),
        (ConnectionResetError("reset"), ErrorKind.CONNECTION_LOST, True),
        (OutOfStock("no widgets"), ErrorKind.REFUSAL, False),
        (DuplicateEventError("twice"), ErrorKind.FAILURE, False),  # its own flag wins
        (NotForNow(), ErrorKind.FAILURE, False),
        (RuntimeError("boom"), ErrorKind.FAILURE, True),
        (TimeoutError(), ErrorKind.FAILURE, True),  # a timeout of ours, not a broken link
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_our_own_errors_and_the_one_default(exc: BaseException, kind: ErrorKind, retriable: bool) -> None:
    assert classify_error(exc) is kind
    assert is_retriable(exc) is retriable


def test_a_refusal_is_recognised_by_class_and_keeps_its_reason() -> None:
    class LooksLikeOne(Exception):
        reason = "duck"

    assert classify_error(LooksLikeOne()) is ErrorKind.FAILURE
    refusal = OutOfStock("no widgets")
    assert (refusal.reason, str(refusal)) == ("no widgets", "no widgets")


async def test_item10_a_server_refusing_the_connection_is_told_apart_from_one_that_is_down(
    database_url: str,
) -> None:
    """The real driver's errors: no SQLSTATE, only the server's words (the password case is
    below, as this test server trusts every login)."""
    server = make_url(database_url)
    attempts = {
        "database": server.set(database="nosuch_db"),
        "login": server.set(username="nosuch_role"),
        "down": server.set(query={"host": "/nonexistent"}),
    }
    found: dict[str, ConnectionRefusal | None] = {}
    for name, url in attempts.items():
        with pytest.raises(psycopg.OperationalError) as caught:
            await psycopg.AsyncConnection.connect(libpq_url(url.render_as_string(hide_password=False)))
        assert classify_error(caught.value) is ErrorKind.CONNECTION_LOST
        unavailable = StoreUnavailableError("Postgres is unavailable")
        unavailable.__cause__ = caught.value
        found[name] = connection_refusal(unavailable)
    assert found == {
        "database": ConnectionRefusal("database", 'database "nosuch_db" does not exist'),
        "login": ConnectionRefusal("login", 'role "nosuch_role" does not exist'),
        "down": None,
    }


@pytest.mark.pure
@pytest.mark.parametrize(
    ("message", "refusal"),
    [
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            'FATAL:  password authentication failed for user "shop"',
            ConnectionRefusal("login", 'password authentication failed for user "shop"'),
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            "fe_sendauth: no password supplied",
            ConnectionRefusal("login", "fe_sendauth: no password supplied"),
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            "FATAL:  the database system is starting up",
            None,
        ),
        ("connection failed: timeout expired", None),
    ],
)
def test_item10_the_words_of_a_refused_login_are_a_login_refusal(
    message: str, refusal: ConnectionRefusal | None
) -> None:
    """Messages as libpq writes them for servers this suite cannot run (one asking a password)."""
    assert connection_refusal(psycopg.OperationalError(message)) == refusal
    assert connection_refusal(sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))) == (
        refusal
    )

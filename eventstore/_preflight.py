"""Before a process takes work: can it reach its database, and is the schema there?

Three answers, because they call for three different things. Postgres cannot be reached (the
connection is refused, times out, the host name does not resolve, the server is starting
up): an outage, `DatabaseUnreachableError`, which is worth waiting out. Postgres answered and
refused us (wrong password, no such role or database, no CONNECT privilege): a configuration
mistake, `DatabaseConfigError`; waiting does not fix it. The schema is behind the code:
`SchemaError`, naming the command that fixes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import unquote

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from eventstore._database import Database
from eventstore._errors import (
    DatabaseConfigError,
    DatabaseUnreachableError,
    ErrorKind,
    SchemaError,
    StoreUnavailableError,
    classify_error,
    connection_refusal,
)
from eventstore._migrations import Migration, check_schema

CHECK_TIMEOUT_S = 10.0


def database_service(database: Database) -> str:
    """ "Postgres at postgresql://user:***@host:5432/name", for messages (no password)."""
    url = database.engine.url.set(drivername="postgresql")
    return f"Postgres at {unquote(url.render_as_string(hide_password=True))}"


async def check_database(
    database: Database, migrations: Sequence[Migration] = (), *, timeout_s: float = CHECK_TIMEOUT_S
) -> None:
    """`SELECT 1`, then check that `migrations` are applied.

    Raises `DatabaseUnreachableError` when Postgres cannot be reached now (retriable),
    `DatabaseConfigError` when it answered and refused us, `SchemaError` when the schema is
    behind; each names the database (never the password)."""
    service = database_service(database)
    try:
        async with asyncio.timeout(timeout_s):
            async with database.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await check_schema(conn, list(migrations))
                await conn.rollback()
    except TimeoutError:
        raise DatabaseUnreachableError(service, f"no answer within {timeout_s:g}s") from None
    except SchemaError as exc:
        raise SchemaError(f"{service}: {exc}") from None
    except (sa_exc.DBAPIError, psycopg.Error, OSError, StoreUnavailableError) as exc:
        refusal = connection_refusal(exc)
        if refusal is not None:
            raise DatabaseConfigError(
                f"{service} refused the connection: {refusal.reason}; check the database URL "
                "(host, port, database name, user, password)"
            ) from None
        if classify_error(exc) is ErrorKind.CONNECTION_LOST:
            raise DatabaseUnreachableError(service, _reason(exc)) from None
        raise


def _reason(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(orig, StoreUnavailableError) and orig.__cause__ is not None:
        return _reason(orig.__cause__)
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    # "connection failed: connection to server at "h", port 5432 failed: Connection refused"
    return first.rpartition("failed: ")[2] or first

"""Engine setup: one place that turns a Postgres URL into an async SQLAlchemy engine."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_DRIVER = "postgresql+psycopg"


def sqlalchemy_url(url: str) -> str:
    """Accept `postgres://`, `postgresql://` or `postgresql+psycopg://` and name psycopg 3."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in {"postgres", "postgresql"}:
        raise ValueError(f"not a Postgres URL: {parsed.render_as_string(hide_password=True)!r}")
    return parsed.set(drivername=_DRIVER).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URL, for raw psycopg connections (LISTEN, COPY)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An async engine over psycopg 3. The caller owns it and disposes of it."""
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    options.setdefault("pool_pre_ping", False)
    return create_async_engine(sqlalchemy_url(url), **options)


async def driver_connection(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a SQLAlchemy one, for the hot paths.

    Statements sent here run in the same transaction as the SQLAlchemy connection's (psycopg
    opens it on the first statement; SQLAlchemy's commit or rollback ends it), without
    SQLAlchemy's per-statement overhead, which is most of an append's client-side cost.
    """
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        # Already checked out: reading the attribute does no I/O, so no greenlet hop is needed.
        driver = sync.connection.driver_connection
    else:
        driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    return driver

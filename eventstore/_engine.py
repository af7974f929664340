"""Engine setup: one place that turns a Postgres URL into an async SQLAlchemy engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
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


class AutocommitConnections:
    """A few psycopg connections in autocommit mode, for work that is one statement.

    At most `max_size` are open at once; more callers wait their turn. A single statement
    is atomic on its own, so it needs no BEGIN/COMMIT round trips; and
    taking a connection from this free list costs far less than a checkout from SQLAlchemy's
    pool, which is most of the client-side cost of a small append. Opened on first use;
    `aclose()` closes them. A connection that broke, or is not idle when handed back (say,
    cancelled mid-query), is closed rather than reused.
    """

    def __init__(
        self, url: str | None = None, max_size: int = 8, *, engine: AsyncEngine | None = None
    ) -> None:
        if (url is None) == (engine is None):
            raise ValueError("AutocommitConnections takes a url or an engine (one of them)")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self._url = libpq_url(url) if url is not None else None
        self._engine = engine
        self._max_idle = max_size
        self._slots = asyncio.Semaphore(max_size)  # in use at once; more callers wait
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False

    async def conninfo(self) -> str:
        """The connection string these connections use. With an engine: connect the way it does. Its pool's connections were made with
        whatever it was given (URL, `connect_args`, a `creator`); one of them says how."""
        if self._url is None:
            assert self._engine is not None
            async with self._engine.connect() as conn:
                info = (await driver_connection(conn)).info
                self._url = make_conninfo(info.dsn, password=info.password)
        return self._url

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots, self._checkout() as conn:
            yield conn

    @asynccontextmanager
    async def _checkout(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise RuntimeError("the connections were closed (aclose was called)")
        conn = (
            self._idle.pop()
            if self._idle
            else await psycopg.AsyncConnection.connect(await self.conninfo(), autocommit=True)
        )
        try:
            yield conn
        finally:
            reusable = (
                not self._closed
                and not conn.closed
                and not conn.broken
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                and len(self._idle) < self._max_idle
            )
            if reusable:
                self._idle.append(conn)
            else:
                await conn.close()

    async def aclose(self) -> None:
        """Close the idle connections; ones in use close when handed back. Safe to call twice."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

"""`Database`: the one owner of the connections to one Postgres database.

Four ways in, one place that makes them:

- `connect()` / `begin()`: SQLAlchemy connections from the engine's pool, for transactions
  of several statements that the store, the outbox and handlers join.
- `autocommit()`: a psycopg connection in autocommit mode, for work that is one statement.
  A single statement is atomic on its own, so it needs no BEGIN/COMMIT round trips, and
  taking a connection from this free list costs far less than a checkout from SQLAlchemy's
  pool, which is most of the client-side cost of a small append.
- `session()`: a connection of its own, never pooled, for state that lives as long as the
  session (a session-level advisory lock, LISTEN); closed on exit, so that state goes too.
- `listening(channel, wakeup)`: a background LISTEN that sets an event on every NOTIFY.

Raw connections connect the way the engine does (`conninfo()`): its URL, `connect_args`,
or `creator`, whichever it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore._engine import create_engine, driver_connection
from eventstore._errors import StoreUnavailableError, translate_errors

log = logging.getLogger(__name__)

# NOTIFY channels are passed unquoted to LISTEN: plain lower-case identifiers only.
_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Database:
    """`Database(url)` or `Database(engine=engine)`; `async with` it, or `await db.aclose()`.

    No I/O happens before the first use. `aclose()` closes the autocommit connections, stops
    the listeners, and disposes of the engine only when the database created it: an engine
    passed in is the caller's.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        autocommit_size: int = 8,
        **engine_options: Any,
    ) -> None:
        if (url is None) == (engine is None):
            raise ValueError("Database takes a url or an engine (exactly one of them)")
        if engine is not None and engine_options:
            raise ValueError(
                f"Database: engine options ({', '.join(sorted(engine_options))}) apply only with a url; "
                "give them to the engine you pass instead"
            )
        if autocommit_size < 1:
            raise ValueError(f"Database: autocommit_size must be >= 1, got {autocommit_size}")
        self._engine = engine if engine is not None else create_engine(str(url), **engine_options)
        self._owns_engine = engine is None
        self._conninfo: str | None = None
        self._slots = asyncio.Semaphore(autocommit_size)  # in use at once; more callers wait
        self._max_idle = autocommit_size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._listeners: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def closed(self) -> bool:
        return self._closed

    def connect(self) -> AsyncConnection:
        """`async with db.connect() as conn`: a pooled connection; begin and commit yourself."""
        self._check_open()
        return self._engine.connect()

    def begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """`async with db.begin() as conn`: a transaction, committed on exit, rolled back on error."""
        self._check_open()
        return self._engine.begin()

    async def conninfo(self) -> str:
        """How to open a raw connection the way the engine does. The engine's connections were
        made with whatever it was given (URL, `connect_args`, a `creator`): one of them says how."""
        if self._conninfo is None:
            self._check_open()
            with translate_errors():
                async with self._engine.connect() as conn:
                    info = (await driver_connection(conn)).info
                    self._conninfo = make_conninfo(info.dsn, password=info.password)
        return self._conninfo

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A psycopg connection in autocommit mode, for one statement (or a few independent ones).

        At most `autocommit_size` are in use at once; more callers wait their turn. A
        connection that broke, or is not idle when handed back (say, cancelled mid-query), is
        closed rather than reused. Lost connections raise StoreUnavailableError.
        """
        with translate_errors():
            async with self._slots:
                self._check_open()
                conn = self._idle.pop() if self._idle else await self._open(autocommit=True)
                try:
                    yield conn
                finally:
                    await self._hand_back(conn)

    async def _hand_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
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

    @contextlib.asynccontextmanager
    async def session(
        self, *, application_name: str | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of its own in autocommit mode, closed on exit (never pooled): what it
        holds for the session (advisory locks, LISTEN) ends with it. Driver errors pass as they are."""
        self._check_open()
        conn = await self._open(autocommit=True, application_name=application_name)
        async with conn:
            yield conn

    async def _open(self, **options: Any) -> psycopg.AsyncConnection[Any]:
        given = {k: v for k, v in options.items() if v is not None}
        return await psycopg.AsyncConnection.connect(await self.conninfo(), **given)

    @contextlib.asynccontextmanager
    async def listening(
        self, channel: str, wakeup: asyncio.Event, *, retry_s: float = 1.0
    ) -> AsyncIterator[None]:
        """While inside: `wakeup` is set on every NOTIFY on `channel`, and once each time LISTEN
        is (re)established, since notifications sent while it was down are lost.

        Meant beside polling: a notification only shortens the wait, so one lost while the
        connection was down costs latency, never work. A lost connection is reopened.
        """
        if not _CHANNEL.match(channel):
            raise ValueError(f"LISTEN channel {channel!r}: use a lower-case identifier ([a-z_][a-z0-9_]*)")
        self._check_open()
        task = asyncio.create_task(self._listen(channel, wakeup, retry_s), name=f"listen:{channel}")
        self._listeners.add(task)
        try:
            yield
        finally:
            self._listeners.discard(task)
            await _cancel(task)

    async def _listen(self, channel: str, wakeup: asyncio.Event, retry_s: float) -> None:
        while True:
            try:
                async with self.session() as conn:
                    await conn.execute(f"LISTEN {channel}")
                    wakeup.set()
                    async for _ in conn.notifies():
                        wakeup.set()
            except (psycopg.Error, OSError, StoreUnavailableError) as exc:
                log.warning("LISTEN %s: connection failed (%s); polling meanwhile", channel, exc)
                await asyncio.sleep(retry_s)

    async def aclose(self) -> None:
        """Stop the listeners, close the idle autocommit connections (ones in use close when
        handed back) and dispose of the engine if this database made it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._listeners):
            await _cancel(task)
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the Database was closed (aclose was called); open a new one to go on")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

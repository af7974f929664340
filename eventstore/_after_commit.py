"""Work to do once a transaction commits, and never when it rolls back.

`after_commit(conn, callback)` keeps the callback with the SQLAlchemy connection; it runs
when that connection's transaction commits and is dropped when the transaction, or the
savepoint it was registered in (`conn.begin_nested()`), rolls back. It listens to the
connection's own `commit`, `rollback`, `savepoint`, `rollback_savepoint` and
`release_savepoint` events, so it costs nothing on a connection that never asks for it.

SQLAlchemy's `commit` event comes as COMMIT is sent. Under READ COMMITTED or REPEATABLE READ
(what we use: no deferred constraints, no SERIALIZABLE) a transaction that reaches COMMIT can
only fail there by losing its connection, when the client cannot know the outcome either;
savepoints taken with raw SQL on the driver connection are not seen (register outside them).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class _Waiting:
    """A connection's callbacks, and where each savepoint opened since began among them.

    Savepoints nest strictly (SQLAlchemy closes the inner before the outer), so a stack is
    enough; the events do not name SQLAlchemy's own savepoints when they open. One rolled back
    while the stack is empty was open before the first callback came: it encloses them all."""

    def __init__(self, sync: Connection) -> None:
        self.callbacks: list[Callback] = []
        self.savepoints: list[int] = []
        for name in ("commit", "rollback", "savepoint", "rollback_savepoint", "release_savepoint"):
            event.listen(sync, name, getattr(self, f"_on_{name}"))

    def _on_commit(self, conn: Connection) -> None:
        callbacks, self.callbacks, self.savepoints = self.callbacks, [], []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the transaction is committed whatever a callback does
                log.exception("after-commit callback %r failed", callback)

    def _on_rollback(self, conn: Connection) -> None:
        self.callbacks, self.savepoints = [], []

    def _on_savepoint(self, conn: Connection, name: str | None) -> None:
        self.savepoints.append(len(self.callbacks))

    def _on_rollback_savepoint(self, conn: Connection, name: str, context: Any) -> None:
        del self.callbacks[self.savepoints.pop() if self.savepoints else 0 :]

    def _on_release_savepoint(self, conn: Connection, name: str, context: Any) -> None:
        if self.savepoints:  # what it registered now belongs to the enclosing transaction
            self.savepoints.pop()


_waiting: weakref.WeakKeyDictionary[Connection, _Waiting] = weakref.WeakKeyDictionary()


def after_commit(conn: AsyncConnection, callback: Callback) -> None:
    """Run `callback` (plain, quick, no I/O) once `conn`'s current transaction commits; never
    if it, or the savepoint `conn` is in now, rolls back. A callback that raises is logged."""
    sync = conn.sync_connection
    if sync is None or not conn.in_transaction():
        raise RuntimeError("after_commit needs a connection in a transaction (use it inside `begin()`)")
    waiting = _waiting.get(sync)
    if waiting is None:
        waiting = _waiting[sync] = _Waiting(sync)
    waiting.callbacks.append(callback)

"""The event store's errors, and the one place where driver errors become them.

EventStoreError                 base; `retriable` says whether trying again can help
├── ConcurrencyError            expected version did not match (retriable)
├── StoreUnavailableError       Postgres could not be reached or dropped us (retriable)
├── DuplicateEventError         an event id was appended before
├── EventTypeError              a type is unknown or registered twice
├── EventDecodeError            a stored payload does not fit its model
└── SchemaError                 migrations missing, or data from another cluster
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import exc as sa_exc


class EventStoreError(Exception):
    retriable: bool = False


class ConcurrencyError(EventStoreError):
    retriable = True

    def __init__(self, stream_id: str, expected: object, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        shown = "changed by a concurrent append" if actual is None else str(actual)
        super().__init__(f"stream {stream_id!r}: expected version {expected}, actual {shown}")


class StoreUnavailableError(EventStoreError):
    retriable = True


class DuplicateEventError(EventStoreError):
    pass


class EventTypeError(EventStoreError):
    pass


class EventDecodeError(EventStoreError):
    pass


class SchemaError(EventStoreError):
    pass


def constraint_name(exc: BaseException) -> str | None:
    """The name of the violated constraint, when the driver says."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, psycopg.Error) and orig.diag is not None:
        return orig.diag.constraint_name
    return None


def is_unique_violation(exc: BaseException) -> bool:
    return isinstance(getattr(exc, "orig", exc), psycopg.errors.UniqueViolation)


# SQLSTATEs that say the connection or the server went away, not that the statement was bad:
# class 08 (connection exception) and the shutdown / not-yet-accepting codes of class 57P.
_GONE = ("08", "57P01", "57P02", "57P03", "57P05")


def is_connection_lost(exc: BaseException) -> bool:
    """True when retrying on a new connection can help; False for errors of the statement
    itself (a timeout, a value too large for an index, a constraint), which would repeat."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, psycopg.Error):
        code = orig.sqlstate
        if code is None:  # raised by the client: no server verdict, the link itself failed
            return isinstance(orig, psycopg.OperationalError)
        return code.startswith(_GONE)
    return isinstance(orig, OSError)


# deadlock_detected, serialization_failure, lock_not_available (lock_timeout): two
# transactions collided; the one that gave way can go again.
_CONTENTION = ("40P01", "40001", "55P03")


def is_contention(exc: BaseException) -> bool:
    """True when the statement lost a race with another transaction (a deadlock, a
    serialization failure): nothing is wrong with it, and running it again can pass."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, psycopg.Error) and orig.sqlstate in _CONTENTION


@contextmanager
def translate_errors() -> Iterator[None]:
    """Connection-level failures become StoreUnavailableError; the rest pass unchanged."""
    try:
        yield
    except sa_exc.TimeoutError as exc:  # no connection free in the pool within its timeout
        raise StoreUnavailableError(f"no database connection available: {exc}") from exc
    except (sa_exc.DBAPIError, psycopg.Error, OSError) as exc:
        if is_connection_lost(exc):
            raise StoreUnavailableError(f"Postgres is unavailable: {getattr(exc, 'orig', exc)}") from exc
        raise

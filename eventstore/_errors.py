"""The errors of the event store, and the one classifier of every error the runtime sees.

EventStoreError                 base; `retriable` says whether trying again can help
├── ConcurrencyError            expected version did not match (retriable)
├── StoreUnavailableError       Postgres could not be reached or dropped us (retriable)
│   └── DatabaseUnreachableError    ... when first checked: `service` and `reason` apart
├── DatabaseConfigError         Postgres answered and refused us: password, role, database
├── DuplicateEventError         an event id was appended before
├── EventTypeError              a type is unknown or registered twice
├── EventDecodeError            a stored payload does not fit its model
└── SchemaError                 migrations missing, or data from another cluster
Refusal                         a business "no" (saga's `Refused` is one): never retried

`classify_error(exc)` sorts any exception into one `ErrorKind`:

CONNECTION_LOST  Postgres or the link to it went away (SQLSTATE class 08, server shutdown
                 57P01-57P03/57P05, a client-side failure with no SQLSTATE, a broken socket,
                 no connection free in the pool, `StoreUnavailableError`). Retry on a new
                 connection, once it is back; the work is not to blame.
CONTENTION       the work lost a race with another transaction: deadlock 40P01, serialization
                 failure 40001, lock timeout 55P03, and our `ConcurrencyError`. Run it again;
                 never count it as a failure.
STATEMENT        the statement or its data is bad (SQLSTATE classes 0A, 21, 22, 23, 26, 2F,
                 34, 3D, 3F, 42, 44, P0): running it again does the same.
REFUSAL          a `Refusal` (by class, never by its attributes): a business answer.
FAILURE          anything else.

`is_retriable(exc)`, the one default: an exception's own `retriable` attribute (a bool)
wins; without one, CONNECTION_LOST, CONTENTION and FAILURE are retriable (a FAILURE as many
times as the caller's attempt count allows), STATEMENT and REFUSAL are not.

`connection_refusal(exc)` picks out, among CONNECTION_LOST errors, a server that answered
and refused the connection (no such database, a wrong user or password), for messages.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

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


class DatabaseUnreachableError(StoreUnavailableError):
    """`check_database` could not reach Postgres: `service` names where ("Postgres at
    host:5432/db"), `reason` what the driver said."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} is unreachable: {reason}")
        self.service = service
        self.reason = reason


class DatabaseConfigError(EventStoreError):
    """Postgres answered and refused the connection for good (wrong password, no such role or
    database): a configuration mistake, not an outage."""


class DuplicateEventError(EventStoreError):
    pass


class EventTypeError(EventStoreError):
    pass


class EventDecodeError(EventStoreError):
    pass


class SchemaError(EventStoreError):
    pass


class Refusal(Exception):
    """Base of business refusals ("insufficient credit"): `reason` says why; never retried."""

    retriable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ErrorKind(enum.Enum):
    CONNECTION_LOST = "connection lost"
    CONTENTION = "contention"
    STATEMENT = "statement"
    REFUSAL = "refusal"
    FAILURE = "failure"


# Connection exceptions, and the server shutting down or not accepting connections yet.
_GONE = ("08", "57P01", "57P02", "57P03", "57P05")
# deadlock_detected, serialization_failure, lock_not_available (lock_timeout).
_CONTENTION = ("40P01", "40001", "55P03")
# Classes where the statement or its data is at fault, whoever runs it and whenever.
_STATEMENT = ("0A", "21", "22", "23", "26", "2F", "34", "3D", "3F", "42", "44", "P0")

_KINDS = {
    ErrorKind.CONNECTION_LOST: True,
    ErrorKind.CONTENTION: True,
    ErrorKind.STATEMENT: False,
    ErrorKind.REFUSAL: False,
    ErrorKind.FAILURE: True,
}


def classify_error(exc: BaseException) -> ErrorKind:
    """Which kind of failure `exc` is; see the module docstring."""
    if isinstance(exc, Refusal):
        return ErrorKind.REFUSAL
    if isinstance(exc, StoreUnavailableError | sa_exc.TimeoutError):
        return ErrorKind.CONNECTION_LOST
    if isinstance(exc, ConcurrencyError):
        return ErrorKind.CONTENTION
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return ErrorKind.CONNECTION_LOST
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(orig, psycopg.Error):
        return _classify_driver_error(orig)
    if isinstance(orig, ConnectionError):
        return ErrorKind.CONNECTION_LOST
    return ErrorKind.FAILURE


def _classify_driver_error(exc: psycopg.Error) -> ErrorKind:
    code = exc.sqlstate
    if code is None:  # raised by the client: no server verdict, the link itself failed
        return ErrorKind.CONNECTION_LOST if isinstance(exc, psycopg.OperationalError) else ErrorKind.FAILURE
    if code.startswith(_GONE):
        return ErrorKind.CONNECTION_LOST
    if code in _CONTENTION:
        return ErrorKind.CONTENTION
    if code.startswith(_STATEMENT):
        return ErrorKind.STATEMENT
    return ErrorKind.FAILURE


@dataclass(frozen=True)
class ConnectionRefusal:
    """Postgres answered a connection attempt and said no: `what` is wrong, `reason` is the
    server's (or the client library's) own words."""

    what: Literal["database", "login"]
    reason: str


# libpq reports these with no SQLSTATE: the server's FATAL text (or libpq's) is all there is.
_REFUSALS: tuple[tuple[Literal["database", "login"], re.Pattern[str]], ...] = (
    ("database", re.compile(r'database "[^"]*" does not exist')),
    (
        "login",
        re.compile(
            r'authentication failed|role "[^"]*" does not exist|not permitted to log in|'
            r"no pg_hba\.conf entry|pg_hba\.conf rejects|no password supplied|"
            r"permission denied for database"
        ),
    ),
)


_REFUSED_CLASSES: dict[str, Literal["database", "login"]] = {"28": "login", "3D": "database"}


def connection_refusal(exc: BaseException) -> ConnectionRefusal | None:
    """Whether `exc` is Postgres refusing the connection for good: no such database, a wrong
    user or password. `classify_error` counts these as CONNECTION_LOST (the client sees no
    SQLSTATE), yet waiting cannot help: tell the user what to fix. None for anything else,
    a server that is down or starting up included."""
    while isinstance(exc, StoreUnavailableError) and exc.__cause__ is not None:
        exc = exc.__cause__
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if not isinstance(orig, psycopg.Error):
        return None
    if orig.sqlstate is not None:  # rare on connect, where libpq gives none
        what = _REFUSED_CLASSES.get(orig.sqlstate[:2])
        return None if what is None else ConnectionRefusal(what, str(orig).strip())
    if not isinstance(orig, psycopg.OperationalError):
        return None
    for line in str(orig).splitlines():
        said = line.rpartition("FATAL:")[2] if "FATAL:" in line else line.rpartition("failed: ")[2]
        for what, pattern in _REFUSALS:
            if pattern.search(said):
                return ConnectionRefusal(what, said.strip())
    return None


def is_retriable(exc: BaseException) -> bool:
    """Whether trying again can help: the exception's own `retriable` flag, else its kind's."""
    own = getattr(exc, "retriable", None)
    if isinstance(own, bool):
        return own
    return _KINDS[classify_error(exc)]


def constraint_name(exc: BaseException) -> str | None:
    """The name of the violated constraint, when the driver says."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, psycopg.Error) and orig.diag is not None:
        return orig.diag.constraint_name
    return None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Connection-level failures become StoreUnavailableError; the rest pass unchanged."""
    try:
        yield
    except sa_exc.TimeoutError as exc:  # no connection free in the pool within its timeout
        raise StoreUnavailableError(f"no database connection available: {exc}") from exc
    except (sa_exc.DBAPIError, psycopg.Error, OSError) as exc:
        if classify_error(exc) is ErrorKind.CONNECTION_LOST:
            raise StoreUnavailableError(f"Postgres is unavailable: {getattr(exc, 'orig', exc)}") from exc
        raise

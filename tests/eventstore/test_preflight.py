"""check_database on the real server: an outage, a wrong database and a schema behind are
three different errors; and OutageLog's few lines."""

from __future__ import annotations

import logging
import socket

import psycopg
import pytest
from sqlalchemy.engine import make_url

from eventstore import (
    Database,
    DatabaseConfigError,
    DatabaseUnreachableError,
    OutageLog,
    SchemaError,
    check_database,
    connection_refusal,
    eventstore_migrations,
    is_retriable,
    load_migrations,
)


async def test_a_migrated_database_passes(database: Database) -> None:
    await check_database(database, eventstore_migrations())


async def test_a_missing_database_is_a_configuration_error_not_an_outage(database_url: str) -> None:
    url = make_url(database_url).set(database="no_such_db_here").render_as_string(hide_password=False)
    async with Database(url) as db:
        with pytest.raises(DatabaseConfigError, match='database "no_such_db_here" does not exist') as caught:
            await check_database(db)
    assert not is_retriable(caught.value)
    assert "Postgres at postgresql://" in str(caught.value)


async def test_a_refused_connection_is_an_outage_and_the_password_is_not_shown() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Database(f"postgresql://someone:s3cret@127.0.0.1:{port}/db") as db:
        with pytest.raises(DatabaseUnreachableError) as caught:
            await check_database(db)
    assert is_retriable(caught.value)
    assert caught.value.service == f"Postgres at postgresql://someone:***@127.0.0.1:{port}/db"
    assert "refused" in caught.value.reason.lower()
    assert "s3cret" not in str(caught.value)


async def test_a_schema_behind_names_the_command(database: Database) -> None:
    ahead = [*eventstore_migrations(), *load_migrations("not_applied", "eventstore")]
    with pytest.raises(SchemaError, match="saga db upgrade"):
        await check_database(database, ahead)


@pytest.mark.pure
def test_outage_log_says_it_three_times(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    outage = OutageLog(logging.getLogger("test.outage"), retry_s=2.0)
    for _ in range(5):
        outage.failed("Kafka at k:9092", "refused")
    outage.ended("Postgres at p")  # not the service that is away: nothing ends
    assert outage.active
    outage.failed("Postgres at p", "refused")  # another service away: the first is over
    outage.ended()
    outage.ended()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 4, said
    assert said[0] == "Kafka at k:9092 is unreachable: refused; retrying every 2s"
    assert said[1].startswith("Kafka at k:9092 is reachable again after ")
    assert said[2] == "Postgres at p is unreachable: refused; retrying every 2s"
    assert said[3].startswith("Postgres at p is reachable again after ")
    assert not outage.active


@pytest.mark.pure
@pytest.mark.parametrize(
    ("message", "refusal"),
    [
        (
            'connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: '
            'FATAL:  password authentication failed for user "app"',
            'password authentication failed for user "app"',
        ),
        ('... failed: FATAL:  role "ap" does not exist', 'role "ap" does not exist'),
        ('... failed: FATAL:  database "travl" does not exist', 'database "travl" does not exist'),
        ("... failed: FATAL:  the database system is starting up", None),
        ("... failed: FATAL:  sorry, too many clients already", None),
        ('connection to server at "db", port 5432 failed: Connection refused', None),
        ("failed to resolve host 'db': [Errno -2] Name or service not known", None),
    ],
)
def test_a_refusal_for_good_is_told_from_a_passing_one(message: str, refusal: str | None) -> None:
    """psycopg gives a failed connection no SQLSTATE: what the server said decides."""
    found = connection_refusal(psycopg.OperationalError(message))
    assert (found and found.reason) == refusal

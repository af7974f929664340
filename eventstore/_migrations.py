"""Versioned schema migrations: ordered SQL files per component, applied once each.

A small runner instead of Alembic: each package (eventstore, outbox, saga) ships its own
numbered `.sql` files next to its code, one command applies all of them in order, and the
test suite builds its template database with the same code. Nothing here autogenerates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore._errors import SchemaError, translate_errors

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Any constant works; it only has to be the same for every process that migrates.
_MIGRATION_LOCK = 7_302_115_001

_VERSION_TABLE = text(
    """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        component   text NOT NULL,
        version     integer NOT NULL,
        name        text NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (component, version)
    )
    """
)


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str


def load_migrations(component: str, package: str, folder: str = "_sql") -> list[Migration]:
    """Read `NNNN_name.sql` files from a package folder, checked to be numbered 1, 2, 3..."""
    found = []
    for entry in resources.files(package).joinpath(folder).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(component, int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise SchemaError(
                f"{component}: migration {expected:04d} is missing (found {migration.version:04d})"
            )
    return found


def eventstore_migrations() -> list[Migration]:
    return load_migrations("eventstore", "eventstore")


async def applied_versions(conn: AsyncConnection) -> dict[str, int]:
    exists = (await conn.execute(text("SELECT to_regclass('schema_migrations') IS NOT NULL"))).scalar_one()
    if not exists:
        return {}
    rows = await conn.execute(
        text("SELECT component, max(version) FROM schema_migrations GROUP BY component")
    )
    return {row[0]: row[1] for row in rows}


async def upgrade(engine: AsyncEngine, migrations: list[Migration]) -> list[Migration]:
    """Apply what is not applied yet, all in one transaction. Returns those applied.

    Safe to run from several processes at once: an advisory lock lets one migrate at a time.
    """
    applied: list[Migration] = []
    with translate_errors():
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            await conn.execute(_VERSION_TABLE)
            done = await applied_versions(conn)
            for migration in migrations:
                if migration.version <= done.get(migration.component, 0):
                    continue
                await conn.exec_driver_sql(migration.sql)
                await conn.execute(
                    text("INSERT INTO schema_migrations (component, version, name) VALUES (:c, :v, :n)"),
                    {"c": migration.component, "v": migration.version, "n": migration.name},
                )
                applied.append(migration)
    return applied


async def check_schema(conn: AsyncConnection, migrations: list[Migration]) -> None:
    """Raise SchemaError naming the command to run when the database is behind the code."""
    done = await applied_versions(conn)
    for migration in migrations:
        if migration.version > done.get(migration.component, 0):
            raise SchemaError(
                f"database schema is behind: {migration.component} migration "
                f"{migration.version:04d}_{migration.name} is not applied; run `saga db upgrade`"
            )

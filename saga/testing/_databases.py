"""Databases for tests: a migrated template per schema, and a fresh clone of it per system."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import create_engine, libpq_url, upgrade
from saga import all_migrations

# The user's own tables (and any rows every test starts with), created in the template.
SchemaHook = Callable[[AsyncConnection], Awaitable[None]]


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def admin_execute(server_url: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(libpq_url(server_url), autocommit=True) as conn:
        await conn.execute(sql)


async def create_template(server_url: str, schema: SchemaHook | None) -> str:
    """A database with the product's migrations and the user's schema; returns its name."""
    name = f"saga_tmpl_{uuid.uuid4().hex[:12]}"
    await admin_execute(server_url, f"CREATE DATABASE {name}")
    engine = create_engine(with_database(server_url, name))
    try:
        await upgrade(engine, all_migrations())
        if schema is not None:
            async with engine.begin() as conn:
                await schema(conn)
    except BaseException:
        await engine.dispose()
        await drop_database(server_url, name)
        raise
    await engine.dispose()
    return name


async def clone_database(server_url: str, template: str) -> str:
    """A fresh database cloned from `template`; returns its name."""
    name = f"saga_test_{uuid.uuid4().hex[:12]}"
    await admin_execute(server_url, f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    return name


async def drop_database(server_url: str, name: str) -> None:
    await admin_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

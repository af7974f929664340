"""A scratch database for one benchmark measurement: created, migrated, dropped."""

from __future__ import annotations

import uuid

import psycopg
from sqlalchemy.engine import make_url

from eventstore import Migration, create_engine, libpq_url, upgrade


class ScratchDatabase:
    def __init__(self, server_url: str, migrations: list[Migration]) -> None:
        self.server_url = server_url
        self.migrations = migrations
        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        self.url = make_url(server_url).set(database=self.name).render_as_string(hide_password=False)

    async def __aenter__(self) -> ScratchDatabase:
        async with await psycopg.AsyncConnection.connect(libpq_url(self.server_url), autocommit=True) as conn:
            await conn.execute(f"CREATE DATABASE {self.name}")
        engine = create_engine(self.url)
        await upgrade(engine, self.migrations)
        await engine.dispose()
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with await psycopg.AsyncConnection.connect(libpq_url(self.server_url), autocommit=True) as conn:
            await conn.execute(f"DROP DATABASE {self.name} WITH (FORCE)")

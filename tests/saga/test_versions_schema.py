"""Migration saga 0005 on a database that ran sagas before versions: the rows already in
saga_instances become version 1 with no fingerprint, and a saga whose events predate versions
goes on as version 1."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import Database, upgrade
from saga import all_migrations, fold
from saga._events import SagaStarted


async def test_the_migration_makes_the_rows_before_it_version_1(
    engine: AsyncEngine, database_url: str
) -> None:
    before = [m for m in all_migrations() if not (m.component == "saga" and m.version >= 5)]
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA old"))
    async with Database(database_url, connect_args={"options": "-c search_path=old"}) as old:
        await upgrade(old.engine, before)
        async with old.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO saga_instances (saga_id, saga_type, key, status, step, version, data) "
                    "VALUES ('a', 'Transfer', 'k', 'running', 'hold', 3, '{}'), "
                    "('b', 'Transfer', NULL, 'parked', 'debit', 5, '{}')"
                )
            )
        applied = await upgrade(old.engine, all_migrations())
        assert [(m.component, m.version, m.name) for m in applied] == [("saga", 5, "saga_versions")]
        async with old.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT saga_id, saga_version, fingerprint, parked_version FROM saga_instances ORDER BY 1"
                    )
                )
            ).all()
            assert [tuple(r) for r in rows] == [("a", 1, "", None), ("b", 1, "", None)]
            indexes = (
                await conn.execute(
                    text(
                        "SELECT indexname FROM pg_indexes WHERE schemaname = 'old' AND tablename = 'saga_instances'"
                    )
                )
            ).scalars()
            assert "saga_instances_parked_version" in set(indexes)


def test_a_saga_started_before_versions_is_version_1_with_no_fingerprint() -> None:
    # The event as it was stored before issue 15: no saga_version, no fingerprint.
    started = SagaStarted.model_validate({"saga_type": "Transfer", "key": None, "data": {}})
    state = fold("s", [started])
    assert (state.saga_version, state.fingerprint) == (1, "")

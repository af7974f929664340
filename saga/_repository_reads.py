"""The saga tables' SQL that only reads, for operators and the deploy tools: listing sagas,
their rows, the parked and the not-ended ones, counts. Part of saga._repository (which
re-exports every name here): the owner of the tables' SQL, split by job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

Driver = psycopg.AsyncConnection[Any]

# A parked deadline's reason shows as the saga's last error: it is why the saga stands still.
# A saga with several parked deadlines (a group's members) is still one row: the first parked.
_LIST = (
    "SELECT i.saga_id, i.saga_type, i.saga_version, i.key, i.status, i.step, i.version, "
    "coalesce('parked: ' || d.last_error, i.last_error) AS last_error, i.created_at, i.updated_at "
    "FROM saga_instances i LEFT JOIN LATERAL ("
    "SELECT p.last_error, p.parked_at FROM saga_deadlines p WHERE p.saga_id = i.saga_id AND p.parked_at IS NOT NULL "
    "ORDER BY p.parked_at, p.step LIMIT 1) d ON true "
    "WHERE {where} ORDER BY i.created_at DESC, i.saga_id LIMIT %(limit)s"
)
_ALL_INSTANCES = (
    "SELECT saga_id, saga_type, key, status, step, version, data::text, last_error, "
    "saga_version, fingerprint, parked_version FROM saga_instances"
)
# Sagas parked because a worker lacked their version, of the versions given: (type, version) pairs.
_PARKED_FOR = (
    "SELECT i.saga_id FROM saga_instances i JOIN unnest(%b::text[], %b::int[]) AS v(saga_type, version) "
    "ON i.saga_type = v.saga_type AND i.parked_version = v.version ORDER BY i.updated_at LIMIT %b"
)
# Every saga not ended (completed or compensated): what a deploy must still serve.
_NOT_ENDED = (
    "SELECT saga_id FROM saga_instances WHERE status NOT IN ('completed', 'compensated') "
    "ORDER BY created_at, saga_id"
)
# The sagas of one type on one version that have not ended: what `saga migrate` moves.
_ON_VERSION = (
    "SELECT saga_id, status, step FROM saga_instances WHERE saga_type = %s AND saga_version = %s "
    "AND status NOT IN ('completed', 'compensated') ORDER BY created_at, saga_id LIMIT %s"
)
_COUNT_BY_STATUS = "SELECT status, count(*) FROM saga_instances GROUP BY 1"
_OLDEST_ACTIVE = (
    "SELECT saga_id, saga_type, status, created_at FROM saga_instances "
    "WHERE status IN ('running', 'compensating') ORDER BY created_at LIMIT 1"
)


# --- reads for operators -----------------------------------------------------------------


async def list_instances(
    driver: Driver,
    *,
    saga_type: str | None = None,
    status: str | None = None,
    older_than_s: float | None = None,
    stuck_after_s: float | None = None,
    limit: int = 100,
    key: str | None = None,
) -> list[dict[str, Any]]:
    """Sagas from the read model, newest first. `stuck_after_s`: active and unchanged that long,
    or stopped in compensation_failed / failed / parked."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if saga_type:
        where.append("i.saga_type = %(saga_type)s")
        params["saga_type"] = saga_type
    if status:
        where.append("i.status = %(status)s")
        params["status"] = status
    if key is not None:
        where.append("i.key = %(key)s")
        params["key"] = key
    if older_than_s is not None:
        where.append("i.created_at < now() - make_interval(secs => %(older)s)")
        params["older"] = older_than_s
    if stuck_after_s is not None:
        where.append(
            "(i.status IN ('compensation_failed', 'failed', 'parked') OR d.parked_at IS NOT NULL OR "
            "(i.status IN ('running', 'compensating') AND i.updated_at < now() - make_interval(secs => %(stuck)s)))"
        )
        params["stuck"] = stuck_after_s
    cursor = driver.cursor(row_factory=psycopg.rows.dict_row)
    await cursor.execute(_LIST.format(where=" AND ".join(where)), params)
    return list(await cursor.fetchall())


async def all_instance_rows(driver: Driver) -> list[tuple[Any, ...]]:
    return list(await (await driver.execute(_ALL_INSTANCES)).fetchall())


async def instance_rows(driver: Driver, saga_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    sql = f"{_ALL_INSTANCES} WHERE saga_id = ANY(%b::text[])"
    return list(await (await driver.execute(sql, (list(saga_ids),))).fetchall())


async def parked_for_versions(driver: Driver, versions: Sequence[tuple[str, int]], limit: int) -> list[str]:
    """Sagas parked because a worker lacked their version, of these (saga type, version) pairs."""
    if not versions:
        return []
    types, numbers = [list(c) for c in zip(*versions, strict=True)]
    rows = await (await driver.execute(_PARKED_FOR, (types, numbers, limit))).fetchall()
    return [row[0] for row in rows]


async def not_ended(driver: Driver) -> list[str]:
    """The ids of every saga not completed or compensated, oldest first."""
    return [row[0] for row in await (await driver.execute(_NOT_ENDED)).fetchall()]


async def not_ended_on_version(
    driver: Driver, saga_type: str, saga_version: int, limit: int
) -> list[tuple[str, str, str | None]]:
    """(saga_id, status, step) of the sagas of this type on this version not completed or
    compensated, oldest first."""
    rows = await (await driver.execute(_ON_VERSION, (saga_type, saga_version, limit))).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


async def count_by_status(driver: Driver) -> dict[str, int]:
    return dict(await (await driver.execute(_COUNT_BY_STATUS)).fetchall())


async def oldest_active(driver: Driver) -> dict[str, Any] | None:
    row = await (await driver.execute(_OLDEST_ACTIVE)).fetchone()
    return (
        None if row is None else dict(zip(("saga_id", "saga_type", "status", "created_at"), row, strict=True))
    )


async def database_now(driver: Driver) -> datetime:
    row = await (await driver.execute("SELECT now()")).fetchone()
    assert row is not None
    value: datetime = row[0]
    return value

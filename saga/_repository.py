"""All SQL on the saga tables: `saga_instances` (the read model), `saga_deadlines`, and the
per-saga advisory locks. Nothing else in the package writes SQL on them.

Statements take the psycopg connection under the caller's transaction
(`eventstore.driver_connection`), so that a decision's writes can be pipelined with its
event appends and outbox rows in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from saga._decision import Deadline
from saga._events import DeadlineKind, Phase
from saga._protocol import lock_key

# The reads for operators live in their own module, and are re-exported: one name space for
# all the saga tables' SQL.
from saga._repository_reads import Driver as Driver
from saga._repository_reads import all_instance_rows as all_instance_rows
from saga._repository_reads import count_by_status as count_by_status
from saga._repository_reads import database_now as database_now
from saga._repository_reads import instance_rows as instance_rows
from saga._repository_reads import list_instances as list_instances
from saga._repository_reads import not_ended as not_ended
from saga._repository_reads import not_ended_on_version as not_ended_on_version
from saga._repository_reads import oldest_active as oldest_active
from saga._repository_reads import parked_for_versions as parked_for_versions
from saga._state import SagaState, Status

INSTANCE_COLUMNS = (
    "saga_id",
    "saga_type",
    "key",
    "status",
    "step",
    "version",
    "data",
    "last_error",
    "saga_version",
    "fingerprint",
    "parked_version",
)
ACTIVE = ("running", "compensating")

# The one upsert of saga_instances, for any number of sagas: one row per saga, as columns
# (arrays), so the statement text never changes. A row never goes back to an older version;
# the same version may be written again (by `saga rebuild`, under the saga's lock).
_UPSERT_INSTANCES = """
    INSERT INTO saga_instances (
        saga_id, saga_type, key, status, step, version, data, last_error, saga_version, fingerprint, parked_version
    )
    SELECT * FROM unnest(
        %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::jsonb[], %b::text[],
        %b::int[], %b::text[], %b::int[]
    )
    ON CONFLICT (saga_id) DO UPDATE SET
        saga_type = excluded.saga_type, key = excluded.key, status = excluded.status, step = excluded.step,
        version = excluded.version, data = excluded.data, last_error = excluded.last_error,
        saga_version = excluded.saga_version, fingerprint = excluded.fingerprint,
        parked_version = excluded.parked_version, updated_at = now()
    WHERE saga_instances.version <= excluded.version
"""
_DELETE_INSTANCES = "DELETE FROM saga_instances WHERE saga_id = ANY(%b::text[])"
# A decision's deadlines, for any number of sagas: one row per (saga, step), replacing what that
# step had (a fresh row: the failures and parking of the one it replaces are forgotten).
_SET_DEADLINES = """
    INSERT INTO saga_deadlines (saga_id, saga_type, step, phase, attempt, kind, due_at)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::timestamptz[])
    ON CONFLICT (saga_id, step) DO UPDATE SET
        phase = excluded.phase, attempt = excluded.attempt, kind = excluded.kind,
        due_at = excluded.due_at, failures = 0, last_error = NULL, parked_at = NULL
"""
_CLEAR_STEPS = """
    DELETE FROM saga_deadlines d USING unnest(%b::text[], %b::text[]) AS c(saga_id, step)
    WHERE d.saga_id = c.saga_id AND d.step = c.step
"""
_CLEAR_SAGAS = "DELETE FROM saga_deadlines WHERE saga_id = ANY(%b::text[])"
_MATCHES = "saga_id = %s AND step = %s AND phase = %s AND attempt = %s AND kind = %s"
_DROP_DEADLINE = f"DELETE FROM saga_deadlines WHERE {_MATCHES}"
# `_AT`: the time the table is read at, the orchestrator's clock's (None: the database's now()).
_AT = "coalesce(%s::timestamptz, now())"
_POSTPONE = f"UPDATE saga_deadlines SET due_at = {_AT} + make_interval(secs => %s) WHERE {_MATCHES}"
_STILL_DUE = f"SELECT 1 FROM saga_deadlines WHERE {_MATCHES} AND due_at <= {_AT} AND parked_at IS NULL"
_DUE = (
    "SELECT saga_id, step, phase, attempt, kind, failures, saga_type FROM saga_deadlines "
    f"WHERE due_at <= {_AT} AND parked_at IS NULL ORDER BY due_at LIMIT %s"
)
_COUNT_DUE = f"SELECT count(*) FROM saga_deadlines WHERE due_at <= {_AT} AND parked_at IS NULL"
# A failed firing moves the deadline later (so that it cannot keep the head of the due
# queue from healthy ones), or parks it once it failed `max_failures` times.
_FAILED = f"""
    UPDATE saga_deadlines SET failures = failures + 1, last_error = %s,
        due_at = {_AT} + make_interval(secs => %s),
        parked_at = CASE WHEN failures + 1 >= %s THEN now() END
    WHERE {_MATCHES} RETURNING failures, parked_at IS NOT NULL
"""
# The part of [ended - lasted, ended] that no worker credited yet moves every reply deadline
# that was pending when it began. The row lock on saga_outage_credit orders the workers.
_CREDIT_OUTAGE = """
    WITH credit AS (
        SELECT covered_until FROM saga_outage_credit WHERE id = 1 FOR UPDATE
    ), span AS (
        SELECT greatest(now() - make_interval(secs => %(lasted)s), credit.covered_until) AS since, now() AS until
        FROM credit
    ), moved AS (
        UPDATE saga_deadlines SET due_at = due_at + (span.until - span.since)
        FROM span
        WHERE span.until > span.since AND kind = 'reply' AND parked_at IS NULL AND due_at > span.since
        RETURNING 1
    ), covered AS (
        UPDATE saga_outage_credit SET covered_until = greatest(covered_until, now()) WHERE id = 1
    )
    SELECT count(*), coalesce(extract(epoch FROM (SELECT greatest(until - since, interval '0') FROM span)), 0)
    FROM moved
"""
_DEADLINE_COLUMNS = ("step", "phase", "attempt", "kind", "due_at", "failures", "last_error", "parked_at")
_DEADLINES_OF = (
    f"SELECT {', '.join(_DEADLINE_COLUMNS)} FROM saga_deadlines WHERE saga_id = %s ORDER BY due_at, step"
)

# Every decision on a saga first takes its lock, and takes no other lock before it. One order
# for all lockers (reply handlers, deadline workers, operators, rebuild) means no deadlock
# between a reply and a timeout of the same saga, and no version conflict on the append.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"
# Several sagas: always in the order of the lock keys, so two lockers of overlapping sets
# cannot each hold a lock the other waits for. (A subquery with ORDER BY is not flattened:
# the locks are taken row by row in that order.)
_LOCK_MANY = (
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT DISTINCT hashtext(s) AS k FROM unnest(%b::text[]) AS s ORDER BY k) AS keys"
)
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(%s))"


@dataclass(frozen=True)
class DueDeadline:
    saga_id: str
    step: str
    phase: Phase
    attempt: int
    kind: DeadlineKind
    failures: int = 0
    saga_type: str = ""

    @property
    def match(self) -> tuple[str, str, str, int, str]:
        return (self.saga_id, self.step, self.phase, self.attempt, self.kind)


def instance_row(state: SagaState) -> tuple[Any, ...]:
    """The saga_instances row a state projects to (also what `rebuild --verify` compares)."""
    return (
        state.saga_id,
        state.saga_type,
        state.key,
        state.status,
        state.last_step,
        state.version,
        orjson.dumps(state.data).decode(),
        state.last_error,
        state.saga_version,
        state.fingerprint,
        state.parked.saga_version if state.parked is not None else None,
    )


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


# --- locks -------------------------------------------------------------------------------


async def lock(driver: Driver, saga_ids: Sequence[str]) -> None:
    await driver.execute(_LOCK_MANY, ([lock_key(s) for s in saga_ids],))


async def lock_one(driver: Driver, saga_id: str) -> None:
    await driver.execute(_LOCK, (lock_key(saga_id),))


async def try_lock(driver: Driver, saga_id: str) -> bool:
    row = await (await driver.execute(_TRY_LOCK, (lock_key(saga_id),))).fetchone()
    return bool(row and row[0])


# --- writes of decisions -----------------------------------------------------------------


# A saga stopped here awaits nothing once its `waiting` is empty: no deadline of it can be due.
_STOPPED: frozenset[Status] = frozenset({"failed", "compensation_failed", "parked"})


def ended(state: SagaState) -> bool:
    """The saga awaits nothing more: completed or compensated, or stopped with nothing in flight."""
    return state.terminal or (state.status in _STOPPED and not state.waiting)


@dataclass
class SagaWrites:
    """The saga-table rows that decisions write, gathered to go out in at most four statements
    (fixed texts, one row per array element, whatever the number of sagas).

    A saga that `ended` loses all its deadline rows, whatever its decision listed: the state
    says it awaits nothing, and the rows of every step it ever waited on go in one statement
    (a parked group would otherwise have to name each member in `cleared`). Its decision's
    `deadlines`, if any, are not written for the same reason."""

    instances: list[tuple[Any, ...]]
    deadlines: dict[tuple[str, str], tuple[Any, ...]]
    cleared: list[tuple[str, str]]
    ended: list[str]

    @classmethod
    def empty(cls) -> SagaWrites:
        return cls([], {}, [], [])

    def add(self, state: SagaState, deadlines: Sequence[Deadline], cleared: Sequence[str]) -> None:
        """One saga's decision (once per saga: `Decision.then` merged its decisions already):
        its new row, the deadlines it sets (one per step: a step's new row replaces the old)
        and the steps whose deadline goes (a step in both keeps the new deadline)."""
        saga_id = state.saga_id
        self.instances.append(instance_row(state))
        if ended(state):
            self.ended.append(saga_id)
            return
        setting = {d.step for d in deadlines}
        self.cleared += [(saga_id, step) for step in dict.fromkeys(cleared) if step not in setting]
        for d in deadlines:
            row = (saga_id, state.saga_type, d.step, d.phase, d.attempt, d.kind, d.due_at)
            self.deadlines[(saga_id, d.step)] = row  # one row per step: the upsert takes no twins

    async def execute(self, driver: Driver) -> None:
        """Send the statements (inside the caller's pipeline, if any)."""
        if self.cleared:
            await driver.execute(_CLEAR_STEPS, _columns(self.cleared))
        if self.ended:
            await driver.execute(_CLEAR_SAGAS, (self.ended,))
        if self.deadlines:
            await driver.execute(_SET_DEADLINES, _columns(list(self.deadlines.values())))
        if self.instances:
            await driver.execute(_UPSERT_INSTANCES, _columns(self.instances))


async def replace_instance(driver: Driver, state: SagaState) -> None:
    """Rewrite a saga's row from its state whatever the row held (the caller holds the lock)."""
    await driver.execute(_DELETE_INSTANCES, ([state.saga_id],))
    await driver.execute(_UPSERT_INSTANCES, _columns([instance_row(state)]))


async def delete_instances(driver: Driver, saga_ids: Sequence[str]) -> None:
    await driver.execute(_DELETE_INSTANCES, (list(saga_ids),))


# --- deadlines ---------------------------------------------------------------------------


async def due_deadlines(driver: Driver, limit: int, at: datetime | None = None) -> list[DueDeadline]:
    """Deadlines due at `at` (None: the database's now()), soonest first."""
    rows = await (await driver.execute(_DUE, (at, limit))).fetchall()
    return [DueDeadline(*row) for row in rows]


async def count_due(driver: Driver, at: datetime | None = None) -> int:
    """How many deadlines are due at `at` (None: the database's now()) and not parked."""
    row = await (await driver.execute(_COUNT_DUE, (at,))).fetchone()
    return int(row[0]) if row else 0


async def still_due(driver: Driver, due: DueDeadline, at: datetime | None = None) -> bool:
    return await (await driver.execute(_STILL_DUE, (*due.match, at))).fetchone() is not None


async def postpone_deadline(
    driver: Driver, due: DueDeadline, seconds: float, at: datetime | None = None
) -> None:
    await driver.execute(_POSTPONE, (at, seconds, *due.match))


async def drop_deadline(driver: Driver, due: DueDeadline) -> None:
    await driver.execute(_DROP_DEADLINE, due.match)


async def deadline_failed(
    driver: Driver,
    due: DueDeadline,
    error: str,
    backoff_s: float,
    max_failures: int,
    at: datetime | None = None,
) -> tuple[int, bool]:
    """Count a failed firing; returns (failures so far, parked now)."""
    row = await (
        await driver.execute(_FAILED, (error[:2000], at, backoff_s, max_failures, *due.match))
    ).fetchone()
    return (0, False) if row is None else (int(row[0]), bool(row[1]))


async def credit_outage(driver: Driver, lasted_s: float) -> tuple[int, float]:
    """Move pending reply deadlines later by an outage that just ended (`lasted_s` long, by the
    worker's clock), minus what another worker credited already. Returns (deadlines moved,
    seconds credited)."""
    row = await (await driver.execute(_CREDIT_OUTAGE, {"lasted": lasted_s})).fetchone()
    return (0, 0.0) if row is None else (int(row[0]), float(row[1]))


async def deadline_rows(driver: Driver, saga_id: str) -> list[dict[str, Any]]:
    """A saga's deadline rows (one per step it waits on), soonest first."""
    rows = await (await driver.execute(_DEADLINES_OF, (saga_id,))).fetchall()
    return [dict(zip(_DEADLINE_COLUMNS, row, strict=True)) for row in rows]

"""Issue 15 item 4 on the real Postgres and Kafka: `saga migrate` (run as a subprocess) moves
the running sagas of one version of the Transfer saga to another. A dry run writes nothing;
`--apply` records one `saga.migrated` per saga, and the sagas finish on the new version under
workers that have only it, replies to requests sent before the move included. A data
migration fills in what the new data model needs. A saga parked because a worker lacked its
version goes on once moved, its deferred reply decided.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from sqlalchemy import text

from eventstore import Database, Worker
from outbox import Relay
from saga import App, Migration, Orchestrator, OrchestratorWorker, SagaState, stream_of
from saga._cli_migrate import migration_for
from tests.cli.test_cli import Cli, Result
from tests.helpers import wait_for
from tests.saga.conftest import create_topics
from tests.saga.versions_app import (
    Credited,
    Debited,
    Held,
    TransferData,
    TransferDataV3,
    TransferV2,
    TransferV3,
    add_currency,
    app_v1,
    app_v2,
    app_v2_v3,
)
from tests.saga.versions_run import TransferV3Bare, v2_v3_bare

RUN = "tests.saga.versions_run"
REPLIES: dict[str, tuple[type[BaseModel], str]] = {
    "debit": (Debited, "ledger.debited"),
    "hold": (Held, "risk.held"),
    "risk_hold": (Held, "risk.held"),
    "credit": (Credited, "payee.credited"),
}
SERVICES = ("ledger", "risk", "payee")


@pytest.fixture
def prefix() -> str:
    return f"v{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cli(database_url: str, kafka_bootstrap: str, prefix: str) -> Cli:
    return Cli(database_url, kafka_bootstrap, prefix)


@pytest.fixture
async def on(database: Database, prefix: str) -> AsyncIterator[Any]:
    """`on(app)`: an orchestrator of that app on this test's topics (closed at the end)."""
    made: list[Orchestrator] = []

    def make(app: App) -> Orchestrator:
        made.append(app.with_topic_prefix(prefix).orchestrator(database))
        return made[-1]

    try:
        yield make
    finally:
        for orchestrator in made:
            await orchestrator.aclose()


async def start(orchestrator: Orchestrator, n: int, v3: bool = False) -> str:
    model = TransferDataV3 if v3 else TransferData
    data = model(
        transfer_id=f"t{n}", amount=100 + n, account=f"acc-{n}", **({"currency": "EUR"} if v3 else {})
    )
    saga = orchestrator.sagas["Transfer"]
    async with orchestrator.engine.begin() as conn:
        return await orchestrator.start(conn, saga, data, key=f"t{n}")


async def reply(orchestrator: Orchestrator, saga_id: str, step: str, attempt: int = 1) -> None:
    """The participant's answer to `step` #attempt, handed to the orchestrator in-process."""
    model, _ = REPLIES[step]
    message = model(transfer_id=(await orchestrator.load_raw(saga_id)).data["transfer_id"])
    envelope = orchestrator.outbox.envelope(
        message, saga_id=saga_id, saga_type="Transfer", step=step, phase="action", attempt=attempt
    )
    async with orchestrator.engine.begin() as conn:
        await orchestrator.handle_reply(conn, message, envelope)


async def awaiting(orchestrator: Orchestrator, n: int, step: str) -> str:
    """A transfer answered up to `step`, which it awaits (attempt 1)."""
    saga_id = await start(orchestrator, n)
    order = [s.name for s in orchestrator.sagas["Transfer"].all_steps()]
    for before in order[: order.index(step)]:
        await reply(orchestrator, saga_id, before)
    assert [w.step for w in (await orchestrator.load_raw(saga_id)).waiting] == [step]
    return saga_id


async def events(database: Database, saga_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT type, data::text FROM es_events WHERE stream_id = :s ORDER BY version"),
            {"s": stream_of(saga_id)},
        )
        return [(row[0], orjson.loads(row[1])) for row in rows]


async def event_count(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM es_events"))).scalar_one())


async def instance_version(database: Database, saga_id: str) -> int:
    async with database.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT saga_version FROM saga_instances WHERE saga_id = :s"), {"s": saga_id}
        )
        return int(row.scalar_one())


async def running(database: Database, bootstrap: str, orchestrator: Orchestrator, app: App) -> list[Worker]:
    """The relay, an orchestrator worker and the three participants, started."""
    app = app.with_topic_prefix(orchestrator.topics.prefix)
    await create_topics(
        bootstrap, [*orchestrator.reply_topics(), *(orchestrator.topics.commands(s) for s in SERVICES)]
    )
    workers: list[Worker] = [
        Relay(database, bootstrap, poll_interval_s=0.2),
        OrchestratorWorker(orchestrator, bootstrap, deadline_interval_s=0.1, retry_backoff_s=0.05),
        *(app.participant(database, bootstrap, service, retry_backoff_s=0.05) for service in SERVICES),
    ]
    for worker in workers:
        await worker.start()
    return workers


async def stop(workers: Sequence[Worker]) -> None:
    for worker in reversed(workers):
        await worker.stop()


async def completed(orchestrator: Orchestrator, saga_ids: Sequence[str]) -> list[SagaState]:
    async def all_done() -> bool:
        states = [await orchestrator.load_raw(s) for s in saga_ids]
        return all(state.status == "completed" for state in states)

    await wait_for(all_done, 60, f"sagas {', '.join(saga_ids)} to complete")
    return [await orchestrator.load_raw(s) for s in saga_ids]


def after_migration(history: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    types = [kind for kind, _ in history]
    assert types.count("saga.migrated") == 1, types
    return history[types.index("saga.migrated") + 1 :]


def outcomes(result: Result) -> dict[str, str]:
    """By saga id, from `--json` (exit 1 when one is refused: its output is whole all the same)."""
    assert result.code in (0, 1), result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    return {plan["saga_id"]: plan["outcome"] for plan in orjson.loads(result.stdout)}


async def test_dry_run_writes_nothing_then_apply_moves_v1_sagas_to_v2_where_they_complete(
    cli: Cli, on: Any, database: Database, kafka_bootstrap: str
) -> None:
    v1 = on(app_v1)
    at_hold = [await awaiting(v1, n, "hold") for n in (1, 2)]
    at_debit = await awaiting(v1, 3, "debit")
    done = await awaiting(v1, 4, "credit")
    await reply(v1, done, "credit")
    moving = [*at_hold, at_debit]
    before = await event_count(database)

    dry = await cli("migrate", "Transfer@1", "--to", "2", app=f"{RUN}:v1_v2")
    assert dry.code == 0, dry.describe()
    assert "3 sagas of Transfer@1: 3 would move to Transfer@2; run again with --apply" in dry.stdout, (
        dry.describe()
    )
    assert dry.stdout.count("would move") == 4, dry.describe()  # three rows and the summary
    plans = (await cli("migrate", "Transfer@1", "--to", "2", "--json", app=f"{RUN}:v1_v2")).json()
    assert {p["saga_id"]: (p["outcome"], p["renamed"], p["status"]) for p in plans} == {
        at_hold[0]: ("would move", {"hold": "risk_hold"}, "running"),
        at_hold[1]: ("would move", {"hold": "risk_hold"}, "running"),
        at_debit: ("would move", {}, "running"),
    }
    assert await event_count(database) == before
    assert [await instance_version(database, s) for s in moving] == [1, 1, 1]

    applied = await cli("migrate", "Transfer@1", "--to", "2", "--apply", app=f"{RUN}:v1_v2")
    assert applied.code == 0, applied.describe()
    assert "3 sagas of Transfer@1: 3 moved to Transfer@2" in applied.stdout, applied.describe()
    assert await event_count(database) == before + 3
    v2 = on(app_v2)
    for saga_id in moving:
        history = await events(database, saga_id)
        assert after_migration(history) == []
        migrated = history[-1][1]
        assert (migrated["from_version"], migrated["to_version"]) == (1, 2)
        assert migrated["note"].startswith("saga migrate Transfer@1 --to 2 (hold=risk_hold)")
        state = await v2.load_raw(saga_id)
        assert (state.saga_version, await instance_version(database, saga_id)) == (2, 2)
    for saga_id in at_hold:
        state = await v2.load_raw(saga_id)
        assert ([w.step for w in state.waiting], state.renamed) == (["risk_hold"], {"hold": "risk_hold"})
    assert (await v2.load_raw(done)).saga_version == 1  # ended: not listed, not moved
    again = await cli("migrate", "Transfer@1", "--to", "2", "--apply", app=f"{RUN}:v1_v2")
    assert "no saga of Transfer@1 is running" in again.stdout, again.describe()

    # A reply to a `hold` request sent before the move is taken, as risk_hold's.
    await reply(v2, at_hold[0], "hold")
    state = await v2.load_raw(at_hold[0])
    assert (state.done, [w.step for w in state.waiting]) == (["debit", "risk_hold"], ["credit"])

    # Workers with version 2 only: the commands sent before the move are answered too.
    workers = await running(database, kafka_bootstrap, v2, app_v2)
    try:
        states = await completed(v2, moving)
    finally:
        await stop(workers)
    for state in states:
        assert (state.saga_version, state.done) == (2, ["debit", "risk_hold", "credit"])
        since = after_migration(await events(database, state.saga_id))
        # An ignored reply (the participant's answer to a hold the test answered) names the
        # step its envelope named; every decision names the step of version 2.
        decided = [(kind, data.get("step")) for kind, data in since if kind != "saga.reply_ignored"]
        assert "hold" not in [step for _, step in decided], decided
        assert decided.count(("saga.step_succeeded", "risk_hold")) == 1, decided


@pytest.mark.parametrize("how", ["declared", "--data"])
async def test_a_data_migration_fills_in_the_currency_and_the_sagas_complete_on_v3(
    how: str, cli: Cli, on: Any, database: Database, kafka_bootstrap: str
) -> None:
    v2 = on(app_v2)
    saga_ids = [await awaiting(v2, 1, "risk_hold"), await awaiting(v2, 2, "credit")]
    app, args = (
        ("v2_v3", [])
        if how == "declared"
        else ("v2_v3_bare", ["--data", "tests.saga.versions_app:add_currency"])
    )
    if how == "--data":
        refused = await cli("migrate", "Transfer@2", "--to", "3", "--apply", app=f"{RUN}:{app}")
        assert refused.code == 1, refused.describe()
        assert "2 sagas of Transfer@2: 2 refused" in refused.stdout, refused.describe()
        assert "currency: Field required" in refused.stdout, refused.describe()
        assert [await instance_version(database, s) for s in saga_ids] == [2, 2]

    applied = await cli("migrate", "Transfer@2", "--to", "3", "--apply", *args, app=f"{RUN}:{app}")
    assert applied.code == 0, applied.describe()
    assert "2 sagas of Transfer@2: 2 moved to Transfer@3" in applied.stdout, applied.describe()
    v3_app = v2_v3_bare if how == "--data" else app_v2_v3
    v3 = on(v3_app)
    for saga_id in saga_ids:
        state = await v3.load_raw(saga_id)
        assert (state.saga_version, state.data["currency"]) == (3, "EUR")

    workers = await running(database, kafka_bootstrap, v3, v3_app)
    try:
        states = await completed(v3, saga_ids)
    finally:
        await stop(workers)
    assert [(s.saga_version, s.data["currency"]) for s in states] == [(3, "EUR"), (3, "EUR")]


async def test_a_saga_parked_for_its_missing_version_goes_on_once_migrated(
    cli: Cli, on: Any, database: Database, kafka_bootstrap: str
) -> None:
    v1, v2 = on(app_v1), on(app_v2)
    saga_id = await awaiting(v1, 1, "hold")
    await reply(v2, saga_id, "hold")  # reaches a worker without version 1: parked, the reply kept
    parked = await v2.load_raw(saga_id)
    assert parked.status == "parked"
    assert parked.parked is not None
    assert parked.parked.saga_version == 1
    assert [d.step for d in parked.deferred] == ["hold"]

    applied = await cli("migrate", "Transfer@1", "--to", "2", "--apply", app=f"{RUN}:v2")
    assert applied.code == 0, applied.describe()
    assert "1 saga of Transfer@1: 1 moved to Transfer@2" in applied.stdout, applied.describe()
    state = await v2.load_raw(saga_id)
    assert state.status == "running", state
    assert (state.saga_version, state.done) == (2, ["debit", "risk_hold"])  # the deferred reply, decided
    assert [w.step for w in state.waiting] == ["credit"]

    workers = await running(database, kafka_bootstrap, v2, app_v2)
    try:
        (finished,) = await completed(v2, [saga_id])
    finally:
        await stop(workers)
    assert finished.done == ["debit", "risk_hold", "credit"]


async def test_bad_arguments_are_one_clear_line(cli: Cli, on: Any) -> None:
    await awaiting(on(app_v1), 1, "hold")
    app = f"{RUN}:v1_v2"
    cases = [
        (("migrate", "Transfer", "--to", "2"), "'Transfer' is not a saga and its version like Transfer@1"),
        (("migrate", "Wire@1", "--to", "2"), "no saga named 'Wire' in the app (it has: Transfer)"),
        (("migrate", "Transfer@2", "--to", "2"), "the sagas are on version 2 already"),
        (
            ("migrate", "Transfer@1", "--to", "7"),
            "the app has no version 7 of Transfer (it has: Transfer@1, Transfer@2)",
        ),
        (("migrate", "Transfer@1", "--to", "2", "--map", "hold"), "'hold' is not old_step=new_step"),
        (
            ("migrate", "Transfer@1", "--to", "2", "--data", "nowhere.at_all:f"),
            "--data nowhere.at_all:f: cannot import 'nowhere.at_all'",
        ),
        (
            ("migrate", "Transfer@1", "--to", "2", "--data", "tests.saga.versions_app:nothing"),
            "has no attribute 'nothing'",
        ),
    ]
    for args, fragment in cases:
        result = await cli(*args, app=app)
        assert result.code in (1, 2), result.describe()
        assert fragment in result.stderr, result.describe()
        assert "Traceback" not in result.stderr, result.describe()


async def test_a_refused_saga_does_not_hold_back_the_others(cli: Cli, on: Any, database: Database) -> None:
    v1 = on(app_v1)
    at_hold = await awaiting(v1, 1, "hold")
    at_credit = await awaiting(v1, 2, "credit")
    # Dropping `hold`: refused where it is in flight, and where it took effect (it has a
    # compensation); the saga awaiting debit never named it and moves.
    at_debit = await awaiting(v1, 3, "debit")
    result = await cli("migrate", "Transfer@1", "--to", "2", "--drop", "hold", "--apply", app=f"{RUN}:v1_v2")
    assert result.code == 1, result.describe()
    assert outcomes(
        await cli("migrate", "Transfer@1", "--to", "2", "--drop", "hold", "--json", app=f"{RUN}:v1_v2")
    ) == {
        at_hold: "refused",
        at_credit: "refused",
    }
    assert "3 sagas of Transfer@1: 1 moved to Transfer@2, 2 refused" in result.stdout, result.describe()
    assert "step 'hold' is in flight" in result.stdout, result.describe()
    assert "step 'hold' took effect and has a compensation" in result.stdout, result.describe()
    assert [await instance_version(database, s) for s in (at_hold, at_credit, at_debit)] == [1, 1, 2]


async def test_without_a_declared_migration_the_flags_alone_move_the_sagas(
    cli: Cli, on: Any, database: Database
) -> None:
    # Version 3 of this app declares no migration, and version 1 is not deployed in it.
    saga_id = await awaiting(on(app_v1), 1, "hold")
    app = f"{RUN}:v2_v3_bare"
    bare = await cli(
        "migrate", "Transfer@1", "--to", "3", "--data", "tests.saga.versions_app:add_currency", app=app
    )
    assert bare.code == 1, bare.describe()
    assert "step 'hold' is not in Transfer@3: rename it to one of that version's steps" in bare.stdout, (
        bare.describe()
    )

    args = (
        "--map",
        "hold=risk_hold",
        "--data",
        "tests.saga.versions_app:add_currency",
        "--note",
        "ticket 42",
    )
    moved = await cli("migrate", "Transfer@1", "--to", "3", *args, "--apply", app=app)
    assert moved.code == 0, moved.describe()
    state = await on(v2_v3_bare).load_raw(saga_id)
    assert (state.saga_version, state.data["currency"], state.renamed) == (3, "EUR", {"hold": "risk_hold"})
    assert (await events(database, saga_id))[-1][1]["note"] == "ticket 42"


def test_flags_win_over_the_declared_migration() -> None:
    declared = TransferV3.migrations[1]  # from 1: hold -> risk_hold, add_currency
    assert migration_for(TransferV3, 1, {}, [], None) == declared
    dropped = migration_for(TransferV3, 1, {}, ["hold"], None)
    assert (dict(dropped.renames), list(dropped.dropped), dropped.data) == ({}, ["hold"], add_currency)
    mapped = migration_for(TransferV2, 1, {"hold": "credit", "debit": "debit"}, [], add_currency)
    assert dict(mapped.renames) == {"hold": "credit", "debit": "debit"}
    assert mapped.data is add_currency
    assert migration_for(TransferV3Bare, 2, {}, [], None) == Migration(from_version=2)

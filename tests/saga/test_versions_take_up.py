"""Issue 15 item 5's edges on the real services: `saga ls` and `saga show` name the version, the
kept reply and the migration; a command's timeout is its own version's; two workers take a
parked saga up once; one that cannot be taken up is said once and holds up no other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventstore import Database, NewEvents, driver_connection
from saga import DeadlineDue, fire_due_deadlines, stream_of, take_up_parked
from saga import _repository as repo
from saga._events import InputDeferred
from tests.cli.test_cli import Cli
from tests.helpers import wait_for
from tests.saga.versions_app import (
    Debited,
    Held,
    HoldStep,
    TransferV1,
    TransferV2,
    app_v1,
    app_v1_v2,
    app_v2,
)
from tests.saga.versions_deploy import (
    APP_V2,
    Deployment,
    deployed,
    requested,
    start,
    v1_sagas_awaiting_hold,
)


@pytest.fixture
async def deployment(database: Database, kafka_bootstrap: str) -> AsyncIterator[Deployment]:
    async with deployed(database, kafka_bootstrap) as here:
        yield here


async def test_ls_and_show_name_the_version_the_kept_reply_and_the_migration(
    deployment: Deployment, database_url: str
) -> None:
    here = deployment
    v1, [saga_id] = await v1_sagas_awaiting_hold(here, 1)
    v2 = here.orchestrator(app_v2)
    reply = Held(transfer_id="t")
    envelope = v1.outbox.envelope(
        reply, saga_id=saga_id, saga_type="Transfer", step="hold", phase="action", attempt=1
    )
    async with here.database.engine.begin() as conn:
        await v2.handle_reply(conn, reply, envelope)
    cli = Cli(database_url, here.bootstrap, here.prefix)

    async def shown() -> str:
        result = await cli("show", saga_id, app=APP_V2, columns="400")
        assert result.code == 0, result.describe()
        return result.stdout

    async def listed() -> tuple[str, dict[str, Any]]:
        table = await cli("ls", app=APP_V2, columns="400")
        [row] = (await cli("--json", "ls", app=APP_V2)).json()
        return table.stdout, row

    text_ = await shown()
    assert f"status parked  version 1 (fingerprint {TransferV1.fingerprint()})" in text_
    assert f"kept reply risk.held to hold/action #1 (id {envelope.message_id}) until a worker" in text_
    table, row = await listed()
    assert "Transfer@1 " in table
    assert (row["saga_type"], row["saga_version"], row["status"]) == ("Transfer", 1, "parked")

    # Moved to version 2: the kept reply answers `hold` under its new name, the saga goes on.
    async with here.database.engine.begin() as conn:
        plan = await v2.migrate(conn, saga_id, TransferV2, TransferV2.migrations[0], note="hold is risk_hold")
    assert plan.ok, plan.problems
    state = await v2.load_raw(saga_id)
    assert (state.status, state.saga_version, state.done) == ("running", 2, ["debit", "risk_hold"])
    events = await here.events(v2, saga_id)
    kinds = [t for t, _ in events]
    assert kinds[kinds.index("saga.parked") :] == [
        "saga.parked",
        "saga.input_deferred",
        "saga.migrated",
        "saga.unparked",
        "saga.step_succeeded",
        "saga.step_requested",
    ]
    assert requested(events) == ["debit", "hold", "credit"]  # nothing sent again
    text_ = await shown()
    assert f"status running  version 2 (fingerprint {TransferV2.fingerprint()})" in text_
    assert (
        f"version 1 -> 2 (fingerprint {TransferV1.fingerprint()} -> {TransferV2.fingerprint()}); "
        "renamed hold -> risk_hold; data unchanged; note: hold is risk_hold"
    ) in text_
    table, row = await listed()
    assert "Transfer@2 " in table
    assert (row["saga_version"], row["status"], row["step"]) == (2, "running", "credit")


async def test_an_unpublished_commands_timeout_starts_over_by_the_sagas_own_version(
    deployment: Deployment,
) -> None:
    """No relay: `hold` waits in the outbox, so its timeout starts over when due, although the
    newest version has no `hold` step (the step's timeout is its own version's)."""
    here = deployment
    v1 = here.orchestrator(app_v1)
    [saga_id] = await start(v1, TransferV1, 1)
    reply = Debited(transfer_id="t")
    envelope = v1.outbox.envelope(
        reply, saga_id=saga_id, saga_type="Transfer", step="debit", phase="action", attempt=1
    )
    async with here.database.engine.begin() as conn:
        await v1.handle_reply(conn, reply, envelope)
    await here.execute(
        "UPDATE saga_deadlines SET due_at = now() - interval '1 second' WHERE saga_id = :s", s=saga_id
    )
    both = here.orchestrator(app_v1_v2)
    assert await fire_due_deadlines(both) == 0
    state = await both.load_raw(saga_id)
    assert state.awaiting is not None
    assert (state.status, state.awaiting.step, state.awaiting.attempt) == ("running", "hold", 1)
    assert "saga.step_timed_out" not in [t for t, _ in await here.events(both, saga_id)]
    [(left,)] = await here.sql(
        "SELECT extract(epoch FROM due_at - now()) FROM saga_deadlines WHERE saga_id = :s", s=saga_id
    )
    assert 0 < left <= HoldStep.timeout_s


async def test_two_workers_taking_up_one_parked_saga_take_it_up_once(deployment: Deployment) -> None:
    """Both list it as parked; the second gets its lock after the first took it up: it must not
    resume a saga that runs again (that would send its step once more)."""
    here = deployment
    _, [saga_id] = await v1_sagas_awaiting_hold(here, 1)
    v2 = here.orchestrator(app_v2)
    async with here.database.engine.begin() as conn:
        await v2.decide_many(conn, [(saga_id, DeadlineDue("hold", "action", 1, "reply"), None)])
    first, second = here.orchestrator(app_v1_v2), here.orchestrator(app_v1_v2)
    async with here.database.engine.begin() as conn:
        await repo.lock_one(await driver_connection(conn), saga_id)  # both list it, then wait here
        tasks = [asyncio.create_task(take_up_parked(o)) for o in (first, second)]

        async def both_wait() -> bool:
            rows = await here.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return bool(rows[0][0] == 2)

        await wait_for(both_wait, 30, "both workers to wait for the saga's lock")
    assert sorted(await asyncio.gather(*tasks)) == [0, 1]
    events = [t for t, _ in await here.events(first, saga_id)]
    assert events[events.index("saga.parked") :] == ["saga.parked", "saga.unparked"]
    state = await first.load_raw(saga_id)
    assert state.awaiting is not None
    assert (state.status, state.awaiting.step, state.awaiting.attempt) == ("running", "hold", 1)


async def test_a_saga_that_cannot_be_taken_up_is_said_once_and_does_not_hold_up_the_others(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """Its kept reply no longer fits the reply's model: it stays parked, one error logged, and
    the saga listed after it is taken up all the same."""
    here = deployment
    caplog.set_level(logging.INFO, logger="saga")
    _, [broken, fine] = await v1_sagas_awaiting_hold(here, 2)
    v2 = here.orchestrator(app_v2)
    for saga_id in (broken, fine):
        async with here.database.engine.begin() as conn:
            await v2.decide_many(conn, [(saga_id, DeadlineDue("hold", "action", 1, "reply"), None)])
    bad = InputDeferred(
        kind="reply",
        message_type="risk.held",
        message_id="m-1",
        data={},
        step="hold",
        phase="action",
        attempt=1,
    )
    version = (await v2.load_raw(broken)).version
    async with here.database.engine.begin() as conn:
        await v2.store.append_many([NewEvents(stream_of(broken), [bad], version)], conn=conn)

    both = here.orchestrator(app_v1_v2)
    not_taken: set[str] = set()
    assert await take_up_parked(both, not_taken) == 1
    assert not_taken == {broken}
    assert (await both.load_raw(broken)).status == "parked"
    assert (await both.load_raw(fine)).status == "running"
    assert await take_up_parked(both, not_taken) == 0  # tried again, said no more
    said = [r for r in caplog.records if "stays parked" in r.getMessage()]
    assert [(r.levelno, r.getMessage().split()[1]) for r in said] == [(logging.ERROR, broken)]
    assert "transfer_id" in said[0].getMessage()

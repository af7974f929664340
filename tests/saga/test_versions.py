"""Issue 15 items 2 and 5 on the real Postgres and Kafka, with real workers: versions of the
Transfer saga side by side (each saga finishes on the version it started with, new ones run
the newest), and a worker that lacks a saga's version parks it once, keeps its reply, and a
worker that has the version takes it up by itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from eventstore import Database
from saga import DeadlineDue, fire_due_deadlines
from saga._operations import dead_letter_counts, list_sagas
from saga._parking import absent_reason
from tests.cli.test_cli import Cli
from tests.helpers import wait_for
from tests.saga.versions_app import (
    Held,
    TransferV1,
    TransferV2,
    app_v1_v2,
    app_v2,
)
from tests.saga.versions_deploy import (
    APP_V2,
    SERVICES,
    Deployment,
    deployed,
    requested,
    start,
    v1_sagas_awaiting_hold,
    wait_completed,
)


@pytest.fixture
async def deployment(database: Database, kafka_bootstrap: str) -> AsyncIterator[Deployment]:
    async with deployed(database, kafka_bootstrap) as here:
        yield here


async def test_v1_sagas_finish_on_v1_while_new_ones_run_v2(deployment: Deployment) -> None:
    here = deployment
    _, old = await v1_sagas_awaiting_hold(here, 3)

    # The deploy of both versions side by side: the v1 sagas in flight go on, new ones start on v2.
    both = here.orchestrator(app_v1_v2)
    await here.start(here.relay(), here.orchestrator_worker(both), *here.participants(app_v1_v2, *SERVICES))
    new = await start(both, TransferV2, 3)
    await wait_completed(here, old + new)

    for saga_ids, saga, steps in (
        (old, TransferV1, ["debit", "hold", "credit"]),
        (new, TransferV2, ["debit", "risk_hold", "credit"]),
    ):
        for saga_id in saga_ids:
            events = await here.events(both, saga_id)
            started = events[0][1]
            assert (started["saga_version"], started["fingerprint"]) == (saga.version, saga.fingerprint())
            assert requested(events) == steps
            assert events[-1][0] == "saga.completed"
            assert not [t for t, _ in events if t in ("saga.parked", "saga.reply_ignored")], events
    rows = await here.sql(
        "SELECT saga_id, saga_version, fingerprint FROM saga_instances WHERE saga_id = ANY(:ids)",
        ids=old + new,
    )
    assert sorted(rows) == sorted(
        [(i, 1, TransferV1.fingerprint()) for i in old] + [(i, 2, TransferV2.fingerprint()) for i in new]
    )
    assert set((await dead_letter_counts(here.bootstrap, here.prefix)).values()) == {0}


async def test_a_worker_without_the_version_parks_once_and_one_with_it_takes_the_sagas_up(
    deployment: Deployment, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    here = deployment
    caplog.set_level(logging.INFO, logger="saga")
    v1, saga_ids = await v1_sagas_awaiting_hold(here, 2)
    by_deadline, by_reply = saga_ids

    # Version 1 removed: this worker lacks it. A due deadline parks one saga before any reply.
    v2 = here.orchestrator(app_v2)
    v2_worker = here.orchestrator_worker(v2)
    await here.start(here.relay(), v2_worker)
    await here.execute(
        "UPDATE saga_deadlines SET due_at = now() - interval '1 second' WHERE saga_id = :s", s=by_deadline
    )

    async def parked(saga_id: str) -> bool:
        return (await v2.load_raw(saga_id)).status == "parked"

    await wait_for(lambda: parked(by_deadline), 60, "the saga whose deadline fell due to be parked")
    # The risk participant answers `hold` of both: the replies reach the worker without v1.
    await here.start(*here.participants(app_v2, "risk"))

    async def kept(saga_id: str) -> bool:
        return len((await v2.load_raw(saga_id)).deferred) == 1

    for saga_id in saga_ids:
        await wait_for(lambda saga_id=saga_id: kept(saga_id), 60, f"the hold reply of {saga_id} to be kept")

    reason = absent_reason(v2.versions, await v1.load_raw(by_reply))
    assert "version 1 of Transfer is not deployed on this worker (it has: Transfer@2)" in reason
    for saga_id in saga_ids:
        events = await here.events(v2, saga_id)
        parkings = [e for t, e in events if t == "saga.parked"]
        assert [(p["saga_version"], p["reason"], p["missing"]) for p in parkings] == [(1, reason, [])]
        [deferred] = [e for t, e in events if t == "saga.input_deferred"]
        assert (deferred["kind"], deferred["message_type"], deferred["step"], deferred["attempt"]) == (
            "reply",
            "risk.held",
            "hold",
            1,
        )
        assert not [t for t, _ in events if t == "saga.reply_ignored"]
    causes = {
        saga_id: [e["cause"] for t, e in await here.events(v2, saga_id) if t == "saga.parked"]
        for saga_id in saga_ids
    }
    assert causes == {
        by_deadline: ["reply deadline of hold/action #1"],
        by_reply: ["reply risk.held to hold/action #1"],
    }
    # No deadline left to fire again, no dead letter, one warning a saga, no traceback.
    assert await here.sql("SELECT saga_id FROM saga_deadlines WHERE saga_id = ANY(:ids)", ids=saga_ids) == []
    assert await fire_due_deadlines(v2) == 0
    assert set((await dead_letter_counts(here.bootstrap, here.prefix)).values()) == {0}
    warned = [r.getMessage() for r in caplog.records if "parked on" in r.getMessage()]
    assert sorted(m.split()[1] for m in warned) == sorted(saga_ids), warned
    assert all(reason in m for m in warned)
    assert {r.levelno for r in caplog.records if "parked on" in r.getMessage()} == {logging.WARNING}
    assert not [r for r in caplog.records if r.exc_info], [
        r.getMessage() for r in caplog.records if r.exc_info
    ]

    # Operators see them stuck, with the reason.
    stuck = {r["saga_id"]: r for r in await list_sagas(here.database.engine, stuck_after_s=300)}
    assert {
        i: (stuck[i]["status"], stuck[i]["saga_version"], stuck[i]["last_error"]) for i in saga_ids
    } == dict.fromkeys(saga_ids, ("parked", 1, reason))
    cli = Cli(database_url, here.bootstrap, here.prefix)
    shown = await cli("show", by_reply, app=APP_V2)
    assert shown.code == 0, shown.describe()
    assert f"parked (was running): {reason}" in shown.stdout.replace("\n", " "), shown.describe()

    # Version 1 deployed again beside 2: the new worker takes them up with no new input.
    await here.stop([v2_worker])
    both = here.orchestrator(app_v1_v2)
    await here.start(here.relay(), here.orchestrator_worker(both), *here.participants(app_v1_v2, "payee"))
    await wait_completed(here, saga_ids)
    for saga_id in saga_ids:
        events = await here.events(both, saga_id)
        kinds = [t for t, _ in events]
        assert kinds[kinds.index("saga.parked") :] == [
            "saga.parked",
            "saga.input_deferred",
            "saga.unparked",
            "saga.step_succeeded",
            "saga.step_requested",
            "saga.step_succeeded",
            "saga.completed",
        ]
        assert requested(events) == ["debit", "hold", "credit"]  # hold was not sent again
        assert not [t for t, _ in events if t == "saga.reply_ignored"]
    rows = await here.sql(
        "SELECT saga_version, parked_version, status, last_error FROM saga_instances WHERE saga_id = ANY(:ids)",
        ids=saga_ids,
    )
    assert rows == [(1, None, "completed", None)] * 2  # the park's reason was not the saga's error
    taken = [r.getMessage() for r in caplog.records if "taken up" in r.getMessage()]
    assert sorted(m.split()[1].rstrip(":") for m in taken) == sorted(saga_ids), taken


async def test_a_reply_reaching_a_worker_with_the_version_takes_the_saga_up_first(
    deployment: Deployment,
) -> None:
    here = deployment
    v1, [saga_id] = await v1_sagas_awaiting_hold(here, 1)
    v2 = here.orchestrator(app_v2)
    async with here.database.engine.begin() as conn:
        await v2.decide_many(conn, [(saga_id, DeadlineDue("hold", "action", 1, "reply"), None)])
    assert (await v2.load_raw(saga_id)).status == "parked"

    # The reply comes to a worker that has version 1 before its loop took the saga up.
    reply = Held(transfer_id="t")
    envelope = v1.outbox.envelope(
        reply, saga_id=saga_id, saga_type="Transfer", step="hold", phase="action", attempt=1
    )
    both = here.orchestrator(app_v1_v2)
    async with here.database.engine.begin() as conn:
        await both.handle_reply(conn, reply, envelope)
    events = [t for t, _ in await here.events(both, saga_id)]
    assert events[events.index("saga.parked") :] == [
        "saga.parked",
        "saga.unparked",
        "saga.step_succeeded",
        "saga.step_requested",
    ]
    state = await both.load_raw(saga_id)
    assert (state.status, state.saga_version, state.parked, state.deferred) == ("running", 1, None, [])
    assert state.awaiting is not None
    assert (state.awaiting.step, state.awaiting.attempt) == ("credit", 1)
    assert await here.sql("SELECT step, attempt FROM saga_deadlines WHERE saga_id = :s", s=saga_id) == [
        ("credit", 1)
    ]

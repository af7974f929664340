"""Issue 15 items 2 and 5 on the real Postgres and Kafka, with real workers: versions of the
Transfer saga side by side (each saga finishes on the version it started with, new ones run
the newest), and a worker that lacks a saga's version parks it once, keeps its reply, and a
worker that has the version takes it up by itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text

from eventstore import Database, NewEvents, Worker, driver_connection
from outbox import Relay
from saga import (
    App,
    DeadlineDue,
    Orchestrator,
    OrchestratorWorker,
    Saga,
    fire_due_deadlines,
    stream_of,
    take_up_parked,
)
from saga import _repository as repo
from saga._events import InputDeferred
from saga._operations import dead_letter_counts, list_sagas
from saga._parking import absent_reason
from tests.cli.test_cli import Cli
from tests.helpers import wait_for
from tests.saga.conftest import create_topics
from tests.saga.versions_app import (
    Debited,
    Held,
    HoldStep,
    TransferData,
    TransferV1,
    TransferV2,
    app_v1,
    app_v1_v2,
    app_v2,
)

SERVICES = ("ledger", "risk", "payee")
APP_V2 = "tests.saga.versions_app:app_v2"


@dataclass
class Deployment:
    """Workers of one app version or another, on one test's topics, started and stopped at will."""

    database: Database
    bootstrap: str
    prefix: str
    running: list[Worker] = field(default_factory=list)

    def orchestrator(self, app: App) -> Orchestrator:
        return app.with_topic_prefix(self.prefix).orchestrator(self.database)

    async def start(self, *workers: Worker) -> list[Worker]:
        for worker in workers:
            await worker.start()
            self.running.append(worker)
        return list(workers)

    async def stop(self, workers: Sequence[Worker]) -> None:
        for worker in reversed(workers):
            await worker.stop()
            self.running.remove(worker)

    def relay(self) -> Relay:
        return Relay(self.database, self.bootstrap, poll_interval_s=0.2)

    def orchestrator_worker(self, orchestrator: Orchestrator) -> OrchestratorWorker:
        return OrchestratorWorker(orchestrator, self.bootstrap, deadline_interval_s=0.1, retry_backoff_s=0.05)

    def participants(self, app: App, *services: str) -> list[Worker]:
        app = app.with_topic_prefix(self.prefix)
        return [app.participant(self.database, self.bootstrap, s, retry_backoff_s=0.05) for s in services]

    async def sql(self, query: str, **params: Any) -> list[Any]:
        async with self.database.engine.connect() as conn:
            return list((await conn.execute(text(query), params)).all())

    async def execute(self, statement: str, **params: Any) -> None:
        async with self.database.engine.begin() as conn:
            await conn.execute(text(statement), params)

    async def events(self, orchestrator: Orchestrator, saga_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, e.event.model_dump()) for e in await orchestrator.store.load(stream_of(saga_id))]


@pytest.fixture
async def deployment(database: Database, kafka_bootstrap: str) -> AsyncIterator[Deployment]:
    prefix = f"v{uuid.uuid4().hex[:10]}"
    topics = app_v1.with_topic_prefix(prefix).orchestrator(database).topics
    await create_topics(
        kafka_bootstrap, [topics.replies("Transfer"), *(topics.commands(s) for s in SERVICES)]
    )
    here = Deployment(database, kafka_bootstrap, prefix)
    try:
        yield here
    finally:
        await here.stop(list(here.running))


async def start(orchestrator: Orchestrator, saga: type[Saga[Any]], n: int) -> list[str]:
    data = [
        TransferData(transfer_id=f"t-{uuid.uuid4().hex[:8]}", amount=10 + i, account="acc") for i in range(n)
    ]
    async with orchestrator.engine.begin() as conn:
        return await orchestrator.start_many(conn, saga, data)


async def v1_sagas_awaiting_hold(here: Deployment, n: int) -> tuple[Orchestrator, list[str]]:
    """`n` sagas of version 1 that debited and await `hold`, its command sent; no worker left."""
    v1 = here.orchestrator(app_v1)
    workers = await here.start(
        here.relay(), here.orchestrator_worker(v1), *here.participants(app_v1, "ledger")
    )
    saga_ids = await start(v1, TransferV1, n)

    async def all_await_hold() -> bool:
        rows = await here.sql(
            "SELECT count(*) FROM saga_instances i WHERE saga_id = ANY(:ids) AND step = 'hold' AND status = 'running' "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = i.saga_id)",
            ids=saga_ids,
        )
        return bool(rows[0][0] == n)

    await wait_for(all_await_hold, 60, f"{n} v1 sagas to await hold, its command published")
    await here.stop(workers)
    return v1, saga_ids


async def wait_completed(here: Deployment, saga_ids: list[str]) -> None:
    async def completed() -> bool:
        rows = await here.sql(
            "SELECT count(*) FROM saga_instances WHERE saga_id = ANY(:ids) AND status = 'completed'",
            ids=saga_ids,
        )
        return bool(rows[0][0] == len(saga_ids))

    await wait_for(completed, 60, f"{len(saga_ids)} sagas to complete")


def requested(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e["step"] for t, e in events if t == "saga.step_requested" and e["phase"] == "action"]


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
        after = [t for t, _ in events][[t for t, _ in events].index("saga.parked") :]
        assert after[after.index("saga.unparked") :] == [
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

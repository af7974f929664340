"""The `saga` command line, run as a subprocess against the real Postgres and Kafka.

Sagas are made without any Kafka consumer: the tests start them and answer their commands
in-process through an `Orchestrator` (`drive`), so every state the CLI reports is known
exactly. No relay runs, so the commands stay in the outbox: "messages in flight".
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import libpq_url
from examples.orders.messages import (
    CreditReleased,
    CreditReserved,
    InvoiceIssued,
    OrderShipped,
    PaymentCharged,
    Picked,
    StockReleased,
    StockReserved,
)
from examples.orders.saga import OrderData, OrderSaga
from saga import Orchestrator, SagaState, StepRefused, fire_due_deadlines, fold, stream_of

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.orders.run_app:app"  # the order app on the topics ORDERS_RUN names
CLI_TIMEOUT_S = 120.0
# Stopped for good (terminal), or stopped until an operator acts.
STOPPED = frozenset({"completed", "compensated", "compensation_failed", "failed"})


# --- running the CLI ---------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.describe()
        return orjson.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"saga {' '.join(self.args)} -> exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


@dataclass(frozen=True)
class Cli:
    """`await cli("ls", "--stuck")` runs `python -m saga --app <APP> ls --stuck`."""

    database_url: str
    kafka_bootstrap: str
    topic_prefix: str

    async def __call__(
        self, *args: str, database_url: str | None = None, app: str = APP, columns: str | None = "200"
    ) -> Result:
        """`columns=None`: no COLUMNS in the environment, as in a script's pipe."""
        env = {
            **os.environ,
            "DATABASE_URL": database_url or self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "ORDERS_RUN": self.topic_prefix,
            # Wide enough for rich to print whole saga ids in the tables read here (80 cuts them).
            "COLUMNS": columns or "",
        }
        if columns is None:
            env.pop("COLUMNS")
        env.pop("SAGA_APP", None)
        env.pop("SAGA_TOPIC_PREFIX", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "saga",
            "--app",
            app,
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=CLI_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"saga {' '.join(args)} did not finish in {CLI_TIMEOUT_S}s") from None
        assert proc.returncode is not None
        return Result(("--app", app, *args), proc.returncode, out.decode(), err.decode())


def assert_clean_error(result: Result, *fragments: str) -> None:
    """Exit code 1, one clear message on stderr naming every fragment, no traceback."""
    assert result.code == 1, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    # `rebuild` writes its progress label ("rebuilding") to stderr before the error.
    error = result.stderr[result.stderr.index("Error: ") :] if "Error: " in result.stderr else ""
    assert error, result.describe()
    for fragment in fragments:
        assert fragment in error, result.describe()


def as_json(state: SagaState) -> dict[str, Any]:
    """A state as the CLI prints it in JSON: the fold, and `awaiting` (the first of `waiting`),
    kept for the scripts that read it."""
    awaiting = state.awaiting.model_dump(mode="json") if state.awaiting is not None else None
    return {**state.model_dump(mode="json"), "awaiting": awaiting}


# --- making sagas in-process -------------------------------------------------------------

STEPS = ("reserve_credit", "reserve_stock", "charge_payment")


@dataclass(frozen=True)
class Outcome:
    """What `drive` answers. The default completes the saga.

    refuse: the step whose action is refused (then the saga compensates);
    stuck: every compensation command is refused too, until the saga stops in compensation_failed;
    pause: stop while this step's action awaits its reply (the saga stays running).
    """

    refuse: str | None = None
    stuck: bool = False
    pause: str | None = None

    @property
    def expected_status(self) -> str:
        if self.pause is not None:
            return "running"
        if self.stuck:
            return "compensation_failed"
        return "completed" if self.refuse is None else "compensated"


COMPLETED = Outcome()


def refused_at(k: int, *, stuck: bool = False) -> Outcome:
    """Refused at step k (1-based: 1 reserve_credit, 2 reserve_stock, 3 charge_payment)."""
    return Outcome(refuse=STEPS[k - 1], stuck=stuck)


def running_at(k: int) -> Outcome:
    return Outcome(pause=STEPS[k - 1])


def _reply(state: SagaState, step: str, phase: str, outcome: Outcome) -> BaseModel:
    order_id = state.data["order_id"]
    if phase == "action":
        if step == outcome.refuse:
            return StepRefused(reason=f"{step} refused for {order_id}")
        successes: dict[str, BaseModel] = {
            "reserve_credit": CreditReserved(reservation_id=f"credit-{order_id}"),
            "reserve_stock": StockReserved(reservation_id=f"stock-{order_id}"),
            "charge_payment": PaymentCharged(payment_id=f"pay-{order_id}"),
            "wait_for_picked": Picked(order_id=order_id),  # a signal, not a reply
            "ship_order": OrderShipped(shipment_id=f"ship-{order_id}"),
            "issue_invoice": InvoiceIssued(invoice_id=f"invoice-{order_id}"),
        }
        return successes[step]
    if outcome.stuck:
        return StepRefused(reason=f"cannot undo {step} right now")
    undone: dict[str, BaseModel] = {
        "reserve_credit": CreditReleased(released=True),
        "reserve_stock": StockReleased(released=True),
    }
    return undone[step]


async def _run_retry_now(orchestrator: Orchestrator, saga_id: str) -> None:
    """Make the saga's scheduled retry due at once and let the orchestrator fire it.

    `fire_due_deadlines` fires every due row; reply timeouts are seconds away, so as long as
    no saga sits waiting on a reply meanwhile (stuck sagas are driven first, one at a time),
    the only due row is this one.
    """
    async with orchestrator.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE saga_deadlines SET due_at = now() - interval '1 second' "
                "WHERE saga_id = :s AND kind = 'retry'"
            ),
            {"s": saga_id},
        )
    await fire_due_deadlines(orchestrator)


async def drive(orchestrator: Orchestrator, saga_id: str, outcome: Outcome) -> SagaState:
    """Answer whatever the saga awaits, as `outcome` plans, until it stops (or pauses)."""
    for _ in range(50):
        state = await orchestrator.load_raw(saga_id)
        if state.status in STOPPED:
            return state
        waiting = state.awaiting
        assert waiting is not None, f"saga {saga_id} is {state.status} and awaits nothing"
        if waiting.kind == "retry":
            await _run_retry_now(orchestrator, saga_id)
            continue
        if waiting.phase == "action" and waiting.step == outcome.pause:
            return state
        reply = _reply(state, waiting.step, waiting.phase, outcome)
        if isinstance(reply, Picked):
            envelope = orchestrator.outbox.envelope(
                reply, saga_id=saga_id, saga_type=state.saga_type, phase="signal"
            )
        else:
            envelope = orchestrator.outbox.envelope(
                reply,
                saga_id=saga_id,
                saga_type=state.saga_type,
                step=waiting.step,
                phase=waiting.phase,
                attempt=waiting.attempt,
            )
        async with orchestrator.engine.begin() as conn:
            await orchestrator.handle_reply(conn, reply, envelope)
    raise AssertionError(f"saga {saga_id} did not stop after 50 replies")


async def start_order(orchestrator: Orchestrator, n: int) -> str:
    order_id = f"order-{n:04d}-{uuid.uuid4().hex[:6]}"
    data = OrderData(
        order_id=order_id,
        customer_id=f"c{n % 17}",
        sku="widget",
        quantity=1 + n % 3,
        amount=Decimal(5 + n % 40),
    )
    async with orchestrator.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO orders (order_id, customer_id, sku, quantity, amount) VALUES (:o, :c, :s, :q, :a)"
            ),
            {"o": order_id, "c": data.customer_id, "s": data.sku, "q": data.quantity, "a": data.amount},
        )
        return await orchestrator.start(conn, OrderSaga, data, key=order_id)


@dataclass(frozen=True)
class Seeded:
    saga_id: str
    outcome: Outcome
    state: SagaState


async def seed(orchestrator: Orchestrator, outcomes: Sequence[Outcome], concurrency: int = 8) -> list[Seeded]:
    """Start one saga per outcome and drive it there; returned in the order of `outcomes`.

    Stuck sagas go first, one at a time, before any saga is left waiting (see `_run_retry_now`);
    the rest run `concurrency` at a time (the engine's pool holds 20 connections).
    """
    results: dict[int, Seeded] = {}

    async def one(n: int) -> None:
        saga_id = await start_order(orchestrator, n)
        results[n] = Seeded(saga_id, outcomes[n], await drive(orchestrator, saga_id, outcomes[n]))

    for n, outcome in enumerate(outcomes):
        if outcome.stuck:
            await one(n)
    slots = asyncio.Semaphore(concurrency)

    async def limited(n: int) -> None:
        async with slots:
            await one(n)

    async with asyncio.TaskGroup() as group:
        for n, outcome in enumerate(outcomes):
            if not outcome.stuck:
                group.create_task(limited(n))
    seeded = [results[n] for n in range(len(outcomes))]
    for s in seeded:
        assert s.state.status == s.outcome.expected_status, (s.saga_id, s.outcome, s.state)
    return seeded


def ids(seeded: Sequence[Seeded], status: str) -> set[str]:
    return {s.saga_id for s in seeded if s.state.status == status}


# --- fixtures ----------------------------------------------------------------------------


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


# --- rebuild --verify --------------------------------------------------------------------


def fleet(completed: int, compensated_per_step: int, stuck: int, running_per_step: int) -> list[Outcome]:
    """A mix of outcomes, interleaved so that each batch of sagas has some of every kind."""
    kinds: list[list[Outcome]] = [
        [COMPLETED] * completed,
        [refused_at(1 + n % 3) for n in range(3 * compensated_per_step)],
        [refused_at(2 + n % 2, stuck=True) for n in range(stuck)],
        [running_at(1 + n % 3) for n in range(3 * running_per_step)],
    ]
    total = sum(len(k) for k in kinds)
    # Spread each kind evenly over the whole range by sorting on its relative position.
    placed = sorted(
        ((i / len(kind), k, o) for k, kind in enumerate(kinds) for i, o in enumerate(kind)),
        key=lambda t: (t[0], t[1]),
    )
    outcomes = [o for _, _, o in placed]
    assert len(outcomes) == total
    return outcomes


@pytest.mark.slow
async def test_rebuild_verify_among_hundreds_of_sagas_finds_a_corrupted_row_and_rebuild_repairs_it(
    cli: Cli, orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    """One wrong row among sagas of every status, each stopped at every step it can stop at.
    `rebuild` reads and compares saga by saga (no pages), so a larger fleet takes no other path."""
    outcomes = fleet(completed=150, compensated_per_step=30, stuck=4, running_per_step=2)
    assert len(outcomes) == 250
    seeded = await seed(orchestrator, outcomes)
    counts = Counter(s.state.status for s in seeded)
    assert counts == {"completed": 150, "compensated": 90, "compensation_failed": 4, "running": 6}
    assert await scalar(engine, "SELECT count(*) FROM saga_instances") == 250

    clean = await cli("rebuild", "--verify")
    assert clean.code == 0, clean.describe()
    assert "no differences" in clean.stdout
    assert (await cli("--json", "rebuild", "--verify")).json() == {"differences": []}

    victim = next(s for s in seeded if s.outcome == refused_at(2)).saga_id
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE saga_instances SET status = 'completed' WHERE saga_id = :s"), {"s": victim}
        )

    table = await cli("rebuild", "--verify")
    assert table.code == 1, table.describe()
    assert "1 difference(s)" in table.stdout
    row = next(line for line in table.stdout.splitlines() if victim in line)
    assert "status" in row
    assert "completed" in row
    assert "compensated" in row

    as_json = await cli("--json", "rebuild", "--verify")
    assert as_json.code == 1, as_json.describe()
    assert orjson.loads(as_json.stdout) == {
        "differences": [
            {"saga_id": victim, "column": "status", "live": "completed", "rebuilt": "compensated"}
        ]
    }

    rebuilt = await cli("rebuild")
    assert rebuilt.code == 0, rebuilt.describe()
    assert "rebuilt saga_instances from the event store" in rebuilt.stdout
    assert await scalar(engine, "SELECT status FROM saga_instances WHERE saga_id = :s", s=victim) == (
        "compensated"
    )
    again = await cli("rebuild", "--verify")
    assert again.code == 0, again.describe()
    assert "no differences" in again.stdout


# --- replay ------------------------------------------------------------------------------


async def test_replay_at_a_version_is_the_fold_of_the_events_up_to_it(
    cli: Cli, orchestrator: Orchestrator
) -> None:
    completed, compensated = await seed(orchestrator, [COMPLETED, refused_at(3)])
    saga_id = completed.saga_id
    final = await orchestrator.load_raw(saga_id)
    assert final.status == "completed"

    events = await orchestrator.store.load(stream_of(saga_id), to_version=3)
    at_3 = fold(saga_id, (e.event for e in events))
    replayed = (await cli("--json", "replay", saga_id, "--at", "3")).json()
    assert replayed["version"] == 3
    assert replayed["status"] == at_3.status == "running"
    assert replayed["done"] == at_3.done == ["reserve_credit"]
    assert replayed["data"] == at_3.data
    assert replayed["data"]["credit_reservation"] == f"credit-{final.data['order_id']}"
    assert replayed["data"]["payment_id"] is None
    assert replayed["last_step"] == at_3.last_step
    assert replayed["awaiting"] == (at_3.awaiting and at_3.awaiting.model_dump(mode="json"))
    assert replayed == as_json(at_3)

    # Without --at: the final state; without --json: the same state, printed as JSON.
    assert (await cli("--json", "replay", saga_id)).json() == as_json(final)
    plain = await cli("replay", saga_id, "--at", "3")
    assert plain.code == 0, plain.describe()
    assert json.loads(plain.stdout) == as_json(at_3)

    # A compensated saga, at the version where compensation began, and at its last version
    # (past it is an error: test_item10_replay_past_the_end_names_the_last_version).
    events = await orchestrator.store.load(stream_of(compensated.saga_id))
    began = next(e.version for e in events if e.type == "saga.compensation_started")
    at_began = fold(compensated.saga_id, (e.event for e in events[:began]))
    got = (await cli("--json", "replay", compensated.saga_id, "--at", str(began))).json()
    assert got == as_json(at_began)
    assert got["status"] == "compensating"
    assert got["to_compensate"] == ["reserve_stock", "reserve_credit"]
    assert got["last_error"] == f"charge_payment failed: charge_payment refused for {got['data']['order_id']}"
    last = (await cli("--json", "replay", compensated.saga_id, "--at", str(len(events)))).json()
    assert last == as_json(await orchestrator.load_raw(compensated.saga_id))
    assert last["status"] == "compensated"


# --- show, ls, graph, status -------------------------------------------------------------


async def test_show_ls_graph_and_status_report_what_the_database_holds(
    cli: Cli, orchestrator: Orchestrator, engine: AsyncEngine, topic_prefix: str
) -> None:
    outcomes = [
        refused_at(2, stuck=True),
        refused_at(3, stuck=True),
        *(COMPLETED for _ in range(3)),
        refused_at(1),
        refused_at(2),
        refused_at(3),
        running_at(2),
        running_at(3),
    ]
    seeded = await seed(orchestrator, outcomes)
    waiting = next(s for s in seeded if s.outcome == running_at(2))

    # show: the timeline, the folded state, the commands still in the outbox, the deadline.
    shown = (await cli("--json", "show", waiting.saga_id)).json()
    assert [e["type"] for e in shown["timeline"]] == [
        "saga.started",
        "saga.step_requested",
        "saga.step_succeeded",
        "saga.step_requested",
    ]
    assert [e["version"] for e in shown["timeline"]] == [1, 2, 3, 4]
    assert shown["timeline"][0]["event"]["saga_type"] == "OrderSaga"
    assert shown["timeline"][3]["event"]["step"] == "reserve_stock"
    assert shown["state"] == as_json(waiting.state)
    assert shown["state"]["status"] == "running"
    assert shown["state"]["awaiting"]["step"] == "reserve_stock"
    assert [(m["topic"], m["message_type"], m["step"], m["attempt"]) for m in shown["in_flight"]] == [
        (f"{topic_prefix}.customers.commands", "customers.reserve_credit", "reserve_credit", 1),
        (f"{topic_prefix}.inventory.commands", "inventory.reserve_stock", "reserve_stock", 1),
    ]
    assert [(d["step"], d["phase"], d["kind"]) for d in shown["deadlines"]] == [
        ("reserve_stock", "action", "reply")
    ]

    done = next(s for s in seeded if s.outcome == COMPLETED)
    timeline = (await cli("--json", "show", done.saga_id)).json()["timeline"]
    stored = await orchestrator.store.load(stream_of(done.saga_id))
    assert [e["type"] for e in timeline] == [e.type for e in stored]
    assert timeline[0]["type"] == "saga.started"
    assert timeline[-1]["type"] == "saga.completed"
    plain = await cli("show", done.saga_id)
    assert plain.code == 0, plain.describe()
    assert done.saga_id in plain.stdout
    assert "status completed" in plain.stdout
    assert "saga.completed" in plain.stdout

    # ls
    compensated = (await cli("--json", "ls", "--status", "compensated")).json()
    assert {r["saga_id"] for r in compensated} == ids(seeded, "compensated")
    assert len(compensated) == 3
    assert {r["status"] for r in compensated} == {"compensated"}
    stuck = {r["saga_id"]: r for r in (await cli("--json", "ls", "--stuck")).json()}
    assert ids(seeded, "compensation_failed") <= set(stuck)
    assert len(ids(seeded, "compensation_failed")) == 2
    assert {stuck[i]["last_error"] for i in ids(seeded, "compensation_failed")} == {
        "reserve_credit: cannot undo reserve_credit right now",
        "reserve_stock: cannot undo reserve_stock right now",
    }
    assert not (set(stuck) & (ids(seeded, "completed") | ids(seeded, "compensated")))
    everything = (await cli("--json", "ls")).json()
    assert {r["saga_id"] for r in everything} == {s.saga_id for s in seeded}
    assert len((await cli("--json", "ls", "--type", "OrderSaga", "--limit", "4")).json()) == 4
    assert (await cli("--json", "ls", "--type", "NoSuchSaga")).json() == []
    table = await cli("ls", "--status", "compensated")
    assert table.code == 0, table.describe()
    assert "3 saga(s)" in table.stdout
    for saga_id in ids(seeded, "compensated"):
        assert saga_id in table.stdout

    # graph
    drawn = await cli("graph", "OrderSaga")
    assert drawn.code == 0, drawn.describe()
    assert drawn.stdout.startswith("flowchart TD")
    assert "charge_payment{{" in drawn.stdout
    assert "undo_reserve_credit" in drawn.stdout
    assert "undo_reserve_stock -.-> undo_reserve_credit" in drawn.stdout
    assert "undo_charge_payment" not in drawn.stdout  # the pivot is never undone
    assert (await cli("--json", "graph", "OrderSaga")).json() == {
        "saga_type": "OrderSaga",
        "mermaid": drawn.stdout.rstrip("\n"),
    }

    # status
    report = (await cli("--json", "status")).json()
    async with engine.connect() as conn:
        per_status: dict[str, int] = dict(
            (await conn.execute(text("SELECT status, count(*) FROM saga_instances GROUP BY 1"))).all()
        )
        pending = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
    assert report["sagas"] == per_status == Counter(s.state.status for s in seeded)
    assert report["outbox_pending"] == pending > 0
    assert report["outbox_oldest_age_s"] >= 0
    assert isinstance(report["dead_letters"], dict), report["dead_letters"]
    assert report["dead_letters"] == {}
    assert report["oldest_active"]["saga_id"] in ids(seeded, "running")
    human = await cli("status")
    assert human.code == 0, human.describe()
    assert f"outbox: {pending} pending" in human.stdout


# --- errors and operator actions -----------------------------------------------------------


async def test_an_unknown_saga_id_is_a_clear_error(cli: Cli, orchestrator: Orchestrator) -> None:
    missing = str(uuid.uuid4())
    for args in (
        ("show", missing),
        ("--json", "show", missing),
        ("replay", missing),
        ("replay", missing, "--at", "2"),
        ("resume", missing, "--note", "x"),
    ):
        result = await cli(*args)
        assert_clean_error(result, "no saga with id", missing)
        assert result.stdout == ""


async def test_an_app_path_that_does_not_import_names_the_module(cli: Cli) -> None:
    result = await cli("show", str(uuid.uuid4()), app="nope.mod:app")
    assert_clean_error(result, "nope.mod", "cannot import")
    result = await cli("graph", "OrderSaga", app="examples.orders.app:nothing_here")
    assert_clean_error(result, "module 'examples.orders.app' has no attribute 'nothing_here'")
    result = await cli("graph", "NoSuchSaga")
    assert_clean_error(result, "no saga named 'NoSuchSaga'", "OrderSaga")


async def test_a_database_that_does_not_answer_says_postgres_is_unavailable(cli: Cli) -> None:
    nowhere = "postgresql://x@/db?host=/nonexistent"
    for args in (("ls",), ("show", str(uuid.uuid4())), ("status",), ("rebuild", "--verify")):
        result = await cli(*args, database_url=nowhere)
        assert_clean_error(result, "Postgres is unavailable")


@pytest.fixture
def empty_database_url(database_url: str) -> Iterator[str]:
    """A database with no schema at all, on the same server."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_a_fresh_database_asks_for_saga_db_upgrade(cli: Cli, empty_database_url: str) -> None:
    for args in (("ls",), ("show", str(uuid.uuid4())), ("status",), ("rebuild", "--verify")):
        result = await cli(*args, database_url=empty_database_url)
        assert_clean_error(result, "run `saga db upgrade`")

    upgraded = await cli("db", "upgrade", database_url=empty_database_url)
    assert upgraded.code == 0, upgraded.describe()
    assert "migration(s) applied" in upgraded.stdout
    assert "applied saga 0001_sagas" in upgraded.stdout
    again = await cli("--json", "db", "upgrade", database_url=empty_database_url)
    assert again.json() == {"applied": []}
    assert (await cli("--json", "ls", database_url=empty_database_url)).json() == []


async def test_resume_of_a_compensation_failed_saga_records_the_operator_and_goes_on(
    cli: Cli, orchestrator: Orchestrator
) -> None:
    stuck, done = await seed(orchestrator, [refused_at(2, stuck=True), COMPLETED])
    saga_id = stuck.saga_id
    assert stuck.state.to_compensate == ["reserve_credit"]

    resumed = await cli("resume", saga_id, "--note", "credit service fixed (OPS-7)")
    assert resumed.code == 0, resumed.describe()
    assert resumed.stdout.startswith(f"{saga_id}: compensating")

    shown = (await cli("--json", "show", saga_id)).json()
    types = [e["type"] for e in shown["timeline"]]
    assert "saga.compensation_failed" in types
    operator = [e for e in shown["timeline"] if e["type"] == "saga.operator_resumed"]
    assert [e["event"] for e in operator] == [{"note": "credit service fixed (OPS-7)"}]
    assert types[types.index("saga.operator_resumed") + 1] == "saga.step_requested"
    assert shown["timeline"][-1]["event"] == {
        "step": "reserve_credit",
        "phase": "compensation",
        "attempt": 6,
        "message_id": shown["timeline"][-1]["event"]["message_id"],
        "child_id": None,
    }
    assert shown["state"]["status"] == "compensating"
    assert shown["in_flight"][-1]["message_type"] == "customers.release_credit"
    assert shown["in_flight"][-1]["attempt"] == 6
    plain = await cli("show", saga_id)
    assert "saga.operator_resumed" in plain.stdout

    # The saga goes on with a fresh budget: a success reply now compensates it.
    final = await drive(orchestrator, saga_id, refused_at(2))
    assert final.status == "compensated"
    assert (await cli("--json", "rebuild", "--verify")).json() == {"differences": []}

    # A saga that finished has nothing to resume.
    refused = await cli("resume", done.saga_id, "--note", "why not")
    assert_clean_error(refused, "is completed", "nothing to resume")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "SAGA_EVENT_LOOP",
            "trio",
            "SAGA_EVENT_LOOP: Input should be 'auto', 'asyncio' or 'uvloop' (got 'trio')",
        ),
        ("SAGA_SLOW_BATCH_S", "0", "SAGA_SLOW_BATCH_S: Input should be greater than 0 (got '0')"),
        ("SAGA_INBOX_RETENTION_S", "0", "SAGA_INBOX_RETENTION_S: Input should be greater than 0 (got '0')"),
        ("SAGA_TOPIC_PREFIX", "p" * 300, "SAGA_TOPIC_PREFIX: String should have at most 150 characters"),
    ],
)
def test_a_bad_worker_setting_is_refused_naming_the_variable(
    database_url: str, variable: str, value: str, message: str
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "saga", "relay"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert message in result.stderr


async def test_rebuild_beside_live_traffic_reports_nothing_and_deletes_no_live_row(
    cli: Cli, orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    """Sagas start and move while `rebuild --verify` and `rebuild` run: a saga that changed
    between the tool's reads is no difference, and a saga started meanwhile keeps its row."""
    waiting = [await start_order(orchestrator, n) for n in range(150)]
    started = list(waiting)
    stop = asyncio.Event()

    async def traffic() -> None:
        n = 1000
        while not stop.is_set():
            started.append(await start_order(orchestrator, n))
            if waiting:
                await drive(orchestrator, waiting.pop(), COMPLETED)
            n += 1

    task = asyncio.create_task(traffic())
    try:
        verified = await cli("--json", "rebuild", "--verify")
        rebuilt = await cli("rebuild")
    finally:
        stop.set()
        await task
    assert verified.json() == {"differences": []}
    assert rebuilt.code == 0, rebuilt.describe()
    assert len(started) > 150  # traffic really ran beside both
    assert await scalar(engine, "SELECT count(*) FROM saga_instances") == len(started)
    assert (await cli("--json", "rebuild", "--verify")).json() == {"differences": []}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ls", "--limit", "-1"), "Invalid value for '--limit': -1 is not in the range 1<=x<=100000"),
        (("ls", "--older-than", "99999999999d"), "'99999999999d' is longer than 100 years"),
    ],
)
async def test_out_of_range_options_are_one_clear_line(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = await cli(*args)
    assert result.code == 2, result.describe()
    assert message in result.stderr
    assert "Traceback" not in result.stderr

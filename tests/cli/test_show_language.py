"""`saga show` on the saga language, against the real Postgres: a parallel group's members in
flight, done, failed, compensated and cancelled; a wait with its signal and until when; a
signal kept for a later wait; a child saga from its parent and the parent from its child.

As in test_cli, no consumer runs: the test answers the sagas in-process, so every state the
CLI prints is known exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text

from eventstore import Database
from saga import Orchestrator, Saga, StepRefused
from saga._graph import graph
from tests.cli.language_app import app
from tests.cli.language_sagas import Approved, CrateSaga, Done, PackSaga, ShopData, ShopSaga, Undone
from tests.cli.test_cli import Cli

APP = "tests.cli.language_app:app"


@pytest.fixture
async def language(database: Database) -> AsyncIterator[Orchestrator]:
    orchestrator = app.orchestrator(database)
    try:
        yield orchestrator
    finally:
        await orchestrator.aclose()


async def start(orchestrator: Orchestrator, saga: type[Saga[Any]]) -> str:
    order_id = f"order-{uuid.uuid4().hex[:8]}"
    async with orchestrator.engine.begin() as conn:
        return await orchestrator.start(conn, saga, ShopData(order_id=order_id), key=order_id)


async def answer(orchestrator: Orchestrator, saga_id: str, step: str, reply: BaseModel) -> None:
    """The reply a participant would send to what the saga awaits on `step`."""
    state = await orchestrator.load_raw(saga_id)
    waiting = state.waiting_on(step)
    assert waiting is not None, f"{saga_id} awaits nothing on {step}: {state.waiting}"
    envelope = orchestrator.outbox.envelope(
        reply,
        saga_id=saga_id,
        saga_type=state.saga_type,
        step=step,
        phase=waiting.phase,
        attempt=waiting.attempt,
    )
    async with orchestrator.engine.begin() as conn:
        await orchestrator.handle_reply(conn, reply, envelope)


async def due_at(orchestrator: Orchestrator, saga_id: str, step: str) -> str:
    async with orchestrator.engine.connect() as conn:
        due = (
            await conn.execute(
                text("SELECT due_at FROM saga_deadlines WHERE saga_id = :s AND step = :step"),
                {"s": saga_id, "step": step},
            )
        ).scalar_one()
    assert isinstance(due, datetime)
    return due.isoformat()


def members(shown: dict[str, Any]) -> dict[str, str]:
    (group,) = shown["groups"]
    return {m["step"]: m["status"] for m in group["members"]}


async def test_show_follows_a_group_from_in_flight_to_compensated(cli: Cli, language: Orchestrator) -> None:
    saga_id = await start(language, CrateSaga)

    shown = (await cli("--json", "show", saga_id, app=APP)).json()
    assert shown["groups"] == [
        {
            "group": 1,
            "members": [
                {"step": "pack", "status": "in_flight"},
                {"step": "label", "status": "in_flight"},
                {"step": "wait_for_picked", "status": "in_flight"},
            ],
        }
    ]
    until = await due_at(language, saga_id, "wait_for_picked")
    assert shown["waits"] == [{"step": "wait_for_picked", "signals": ["lang.picked"], "until": until}]
    assert (shown["timers"], shown["kept_signals"], shown["children"], shown["parent"]) == ([], [], [], None)
    human = await cli("show", saga_id, app=APP)
    assert human.code == 0, human.describe()
    assert "group 1: pack in flight, label in flight, wait_for_picked in flight" in human.stdout
    assert f"waiting on wait_for_picked for signal lang.picked, until {until}" in human.stdout

    await answer(language, saga_id, "pack", Done(what="pack"))
    shown = (await cli("--json", "show", saga_id, app=APP)).json()
    assert members(shown) == {"pack": "done", "label": "in_flight", "wait_for_picked": "in_flight"}

    # label refused: pack, which took effect, is undone; the wait stops waiting.
    await answer(language, saga_id, "label", StepRefused(reason="no labels left"))
    shown = (await cli("--json", "show", saga_id, app=APP)).json()
    assert shown["state"]["status"] == "compensating"
    assert members(shown) == {"pack": "compensating", "label": "failed", "wait_for_picked": "cancelled"}
    assert shown["waits"] == []

    await answer(language, saga_id, "pack", Undone(what="pack"))
    shown = (await cli("--json", "show", saga_id, app=APP)).json()
    assert shown["state"]["status"] == "compensated"
    assert members(shown) == {"pack": "compensated", "label": "failed", "wait_for_picked": "cancelled"}
    human = await cli("show", saga_id, app=APP)
    assert "group 1: pack compensated, label failed, wait_for_picked cancelled" in human.stdout


async def test_show_names_a_kept_signal_the_child_saga_and_from_the_child_its_parent(
    cli: Cli, language: Orchestrator
) -> None:
    parent_id = await start(language, PackSaga)
    parent = await language.load_raw(parent_id)
    child_id = parent.children["pay"]

    # Approved comes before the saga reaches its wait for it: kept. (Delivered as the reply
    # consumer would deliver what `App.signal` put in the outbox.)
    signal = Approved(by="floor manager")
    envelope = language.outbox.envelope(signal, saga_id=parent_id, saga_type="PackSaga", phase="signal")
    async with language.engine.begin() as conn:
        await language.handle_reply(conn, signal, envelope)

    shown = (await cli("--json", "show", parent_id, app=APP)).json()
    assert members(shown) == {"pack": "in_flight", "pay": "in_flight", "wait_for_picked": "in_flight"}
    assert shown["children"] == [
        {"step": "pay", "saga_id": child_id, "saga_type": "PaymentSaga", "status": "running"}
    ]
    (kept,) = shown["kept_signals"]
    assert (kept["message_type"], kept["data"]) == ("lang.approved", {"by": "floor manager"})
    human = await cli("show", parent_id, app=APP)
    assert f"child saga of step pay: PaymentSaga {child_id} (running)" in human.stdout
    assert f"kept signal lang.approved (id {kept['message_id']}) for a later wait" in human.stdout

    shown = (await cli("--json", "show", child_id, app=APP)).json()
    assert shown["parent"] == {
        "saga_id": parent_id,
        "saga_type": "PackSaga",
        "step": "pay",
        "phase": "action",
        "attempt": 1,
    }
    assert shown["groups"] == []  # the child's own saga has none
    human = await cli("show", child_id, app=APP)
    assert f"parent: PackSaga {parent_id}, its step pay (action, attempt 1)" in human.stdout


async def test_saga_graph_prints_the_language_drawing(cli: Cli) -> None:
    drawn = await cli("graph", "ShopSaga", app=APP)
    assert drawn.code == 0, drawn.describe()
    assert drawn.stdout.rstrip("\n") == graph(ShopSaga)
    assert (await cli("--json", "graph", "ShopSaga", app=APP)).json() == {
        "saga_type": "ShopSaga",
        "mermaid": graph(ShopSaga),
    }

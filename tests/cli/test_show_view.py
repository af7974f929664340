"""What `saga show` builds from a saga's definition, state and timeline (saga._show), for what
the CLI tests on the real services do not reach: timers, a wait without a timeout, a child
whose row is missing, a saga whose type the app lacks. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from saga import SagaState
from saga._events import SagaStarted, StepRequested, TimerSet
from saga._show import Read, language_view
from saga._state import apply
from tests.cli.language_sagas import PackSaga, ShopSaga

pytestmark = pytest.mark.pure

AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def history(*events: BaseModel) -> tuple[SagaState, list[dict[str, Any]]]:
    """The state and the timeline (as `saga show` holds it) of these events."""
    state = SagaState(saga_id="s-1")
    timeline = []
    for version, event in enumerate(events, start=1):
        state = apply(state, event)
        timeline.append(
            {"version": version, "type": TYPES[type(event)], "event": event.model_dump(mode="json")}
        )
    return state, timeline


TYPES = {SagaStarted: "saga.started", StepRequested: "saga.step_requested", TimerSet: "saga.timer_set"}


def test_a_timer_in_a_group_says_until_when_and_a_wait_without_timeout_says_none() -> None:
    state, timeline = history(
        SagaStarted(saga_type="ShopSaga", key=None, data={"order_id": "o1"}),
        StepRequested(step="ship", phase="action", attempt=1, message_id="m1"),
        StepRequested(step="invoice", phase="action", attempt=1, message_id="m2"),
        TimerSet(step="delay_5s", attempt=1, due_at=AT),
    )
    view = language_view(ShopSaga, state, timeline, Read())
    assert view["timers"] == [{"step": "delay_5s", "until": AT.isoformat()}]
    assert view["groups"][1] == {
        "group": 2,
        "members": [
            {"step": "ship", "status": "in_flight"},
            {"step": "invoice", "status": "in_flight"},
            {"step": "delay_5s", "status": "in_flight"},
        ],
    }
    assert [m["status"] for m in view["groups"][0]["members"]] == ["not_started"] * 4

    state, timeline = history(
        SagaStarted(saga_type="PackSaga", key=None, data={"order_id": "o1"}),
        StepRequested(step="wait_for_approved", phase="action", attempt=1),
    )
    view = language_view(PackSaga, state, timeline, Read())
    assert view["waits"] == [{"step": "wait_for_approved", "signals": ["Approved"], "until": None}]


def test_a_child_without_a_row_and_a_saga_the_app_does_not_know() -> None:
    state, timeline = history(
        SagaStarted(saga_type="PackSaga", key=None, data={"order_id": "o1"}),
        StepRequested(step="pay", phase="action", attempt=1, child_id="c-1"),
        StepRequested(step="wait_for_picked", phase="action", attempt=1),
    )
    view = language_view(PackSaga, state, timeline, Read())
    assert view["children"] == [{"step": "pay", "saga_id": "c-1", "saga_type": "PaymentSaga", "status": None}]
    read = Read(
        deadlines=[{"step": "wait_for_picked", "due_at": AT}], signal_name=lambda m: f"x.{m.__name__}"
    )
    assert language_view(PackSaga, state, timeline, read)["waits"] == [
        {"step": "wait_for_picked", "signals": ["x.Picked"], "until": AT.isoformat()}
    ]
    unknown = language_view(
        None, state, timeline, Read(children={"c-1": {"saga_type": "P", "status": "completed"}})
    )
    assert (unknown["groups"], unknown["waits"]) == ([], [])
    assert unknown["children"] == [{"step": "pay", "saga_id": "c-1", "saga_type": "P", "status": "completed"}]

"""What a chaos run found, read from the run's database after every process stopped.

Every count is over the orders the harness placed (`o00000`, ...), never over the records it
made up itself (poison, commands for `chaos-none`).

- `stuck`: placed orders whose saga is not `completed` or `compensated` (still running or
  compensating, or stopped in `failed` / `compensation_failed` for an operator).
- `lost`: placed orders with any of: no row in `orders`; no `saga.started` event in the saga's
  stream (`saga:<saga_id_for("OrderSaga", order_id)>`) or no `saga_instances` row; a
  `completed` saga missing one of its effects (a payment, the order approved, a held credit
  reservation, a held stock reservation, a shipment, an invoice).
- `applied_twice`: extra rows in `handled_commands` for one (service, command, order,
  attempt), plus extra outcome events in one saga's stream for one (step, phase, attempt)
  (`saga.step_succeeded`, `saga.step_failed`, `saga.step_compensated`).
- `timeouts_due_to_outage`: `saga.step_timed_out` events (each one; a retried pivot can time
  out more than once), and the wait for the warehouse's Picked signal failing (it fails only
  by its timeout), for which all of these hold:
    1. the order is not one the plan made slow on purpose (the `slow` SKU, answered after 6 s
       against a 5 s timeout) or never picked on purpose (the `lost` SKU, whose wait for the
       warehouse's signal times out): those timeouts are the design's;
    2. its window W - from the `recorded_at` of the step's `saga.step_requested` with the same
       step, phase and attempt (the first, if sent again) to the `recorded_at` of the timeout -
       overlaps the window of an injected fault on our own side: every fault except a SIGKILL
       of participants only. A fault's window runs from its injection to the moment the
       harness saw it over (server answering again, process started again, records produced)
       plus `SETTLE_S` (a consumer group's 6 s session timeout and a rejoin);
    3. the step's participant was not SIGKILLed by a fault whose window (same rule) overlaps
       W: a participant that was really down may fairly be charged its silence.
  Timeouts of a healthy participant (1 and 3 hold) with no fault of our side overlapping are
  shown apart as `timeouts_unexplained` (overload, say), and all timeouts as `timeouts`; the
  table also counts those of slow or lost orders (1 fails) and of killed participants (3 fails).
- the read model equals the events: `saga rebuild --verify` finds no difference.
- no process died on its own: no exit the scheduler did not cause, and every SIGTERM (the
  fault's and the final one) answered with exit code 0.
- `invariants_ok`: `examples/orders/invariants.py` all hold, the read model equals the
  events, and no process died on its own or stopped uncleanly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chaos.faults import Injected
from examples.orders.saga import OrderData, OrderSaga, WaitForPicked
from examples.orders.shop import LOST_SKUS
from saga import RemoteStep, saga_id_for, stream_of

SETTLE_S = 10.0
TERMINAL = ("completed", "compensated")

_TIMEOUTS = f"""
SELECT t.stream_id, t.data->>'step', t.data->>'phase', t.data->>'attempt',
       min(r.recorded_at), t.recorded_at
FROM es_events t
JOIN es_events r ON r.stream_id = t.stream_id AND r.type = 'saga.step_requested'
    AND r.data->>'step' = t.data->>'step' AND r.data->>'phase' = t.data->>'phase'
    AND r.data->>'attempt' = t.data->>'attempt'
WHERE t.type = 'saga.step_timed_out' OR (t.type = 'saga.step_failed' AND t.data->>'step' = '{WaitForPicked.name}')
GROUP BY t.position, t.stream_id, t.data, t.recorded_at
"""
_TWICE_HANDLED = """
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM handled_commands GROUP BY service, command, order_id, attempt
) c WHERE n > 1
"""
_TWICE_OUTCOMES = """
SELECT count(*) - count(DISTINCT (stream_id, type, coalesce(data->>'step', ''),
                                  coalesce(data->>'phase', ''), coalesce(data->>'attempt', '')))
FROM es_events WHERE type IN ('saga.step_succeeded', 'saga.step_failed', 'saga.step_compensated')
"""


@dataclass(frozen=True)
class Timeout:
    order_id: str
    step: str
    phase: str
    attempt: int
    requested_at: float  # Unix time
    timed_out_at: float


@dataclass
class Outcome:
    statuses: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)  # order -> its status and last error
    lost: dict[str, str] = field(default_factory=dict)  # order -> why
    applied_twice: int = 0
    timeouts: list[Timeout] = field(default_factory=list)
    due_to_outage: list[tuple[Timeout, list[str]]] = field(default_factory=list)  # with the faults' kinds
    unexplained: list[Timeout] = field(default_factory=list)
    of_slow_orders: int = 0  # the design's own timeouts (slow or lost orders)
    of_killed_participants: int = 0  # charged to a participant that was really down
    outbox_left: int = 0
    outbox_dead: int = 0


async def _rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


async def _scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def outcome(engine: AsyncEngine, orders: Sequence[OrderData], faults: Sequence[Injected]) -> Outcome:
    found = Outcome()
    rows = await _rows(engine, "SELECT key, status, step, last_error FROM saga_instances")
    status: dict[str, str] = {key: s for key, s, _, _ in rows}
    for s in status.values():
        found.statuses[s] = found.statuses.get(s, 0) + 1
    placed = {o.order_id for o in orders}
    found.stuck = {
        key: f"{s} at {step}: {error or 'no error recorded'}"
        for key, s, step, error in rows
        if key in placed and s not in TERMINAL
    }
    await _find_lost(engine, orders, status, found.lost)
    found.applied_twice = int(await _scalar(engine, _TWICE_HANDLED)) + int(
        await _scalar(engine, _TWICE_OUTCOMES)
    )
    stream_order = {stream_of(saga_id_for(OrderSaga.name, o.order_id)): o.order_id for o in orders}
    for stream, step, phase, attempt, requested, timed_out in await _rows(engine, _TIMEOUTS):
        if stream in stream_order:
            found.timeouts.append(
                Timeout(stream_order[stream], step, phase, int(attempt), _unix(requested), _unix(timed_out))
            )
    slow = {o.order_id for o in orders if o.sku == "slow" or o.sku in LOST_SKUS}
    _classify_timeouts(found, slow, faults)
    found.outbox_left = int(await _scalar(engine, "SELECT count(*) FROM outbox"))
    found.outbox_dead = int(await _scalar(engine, "SELECT count(*) FROM outbox_dead"))
    return found


async def _find_lost(
    engine: AsyncEngine, orders: Sequence[OrderData], status: Mapping[str, str], lost: dict[str, str]
) -> None:
    placed = {r[0]: r[1] for r in await _rows(engine, "SELECT order_id, status FROM orders")}
    started = {
        r[0] for r in await _rows(engine, "SELECT stream_id FROM es_events WHERE type = 'saga.started'")
    }
    paid = {r[0] for r in await _rows(engine, "SELECT order_id FROM payments")}
    credit = {
        r[0] for r in await _rows(engine, "SELECT order_id FROM credit_reservations WHERE NOT released")
    }
    stock = {r[0] for r in await _rows(engine, "SELECT order_id FROM stock_reservations WHERE NOT released")}
    shipped = {r[0] for r in await _rows(engine, "SELECT order_id FROM shipments")}
    invoiced = {r[0] for r in await _rows(engine, "SELECT order_id FROM invoices")}
    for o in orders:
        oid = o.order_id
        if oid not in placed:
            lost[oid] = "no order row"
        elif stream_of(saga_id_for(OrderSaga.name, oid)) not in started:
            lost[oid] = "no saga.started event"
        elif oid not in status:
            lost[oid] = "no saga_instances row"
        elif status[oid] == "completed":
            missing = [
                name
                for name, holds in (
                    ("payment", oid in paid),
                    ("approval", placed[oid] == "approved"),
                    ("credit reservation", oid in credit),
                    ("stock reservation", oid in stock),
                    ("shipment", oid in shipped),
                    ("invoice", oid in invoiced),
                )
                if not holds
            ]
            if missing:
                lost[oid] = "completed without " + ", ".join(missing)


def participant_of_step(step: str) -> str | None:
    for s in OrderSaga.all_steps():
        if s.name == step:
            return s.participant if issubclass(s, RemoteStep) else None
    return None


def _overlaps(t: Timeout, f: Injected) -> bool:
    return t.requested_at <= f.until + SETTLE_S and f.since <= t.timed_out_at


def _classify_timeouts(found: Outcome, slow: set[str], faults: Sequence[Injected]) -> None:
    for t in found.timeouts:
        if t.order_id in slow:
            found.of_slow_orders += 1
            continue
        participant = participant_of_step(t.step)
        overlapping = [f for f in faults if _overlaps(t, f)]
        if any(f.kind.startswith("kill-") and participant in f.roles for f in overlapping):
            found.of_killed_participants += 1
            continue
        ours = [f for f in overlapping if not f.participant_kill]
        if ours:
            found.due_to_outage.append((t, sorted({f.kind for f in ours})))
        else:
            found.unexplained.append(t)


def _unix(value: datetime) -> float:
    return value.timestamp()

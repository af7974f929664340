"""What a run does, fixed by its seed: the orders it places and the faults it injects when."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from chaos.processes import ROLES
from examples.orders.demo import spread
from examples.orders.saga import OrderData

CREDIT = Decimal(400)
STOCK = {"widget": 10_000_000, "scarce": 0, "slow": 10_000, "lost": 10_000}

# Every fault kind, and how often a full run injects it.
DEFAULT_COUNTS: dict[str, int] = {
    **{f"kill-{role}": 2 for role in ROLES},
    "kill-several": 2,
    "pg-fast": 1,
    "pg-immediate": 1,
    "kafka-term": 1,
    "kafka-kill": 1,
    "term-all-pg-down": 1,
    "duplicate": 2,
    "replay": 2,
    "poison": 2,
    "bad-reply-topic": 1,
}
FAULT_KINDS = tuple(DEFAULT_COUNTS)


@dataclass(frozen=True)
class PlannedFault:
    at: float  # seconds after the first order
    kind: str
    roles: tuple[str, ...] = ()  # the processes a kill takes down
    down_s: float = 0.0  # how long a killed process or a stopped server stays down
    seed: int = 0  # for the choices a record fault makes


def parse_faults(text: str) -> dict[str, int]:
    """`all`, or a comma-separated list of kinds, each optionally `*N`: `kill-relay*3,pg-fast`."""
    if text.strip() == "all":
        return dict(DEFAULT_COUNTS)
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, times = item.partition("*")
        if kind not in DEFAULT_COUNTS:
            raise ValueError(f"unknown fault {kind!r}; the kinds are: all, {', '.join(FAULT_KINDS)}")
        if times and not (times.isdigit() and int(times) >= 1):
            raise ValueError(f"{item!r}: the count after '*' must be a whole number >= 1")
        counts[kind] = counts.get(kind, 0) + (int(times) if times else DEFAULT_COUNTS[kind])
    return counts


def plan_faults(
    counts: dict[str, int], duration_s: float, outage_s: float, rng: random.Random
) -> list[PlannedFault]:
    """The faults in a seeded order, spread over 8%..85% of the duration with some jitter."""
    kinds = [kind for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    start, end = 0.08 * duration_s, 0.85 * duration_s
    gap = (end - start) / max(len(kinds), 1)
    planned = []
    for i, kind in enumerate(kinds):
        at = start + gap * i + rng.uniform(0, gap * 0.5)
        roles: tuple[str, ...] = ()
        down_s = 0.0
        if kind == "kill-several":
            roles = tuple(sorted(rng.sample(ROLES, rng.randint(2, 4))))
            down_s = rng.uniform(0, 2)
        elif kind.startswith("kill-"):
            roles = (kind.removeprefix("kill-"),)
            down_s = rng.uniform(0, 2)
        elif kind.startswith(("pg-", "kafka-", "term-all")):
            down_s = rng.uniform(outage_s / 2, outage_s)
        planned.append(PlannedFault(round(at, 2), kind, roles, round(down_s, 2), rng.randrange(2**31)))
    return planned


def customers_for(orders: int) -> int:
    """Enough customers that most orders fit their credit, and some do not."""
    return max(50, orders // 8)


def plan_orders(orders: int, slow: int, rng: random.Random, lost: int = 0) -> list[OrderData]:
    """Mostly good orders; some refused by payments, some out of stock, `slow` of them answered
    late by the warehouse on purpose, `lost` of them never picked (the timeouts of both are the
    design's, not an outage's). The warehouse picks the others (examples/orders/shop.py)."""
    customers = customers_for(orders)
    slow_at, lost_at = spread(orders, slow), spread(orders, lost, offset=1)
    planned = []
    for n in range(orders):
        roll = rng.random()
        customer = "declined" if roll < 0.04 else f"c{rng.randrange(customers)}"
        special = "slow" if n in slow_at else "lost" if n in lost_at else None
        sku = special or ("scarce" if 0.04 <= roll < 0.08 else "widget")
        planned.append(
            OrderData(
                order_id=f"o{n:05d}",
                customer_id=customer,
                sku=sku,
                quantity=rng.randint(1, 3),
                amount=Decimal(rng.randint(5, 60)),
            )
        )
    return planned

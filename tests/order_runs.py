"""The order example as the process tests run it: customers, stock and a plan of orders."""

from __future__ import annotations

from decimal import Decimal

from examples.orders.saga import OrderData

CUSTOMERS = 5
STOCK = {"widget": 1_000_000, "scarce": 0}


def plan(n: int) -> list[OrderData]:
    """Mostly good orders; every 10th is declined by payments and every 7th is out of stock,
    so both ways of compensating run too."""
    return [
        OrderData(
            order_id=f"o{i:03d}",
            customer_id="declined" if i % 10 == 3 else f"c{i % CUSTOMERS}",
            sku="scarce" if i % 7 == 5 else "widget",
            quantity=1 + i % 3,
            amount=Decimal(5 + i % 40),
        )
        for i in range(n)
    ]

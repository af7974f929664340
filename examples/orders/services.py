"""The participant services: customers (credit), inventory (stock and shipping), payments
(charges and invoices).

Each handler is idempotent per order: a command sent again after a timeout finds the
reservation, shipment or invoice it made the first time (keyed by the order id) and answers
the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from examples.orders.messages import (
    ChargePayment,
    CreditReleased,
    CreditReserved,
    InvoiceIssued,
    IssueInvoice,
    OrderShipped,
    PaymentCharged,
    ReleaseCredit,
    ReleaseStock,
    ReserveCredit,
    ReserveStock,
    ShipOrder,
    StockReleased,
    StockReserved,
)
from outbox import Envelope
from saga import Refused

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id text PRIMARY KEY, customer_id text NOT NULL, sku text NOT NULL, quantity int NOT NULL,
    amount numeric NOT NULL, status text NOT NULL DEFAULT 'pending', saga_id text
);
CREATE TABLE IF NOT EXISTS customers (
    customer_id text PRIMARY KEY, credit_limit numeric NOT NULL, reserved numeric NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS credit_reservations (
    order_id text PRIMARY KEY, customer_id text NOT NULL, amount numeric NOT NULL, released boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS stock (sku text PRIMARY KEY, available int NOT NULL);
CREATE TABLE IF NOT EXISTS stock_reservations (
    order_id text PRIMARY KEY, sku text NOT NULL, quantity int NOT NULL, released boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS payments (
    order_id text PRIMARY KEY, customer_id text NOT NULL, amount numeric NOT NULL
);
CREATE TABLE IF NOT EXISTS shipments (
    order_id text PRIMARY KEY, sku text NOT NULL, quantity int NOT NULL
);
CREATE TABLE IF NOT EXISTS invoices (
    order_id text PRIMARY KEY, customer_id text NOT NULL, amount numeric NOT NULL
);
CREATE TABLE IF NOT EXISTS handled_commands (
    service text NOT NULL, command text NOT NULL, order_id text NOT NULL, attempt int, handled_at timestamptz DEFAULT now()
);
"""


async def create_tables(conn: AsyncConnection) -> None:
    """The services' tables, in the caller's transaction (a test kit's `saga_schema` hook)."""
    await conn.exec_driver_sql(SCHEMA)


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await create_tables(conn)


LOG = text("INSERT INTO handled_commands (service, command, order_id, attempt) VALUES (:s, :c, :o, :a)")


async def _log(conn: AsyncConnection, service: str, command: str, order_id: str, envelope: Envelope) -> None:
    await conn.execute(LOG, {"s": service, "c": command, "o": order_id, "a": envelope.attempt})


# --- customers -----------------------------------------------------------------------------

NEW_CREDIT_RESERVATION = text(
    "INSERT INTO credit_reservations (order_id, customer_id, amount) VALUES (:o, :c, :a) "
    "ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
TAKE_CREDIT = text(
    "UPDATE customers SET reserved = reserved + :a WHERE customer_id = :c AND credit_limit - reserved >= :a"
)


async def reserve_credit(conn: AsyncConnection, cmd: ReserveCredit, envelope: Envelope) -> CreditReserved:
    await _log(conn, "customers", "reserve_credit", cmd.order_id, envelope)
    params = {"o": cmd.order_id, "c": cmd.customer_id, "a": cmd.amount}
    # The reservation row first: the same command sent again finds it and answers the same.
    new = (await conn.execute(NEW_CREDIT_RESERVATION, params)).first() is not None
    if new and (await conn.execute(TAKE_CREDIT, params)).rowcount == 0:
        raise Refused(f"insufficient credit for customer {cmd.customer_id}")  # undoes the row too
    return CreditReserved(reservation_id=f"credit-{cmd.order_id}")


async def release_credit(conn: AsyncConnection, cmd: ReleaseCredit, envelope: Envelope) -> CreditReleased:
    await _log(conn, "customers", "release_credit", cmd.order_id, envelope)
    row = (
        await conn.execute(
            text(
                "UPDATE credit_reservations SET released = true WHERE order_id = :o AND NOT released "
                "RETURNING customer_id, amount"
            ),
            {"o": cmd.order_id},
        )
    ).first()
    if row is not None:
        await conn.execute(
            text("UPDATE customers SET reserved = reserved - :a WHERE customer_id = :c"),
            {"a": row[1], "c": row[0]},
        )
    return CreditReleased(released=row is not None)


# --- inventory -----------------------------------------------------------------------------


SLOW_SKUS = frozenset({"slow"})


NEW_STOCK_RESERVATION = text(
    "INSERT INTO stock_reservations (order_id, sku, quantity) VALUES (:o, :s, :q) "
    "ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
TAKE_STOCK = text("UPDATE stock SET available = available - :q WHERE sku = :s AND available >= :q")


async def reserve_stock(conn: AsyncConnection, cmd: ReserveStock, envelope: Envelope) -> StockReserved:
    if cmd.sku in SLOW_SKUS:
        await asyncio.sleep(6.0)  # a warehouse system that answers late: trips the step's timeout
    await _log(conn, "inventory", "reserve_stock", cmd.order_id, envelope)
    params = {"o": cmd.order_id, "s": cmd.sku, "q": cmd.quantity}
    new = (await conn.execute(NEW_STOCK_RESERVATION, params)).first() is not None
    if new and (await conn.execute(TAKE_STOCK, params)).rowcount == 0:
        raise Refused(f"out of stock: {cmd.sku}")
    return StockReserved(reservation_id=f"stock-{cmd.order_id}")


async def release_stock(conn: AsyncConnection, cmd: ReleaseStock, envelope: Envelope) -> StockReleased:
    await _log(conn, "inventory", "release_stock", cmd.order_id, envelope)
    row = (
        await conn.execute(
            text(
                "UPDATE stock_reservations SET released = true WHERE order_id = :o AND NOT released "
                "RETURNING sku, quantity"
            ),
            {"o": cmd.order_id},
        )
    ).first()
    if row is not None:
        await conn.execute(
            text("UPDATE stock SET available = available + :q WHERE sku = :s"), {"q": row[1], "s": row[0]}
        )
    return StockReleased(released=row is not None)


async def ship_order(conn: AsyncConnection, cmd: ShipOrder, envelope: Envelope) -> OrderShipped:
    await _log(conn, "inventory", "ship_order", cmd.order_id, envelope)
    await conn.execute(
        text(
            "INSERT INTO shipments (order_id, sku, quantity) VALUES (:o, :s, :q) ON CONFLICT (order_id) DO NOTHING"
        ),
        {"o": cmd.order_id, "s": cmd.sku, "q": cmd.quantity},
    )
    return OrderShipped(shipment_id=f"ship-{cmd.order_id}")


# --- payments ------------------------------------------------------------------------------

DECLINED_CUSTOMERS = frozenset({"declined"})


async def charge(conn: AsyncConnection, cmd: ChargePayment, envelope: Envelope) -> PaymentCharged:
    await _log(conn, "payments", "charge", cmd.order_id, envelope)
    if cmd.customer_id in DECLINED_CUSTOMERS:
        raise Refused(f"card declined for customer {cmd.customer_id}")
    await conn.execute(
        text(
            "INSERT INTO payments (order_id, customer_id, amount) VALUES (:o, :c, :a) ON CONFLICT (order_id) DO NOTHING"
        ),
        {"o": cmd.order_id, "c": cmd.customer_id, "a": cmd.amount},
    )
    return PaymentCharged(payment_id=f"pay-{cmd.order_id}")


async def issue_invoice(conn: AsyncConnection, cmd: IssueInvoice, envelope: Envelope) -> InvoiceIssued:
    await _log(conn, "payments", "issue_invoice", cmd.order_id, envelope)
    await conn.execute(
        text(
            "INSERT INTO invoices (order_id, customer_id, amount) VALUES (:o, :c, :a) ON CONFLICT (order_id) DO NOTHING"
        ),
        {"o": cmd.order_id, "c": cmd.customer_id, "a": cmd.amount},
    )
    return InvoiceIssued(invoice_id=f"invoice-{cmd.order_id}")


HANDLERS: dict[str, dict[type, Any]] = {
    "customers": {ReserveCredit: reserve_credit, ReleaseCredit: release_credit},
    "inventory": {ReserveStock: reserve_stock, ReleaseStock: release_stock, ShipOrder: ship_order},
    "payments": {ChargePayment: charge, IssueInvoice: issue_invoice},
}

"""The order saga of bench/peers.py, as data and SQL that both sides share: its tables, the
orders, the four steps' transactions (three remote ones with their compensations, one local),
and the check of a run's results.

    reserve_credit -> reserve_stock -> charge_payment -> approve_order
    (a declined card refuses the charge: the stock, then the credit, are released)

Each transaction takes a SQLAlchemy `AsyncConnection` in the caller's transaction: our
participants' and orchestrator's, or a DBOS datasource transaction's session connection. Each is
idempotent per order, as a step that may be sent again must be.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

CUSTOMERS = 100
SKUS = 100
REFUSE_EVERY = 10  # the customers c9, c19, ... have a card that is declined: 1 order in 10
AMOUNT = Decimal(10)
STOCK = 10**9
CREDIT = Decimal(10**9)

SCHEMA = """
CREATE TABLE customers (
    customer_id text PRIMARY KEY, credit_limit numeric NOT NULL, reserved numeric NOT NULL DEFAULT 0,
    card_ok boolean NOT NULL
);
CREATE TABLE credit_reservations (
    order_id text PRIMARY KEY, customer_id text NOT NULL, amount numeric NOT NULL,
    released boolean NOT NULL DEFAULT false
);
CREATE TABLE stock (sku text PRIMARY KEY, available bigint NOT NULL);
CREATE TABLE stock_reservations (
    order_id text PRIMARY KEY, sku text NOT NULL, quantity int NOT NULL, released boolean NOT NULL DEFAULT false
);
CREATE TABLE payments (order_id text PRIMARY KEY, customer_id text NOT NULL, amount numeric NOT NULL);
CREATE TABLE orders (order_id text PRIMARY KEY, status text NOT NULL);
"""


class Declined(Exception):
    """A business refusal of a step (our participants turn it into `saga.Refused`)."""


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount: Decimal

    @property
    def refused(self) -> bool:
        return int(self.customer_id[1:]) % REFUSE_EVERY == REFUSE_EVERY - 1


def orders(n: int, prefix: str = "o") -> list[Order]:
    return [Order(f"{prefix}{i:06d}", f"c{i % CUSTOMERS}", f"s{i % SKUS}", 1, AMOUNT) for i in range(n)]


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(SCHEMA)
        await conn.execute(
            text("INSERT INTO customers VALUES (:c, :l, 0, :ok)"),
            [
                {"c": f"c{i}", "l": CREDIT, "ok": i % REFUSE_EVERY != REFUSE_EVERY - 1}
                for i in range(CUSTOMERS)
            ],
        )
        await conn.execute(
            text("INSERT INTO stock VALUES (:s, :a)"), [{"s": f"s{i}", "a": STOCK} for i in range(SKUS)]
        )


# The statements, public for DBOS's sync API (bench/_peers_dbos.py runs them the same way).
# The reservation row first: the same command sent again finds it and changes nothing more.
NEW_CREDIT = text(
    "INSERT INTO credit_reservations (order_id, customer_id, amount) VALUES (:o, :c, :a) "
    "ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
TAKE_CREDIT = text(
    "UPDATE customers SET reserved = reserved + :a WHERE customer_id = :c AND credit_limit - reserved >= :a"
)
RELEASE_CREDIT = text(
    "UPDATE credit_reservations SET released = true WHERE order_id = :o AND NOT released "
    "RETURNING customer_id, amount"
)
GIVE_CREDIT = text("UPDATE customers SET reserved = reserved - :a WHERE customer_id = :c")
NEW_STOCK = text(
    "INSERT INTO stock_reservations (order_id, sku, quantity) VALUES (:o, :s, :q) "
    "ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
TAKE_STOCK = text("UPDATE stock SET available = available - :q WHERE sku = :s AND available >= :q")
RELEASE_STOCK = text(
    "UPDATE stock_reservations SET released = true WHERE order_id = :o AND NOT released RETURNING sku, quantity"
)
GIVE_STOCK = text("UPDATE stock SET available = available + :q WHERE sku = :s")
CARD_OK = text("SELECT card_ok FROM customers WHERE customer_id = :c")
CHARGE = text(
    "INSERT INTO payments (order_id, customer_id, amount) VALUES (:o, :c, :a) ON CONFLICT (order_id) DO NOTHING"
)
APPROVE = text("INSERT INTO orders VALUES (:o, 'approved') ON CONFLICT (order_id) DO NOTHING")


async def reserve_credit(conn: AsyncConnection, order: Order) -> None:
    params = {"o": order.order_id, "c": order.customer_id, "a": order.amount}
    new = (await conn.execute(NEW_CREDIT, params)).first() is not None
    if new and (await conn.execute(TAKE_CREDIT, params)).rowcount == 0:
        raise Declined(f"insufficient credit for customer {order.customer_id}")


async def release_credit(conn: AsyncConnection, order: Order) -> None:
    row = (await conn.execute(RELEASE_CREDIT, {"o": order.order_id})).first()
    if row is not None:
        await conn.execute(GIVE_CREDIT, {"c": row[0], "a": row[1]})


async def reserve_stock(conn: AsyncConnection, order: Order) -> None:
    params = {"o": order.order_id, "s": order.sku, "q": order.quantity}
    new = (await conn.execute(NEW_STOCK, params)).first() is not None
    if new and (await conn.execute(TAKE_STOCK, params)).rowcount == 0:
        raise Declined(f"sku {order.sku} is out of stock")


async def release_stock(conn: AsyncConnection, order: Order) -> None:
    row = (await conn.execute(RELEASE_STOCK, {"o": order.order_id})).first()
    if row is not None:
        await conn.execute(GIVE_STOCK, {"s": row[0], "q": row[1]})


async def charge_payment(conn: AsyncConnection, order: Order) -> None:
    if not (await conn.execute(CARD_OK, {"c": order.customer_id})).scalar_one():
        raise Declined(f"the card of customer {order.customer_id} was declined")
    await conn.execute(CHARGE, {"o": order.order_id, "c": order.customer_id, "a": order.amount})


async def approve_order(conn: AsyncConnection, order: Order) -> None:
    await conn.execute(APPROVE, {"o": order.order_id})


_TOTALS = text(
    "SELECT (SELECT count(*) FROM orders WHERE status = 'approved'), "
    "(SELECT count(*) FROM payments), "
    "(SELECT count(*) FILTER (WHERE released) FROM credit_reservations), "
    "(SELECT count(*) FILTER (WHERE NOT released) FROM credit_reservations), "
    "(SELECT count(*) FILTER (WHERE released) FROM stock_reservations), "
    "(SELECT count(*) FILTER (WHERE NOT released) FROM stock_reservations), "
    "(SELECT sum(reserved) FROM customers), "
    "(SELECT sum(:stock - available) FROM stock)"
)


_NAMES = (
    "approved orders",
    "payments",
    "released credit",
    "held credit",
    "released stock",
    "held stock",
    "credit reserved",
    "stock taken",
)
Totals = dict[str, Decimal]


async def totals(engine: AsyncEngine) -> Totals:
    """The figures `check` compares: taken after the warm-up, so that only the measured orders
    count (a warm-up saga may end either way: one that waits out a slow start compensates)."""
    async with engine.connect() as conn:
        row = (await conn.execute(_TOTALS, {"stock": STOCK})).one()
    return {name: Decimal(value or 0) for name, value in zip(_NAMES, row, strict=True)}


async def check(
    side: str, engine: AsyncEngine, before: Totals, placed: list[Order], ended: Counter[str]
) -> None:
    """Raises SystemExit naming what is wrong unless what changed in the tables since `before`,
    and the sagas' outcomes (`ended`: "approved" and "compensated" counts), are exactly what
    `placed` should give."""
    approved = [o for o in placed if not o.refused]
    refused = len(placed) - len(approved)
    want: dict[str, object] = {
        "approved orders": len(approved),
        "payments": len(approved),
        "released credit": refused,
        "held credit": len(approved),
        "released stock": refused,
        "held stock": len(approved),
        "credit reserved": sum(o.amount for o in approved),
        "stock taken": sum(o.quantity for o in approved),
        "sagas approved": len(approved),
        "sagas compensated": refused,
    }
    after = await totals(engine)
    got: dict[str, object] = {name: after[name] - before[name] for name in _NAMES}
    got |= {"sagas approved": ended["approved"], "sagas compensated": ended["compensated"]}
    got |= {f"sagas {other}": n for other, n in ended.items() if other not in ("approved", "compensated")}
    wrong = {k: (g, want.get(k, 0)) for k, g in got.items() if g != want.get(k, 0)}
    if wrong:
        raise SystemExit(
            f"{side}: results are wrong, no figures printed: "
            + ", ".join(f"{k} {g} (expected {w})" for k, (g, w) in wrong.items())
        )

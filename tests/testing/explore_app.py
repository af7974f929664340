"""An order paid from a wallet and then shipped, for the tests of fault exploration.

charge (wallet, 30 s timeout; refunded on compensation) -> ship (shop, the pivot, 30 s
timeout, tried twice). Money taken is what the card gateway's ledger says, per order.

Two wallets: `WALLET` charges in the participant's transaction and keeps a row per order, so
a command that comes again takes nothing, and a charge arriving after its refund takes
nothing; `CARELESS_WALLET` calls the gateway on a connection of its own, outside the
participant's transaction, once per call: a charge handled again charges again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import Envelope, MessageRegistry
from saga import App, Refused, RemoteStep, RetryPolicy, Saga, StepKind, TypedSagaState
from saga.testing import System

messages = MessageRegistry()


@messages.message("wallet.charge")
class Charge(BaseModel):
    order_id: str
    amount: int


@messages.message("wallet.charged")
class Charged(BaseModel):
    order_id: str


@messages.message("wallet.refund")
class Refund(BaseModel):
    order_id: str
    amount: int


@messages.message("wallet.refunded")
class Refunded(BaseModel):
    order_id: str


@messages.message("shop.ship")
class Ship(BaseModel):
    order_id: str


@messages.message("shop.shipped")
class Shipped(BaseModel):
    order_id: str


class Order(BaseModel):
    order_id: str
    amount: int


class ChargeStep(RemoteStep[Order]):
    name = "charge"
    participant = "wallet"
    compensation_reply = Refunded
    timeout_s = 30

    def command(self, data: Order) -> Charge:
        return Charge(order_id=data.order_id, amount=data.amount)

    def on_reply(self, data: Order, reply: Charged) -> Order:
        return data

    def compensation(self, data: Order) -> Refund:
        return Refund(order_id=data.order_id, amount=data.amount)


class ShipStep(RemoteStep[Order]):
    name = "ship"
    participant = "shop"
    kind = StepKind.PIVOT
    timeout_s = 30
    retry = RetryPolicy(attempts=2)

    def command(self, data: Order) -> Ship:
        return Ship(order_id=data.order_id)

    def on_reply(self, data: Order, reply: Shipped) -> Order:
        return data


class PaidOrder(Saga[Order]):
    name = "PaidOrder"
    steps = (ChargeStep, ShipStep)


async def create_tables(conn: AsyncConnection) -> None:
    await conn.execute(text("CREATE TABLE ledger (order_id text NOT NULL, amount int NOT NULL)"))
    await conn.execute(text("CREATE TABLE payments (order_id text PRIMARY KEY, state text NOT NULL)"))
    await conn.execute(text("CREATE TABLE shipments (order_id text PRIMARY KEY)"))


async def charge(conn: AsyncConnection, command: Charge, envelope: Envelope) -> Charged:
    payment = await conn.execute(
        text("INSERT INTO payments VALUES (:o, 'charged') ON CONFLICT DO NOTHING"), {"o": command.order_id}
    )
    if payment.rowcount == 1:
        await conn.execute(
            text("INSERT INTO ledger VALUES (:o, :a)"), {"o": command.order_id, "a": command.amount}
        )
    elif await _state(conn, command.order_id) == "refunded":
        raise Refused(f"order {command.order_id} was refunded: its late charge takes nothing")
    return Charged(order_id=command.order_id)


async def refund(conn: AsyncConnection, command: Refund, envelope: Envelope) -> Refunded:
    state = await _state(conn, command.order_id)
    await conn.execute(
        text(
            "INSERT INTO payments VALUES (:o, 'refunded') ON CONFLICT (order_id) DO UPDATE SET state = 'refunded'"
        ),
        {"o": command.order_id},
    )
    if state == "charged":
        await conn.execute(
            text("INSERT INTO ledger VALUES (:o, :a)"), {"o": command.order_id, "a": -command.amount}
        )
    return Refunded(order_id=command.order_id)


async def _state(conn: AsyncConnection, order_id: str) -> str | None:
    found = await conn.execute(
        text("SELECT state FROM payments WHERE order_id = :o FOR UPDATE"), {"o": order_id}
    )
    state: str | None = found.scalar()
    return state


async def charge_at_gateway(conn: AsyncConnection, command: Charge, envelope: Envelope) -> Charged:
    """Calls the gateway at once, on its own connection: not undone when the participant's
    transaction is rolled back, and done again when the command is handled again."""
    async with conn.engine.begin() as gateway:
        await gateway.execute(
            text("INSERT INTO ledger VALUES (:o, :a)"), {"o": command.order_id, "a": command.amount}
        )
    return Charged(order_id=command.order_id)


async def refund_at_gateway(conn: AsyncConnection, command: Refund, envelope: Envelope) -> Refunded:
    async with conn.engine.begin() as gateway:
        await gateway.execute(
            text("INSERT INTO ledger VALUES (:o, :a)"), {"o": command.order_id, "a": -command.amount}
        )
    return Refunded(order_id=command.order_id)


async def ship(conn: AsyncConnection, command: Ship, envelope: Envelope) -> Shipped:
    await conn.execute(
        text("INSERT INTO shipments VALUES (:o) ON CONFLICT DO NOTHING"), {"o": command.order_id}
    )
    return Shipped(order_id=command.order_id)


WALLET: dict[type[BaseModel], Any] = {Charge: charge, Refund: refund}
CARELESS_WALLET: dict[type[BaseModel], Any] = {Charge: charge_at_gateway, Refund: refund_at_gateway}
SHOP: dict[type[BaseModel], Any] = {Ship: ship}
app = App(
    sagas=[PaidOrder], messages=messages, participants={"wallet": WALLET, "shop": SHOP}, topic_prefix="shop"
)


async def paid_once_or_refunded(system: System, state: TypedSagaState[Any]) -> None:
    """The invariant: a completed order took its amount once and shipped once; a compensated
    one took nothing and shipped nothing."""
    order: Order = state.data
    taken = await system.scalar(
        "SELECT coalesce(sum(amount), 0) FROM ledger WHERE order_id = :o", o=order.order_id
    )
    shipped = await system.scalar("SELECT count(*) FROM shipments WHERE order_id = :o", o=order.order_id)
    expected = {"completed": (order.amount, 1), "compensated": (0, 0)}.get(state.status)
    assert expected is not None, f"order {order.order_id} ended {state.status}: {state.last_error}"
    assert (taken, shipped) == expected, (
        f"order {order.order_id} {state.status}: took {taken} and shipped {shipped} time(s); "
        f"expected to take {expected[0]} and ship {expected[1]} time(s)"
    )

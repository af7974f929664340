"""A gift card purchase, for the tests of the testing kit (not the order saga).

charge (wallet: takes the amount, refunds it on compensation) -> wait up to an hour for the
customer's `Confirmed` -> activate (cards, the pivot).
`Delayed` waits a day before activating. The schema: one wallet per customer and a row per
charge, seeded with alice (100) and bob (5: his charges are refused).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from outbox import Envelope, MessageRegistry
from saga import App, Delay, Refused, RemoteStep, RetryPolicy, Saga, StepKind, WaitFor

messages = MessageRegistry()


@messages.message("wallet.charge")
class Charge(BaseModel):
    purchase_id: str
    customer: str
    amount: int


@messages.message("wallet.charged")
class Charged(BaseModel):
    purchase_id: str


@messages.message("wallet.refund")
class Refund(BaseModel):
    purchase_id: str
    customer: str
    amount: int


@messages.message("wallet.refunded")
class Refunded(BaseModel):
    purchase_id: str


@messages.message("customer.confirmed")
class Confirmed(BaseModel):
    purchase_id: str


@messages.message("cards.activate")
class Activate(BaseModel):
    purchase_id: str


@messages.message("cards.activated")
class Activated(BaseModel):
    purchase_id: str
    code: str


class Purchase(BaseModel):
    purchase_id: str
    customer: str
    amount: int
    code: str = ""


class ChargeStep(RemoteStep[Purchase]):
    name = "charge"
    participant = "wallet"
    compensation_reply = Refunded
    timeout_s = 60

    def command(self, data: Purchase) -> Charge:
        return Charge(purchase_id=data.purchase_id, customer=data.customer, amount=data.amount)

    def on_reply(self, data: Purchase, reply: Charged) -> Purchase:
        return data

    def compensation(self, data: Purchase) -> Refund:
        return Refund(purchase_id=data.purchase_id, customer=data.customer, amount=data.amount)


class ActivateStep(RemoteStep[Purchase]):
    name = "activate"
    participant = "cards"
    kind = StepKind.PIVOT
    timeout_s = 60

    def command(self, data: Purchase) -> Activate:
        return Activate(purchase_id=data.purchase_id)

    def on_reply(self, data: Purchase, reply: Activated) -> Purchase:
        return data.model_copy(update={"code": reply.code})


class GiftCard(Saga[Purchase]):
    name = "GiftCard"
    steps = (ChargeStep, WaitFor(Confirmed, timeout_s=3600), ActivateStep)


class Delayed(Saga[Purchase]):
    """Charge, wait a day, activate."""

    name = "DelayedGiftCard"
    steps = (ChargeStep, Delay(24 * 3600, name="cooling_off"), ActivateStep)


class RetriedChargeStep(ChargeStep):
    name = "charge"
    retry = RetryPolicy(attempts=3)


class Retried(Saga[Purchase]):
    """The charge sent again on timeout, three times in all."""

    name = "RetriedGiftCard"
    steps = (RetriedChargeStep, ActivateStep)


async def create_tables(conn: AsyncConnection) -> None:
    await conn.execute(text("CREATE TABLE wallets (customer text PRIMARY KEY, balance int NOT NULL)"))
    await conn.execute(text("CREATE TABLE charges (purchase_id text NOT NULL, amount int NOT NULL)"))
    await conn.execute(text("INSERT INTO wallets VALUES ('alice', 100), ('bob', 5)"))


async def charge(conn: AsyncConnection, command: Charge, envelope: Envelope) -> Charged:
    taken = await conn.execute(
        text("UPDATE wallets SET balance = balance - :a WHERE customer = :c AND balance >= :a"),
        {"a": command.amount, "c": command.customer},
    )
    if taken.rowcount != 1:
        raise Refused(f"{command.customer} cannot pay {command.amount}")
    await conn.execute(
        text("INSERT INTO charges VALUES (:p, :a)"), {"p": command.purchase_id, "a": command.amount}
    )
    return Charged(purchase_id=command.purchase_id)


async def refund(conn: AsyncConnection, command: Refund, envelope: Envelope) -> Refunded:
    await conn.execute(
        text("UPDATE wallets SET balance = balance + :a WHERE customer = :c"),
        {"a": command.amount, "c": command.customer},
    )
    await conn.execute(
        text("INSERT INTO charges VALUES (:p, :a)"), {"p": command.purchase_id, "a": -command.amount}
    )
    return Refunded(purchase_id=command.purchase_id)


async def activate(conn: AsyncConnection, command: Activate, envelope: Envelope) -> Activated:
    return Activated(purchase_id=command.purchase_id, code=f"GC-{command.purchase_id}")


WALLET: dict[type[BaseModel], Any] = {Charge: charge, Refund: refund}
CARDS: dict[type[BaseModel], Any] = {Activate: activate}
app = App(
    sagas=[GiftCard, Delayed, Retried],
    messages=messages,
    participants={"wallet": WALLET, "cards": CARDS},
    topic_prefix="giftcards",
)

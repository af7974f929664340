"""Our side of bench/peers.py: the order saga (bench/_peers_orders.py) as a `Saga`, its three
participants (customers, inventory, payments) and the app their processes load.

Its processes get the run's topic prefix from BENCH_RUN (as bench/parallel_app.py does):
`SAGA_APP=bench._peers_app:app BENCH_RUN=<run> saga worker`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import _peers_orders as orders
from outbox import Envelope, MessageRegistry
from saga import App, LocalStep, Refused, RemoteStep, RetryPolicy, Saga, StepKind

messages = MessageRegistry()


class PeerOrder(BaseModel):
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount: Decimal

    def order(self) -> orders.Order:
        return orders.Order(self.order_id, self.customer_id, self.sku, self.quantity, self.amount)


@messages.message("peers.reserve_credit")
class ReserveCredit(PeerOrder):
    pass


@messages.message("peers.release_credit")
class ReleaseCredit(PeerOrder):
    pass


@messages.message("peers.reserve_stock")
class ReserveStock(PeerOrder):
    pass


@messages.message("peers.release_stock")
class ReleaseStock(PeerOrder):
    pass


@messages.message("peers.charge_payment")
class ChargePayment(PeerOrder):
    pass


@messages.message("peers.done")
class Done(BaseModel):
    pass


@messages.message("peers.undone")
class Undone(BaseModel):
    pass


class _Remote(RemoteStep[PeerOrder]):
    reply = Done
    compensation_reply = Undone
    timeout_s = 30.0


class ReserveCreditStep(_Remote):
    name = "reserve_credit"
    participant = "customers"

    def command(self, data: PeerOrder) -> ReserveCredit:
        return ReserveCredit(**data.model_dump())

    def compensation(self, data: PeerOrder) -> ReleaseCredit:
        return ReleaseCredit(**data.model_dump())


class ReserveStockStep(_Remote):
    name = "reserve_stock"
    participant = "inventory"

    def command(self, data: PeerOrder) -> ReserveStock:
        return ReserveStock(**data.model_dump())

    def compensation(self, data: PeerOrder) -> ReleaseStock:
        return ReleaseStock(**data.model_dump())


class ChargePaymentStep(_Remote):
    """The pivot: a declined card refuses it and the steps before are compensated."""

    name = "charge_payment"
    participant = "payments"
    kind = StepKind.PIVOT

    def command(self, data: PeerOrder) -> ChargePayment:
        return ChargePayment(**data.model_dump())


class ApproveOrderStep(LocalStep[PeerOrder]):
    name = "approve_order"
    kind = StepKind.RETRIABLE
    retry = RetryPolicy(attempts=5, backoff_s=0.2)

    async def action(self, conn: AsyncConnection, data: PeerOrder) -> None:
        await orders.approve_order(conn, data.order())


class PeerOrderSaga(Saga[PeerOrder]):
    steps = (ReserveCreditStep, ReserveStockStep, ChargePaymentStep, ApproveOrderStep)


Transaction = Callable[[AsyncConnection, orders.Order], Awaitable[None]]


def _handler(transaction: Transaction, reply: type[BaseModel]) -> Any:
    async def handle(conn: AsyncConnection, command: PeerOrder, envelope: Envelope) -> BaseModel:
        try:
            await transaction(conn, command.order())
        except orders.Declined as declined:
            raise Refused(str(declined)) from declined
        return reply()

    return handle


HANDLERS: dict[str, dict[type[BaseModel], Any]] = {
    "customers": {
        ReserveCredit: _handler(orders.reserve_credit, Done),
        ReleaseCredit: _handler(orders.release_credit, Undone),
    },
    "inventory": {
        ReserveStock: _handler(orders.reserve_stock, Done),
        ReleaseStock: _handler(orders.release_stock, Undone),
    },
    "payments": {ChargePayment: _handler(orders.charge_payment, Done)},
}

peers_app = App(sagas=[PeerOrderSaga], messages=messages, participants=HANDLERS, topic_prefix="bench-peers")


def __getattr__(name: str) -> App:
    # `app` only on demand: the module is imported by bench/peers.py too, which has no BENCH_RUN.
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    run = os.environ.get("BENCH_RUN")
    if not run:
        raise RuntimeError("bench._peers_app:app needs BENCH_RUN, the run's name (its topic prefix)")
    return peers_app.with_topic_prefix(run)

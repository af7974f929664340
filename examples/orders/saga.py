"""The order saga: reserve credit, reserve stock, charge (the pivot), then approve locally."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from examples.orders.messages import (
    ChargePayment,
    CreditReleased,
    CreditReserved,
    PaymentCharged,
    ReleaseCredit,
    ReleaseStock,
    ReserveCredit,
    ReserveStock,
    StockReleased,
    StockReserved,
)
from saga import LocalStep, RemoteStep, RetryPolicy, Saga, StepKind


class OrderData(BaseModel):
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount: Decimal
    credit_reservation: str | None = None
    stock_reservation: str | None = None
    payment_id: str | None = None


class ReserveCreditStep(RemoteStep[OrderData]):
    name = "reserve_credit"
    participant = "customers"
    timeout_s = 30.0
    compensation_reply = CreditReleased

    def command(self, data: OrderData) -> ReserveCredit:
        return ReserveCredit(customer_id=data.customer_id, order_id=data.order_id, amount=data.amount)

    def on_reply(self, data: OrderData, reply: CreditReserved) -> OrderData:
        return data.model_copy(update={"credit_reservation": reply.reservation_id})

    def compensation(self, data: OrderData) -> ReleaseCredit:
        return ReleaseCredit(customer_id=data.customer_id, order_id=data.order_id)


class ReserveStockStep(RemoteStep[OrderData]):
    name = "reserve_stock"
    participant = "inventory"
    timeout_s = 5.0  # the demo's slow warehouse answers after 6 s
    compensation_reply = StockReleased

    def command(self, data: OrderData) -> ReserveStock:
        return ReserveStock(order_id=data.order_id, sku=data.sku, quantity=data.quantity)

    def on_reply(self, data: OrderData, reply: StockReserved) -> OrderData:
        return data.model_copy(update={"stock_reservation": reply.reservation_id})

    def compensation(self, data: OrderData) -> ReleaseStock:
        return ReleaseStock(order_id=data.order_id)


class ChargePaymentStep(RemoteStep[OrderData]):
    name = "charge_payment"
    participant = "payments"
    kind = StepKind.PIVOT
    timeout_s = 30.0
    retry = RetryPolicy(attempts=3)  # the payment service is idempotent per order

    def command(self, data: OrderData) -> ChargePayment:
        return ChargePayment(order_id=data.order_id, customer_id=data.customer_id, amount=data.amount)

    def on_reply(self, data: OrderData, reply: PaymentCharged) -> OrderData:
        return data.model_copy(update={"payment_id": reply.payment_id})


class ApproveOrderStep(LocalStep[OrderData]):
    """Runs in the orchestrator's own transaction: the order row says approved."""

    name = "approve_order"
    kind = StepKind.RETRIABLE
    retry = RetryPolicy(attempts=5, backoff_s=0.2)

    async def action(self, conn: AsyncConnection, data: OrderData) -> None:
        await conn.execute(
            text("UPDATE orders SET status = 'approved' WHERE order_id = :id"), {"id": data.order_id}
        )


class OrderSaga(Saga[OrderData]):
    steps = (ReserveCreditStep, ReserveStockStep, ChargePaymentStep, ApproveOrderStep)

"""The order saga: reserve credit and stock, wait for the warehouse to pick the goods, charge
(the pivot), then ship and invoice side by side, and approve the order locally.

    reserve_credit -> reserve_stock -> wait_for_picked -> charge_payment
        -> Parallel(ship_order, issue_invoice) -> approve_order

Goods that are never picked time the wait out: the saga compensates (stock, then credit
released) and nobody is charged. Shipping and invoicing come after the pivot, so they cannot
fail the order: each is retried (both services are idempotent per order).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from examples.orders.messages import (
    ChargePayment,
    CreditReleased,
    CreditReserved,
    InvoiceIssued,
    IssueInvoice,
    OrderShipped,
    PaymentCharged,
    Picked,
    ReleaseCredit,
    ReleaseStock,
    ReserveCredit,
    ReserveStock,
    ShipOrder,
    StockReleased,
    StockReserved,
)
from saga import LocalStep, Parallel, RemoteStep, RetryPolicy, Saga, StepKind, WaitFor

# How long the warehouse may take to pick an order's goods once the stock is reserved. Long
# enough for a pick that waits behind a restart or a backlog; the order then compensates.
PICK_TIMEOUT_S = 30.0


class OrderData(BaseModel):
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount: Decimal
    credit_reservation: str | None = None
    stock_reservation: str | None = None
    payment_id: str | None = None
    shipment_id: str | None = None
    invoice_id: str | None = None


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


# The step "wait_for_picked": takes the warehouse's Picked signal, even one sent before the
# saga got here (it was kept); none within the timeout fails the step like a refusal would.
WaitForPicked = WaitFor(Picked, timeout_s=PICK_TIMEOUT_S)


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


class ShipOrderStep(RemoteStep[OrderData]):
    name = "ship_order"
    participant = "inventory"
    kind = StepKind.RETRIABLE  # paid for: it must happen, so it is sent again until it does
    timeout_s = 30.0
    retry = RetryPolicy(attempts=5, backoff_s=1.0)

    def command(self, data: OrderData) -> ShipOrder:
        return ShipOrder(order_id=data.order_id, sku=data.sku, quantity=data.quantity)

    def on_reply(self, data: OrderData, reply: OrderShipped) -> OrderData:
        return data.model_copy(update={"shipment_id": reply.shipment_id})


class IssueInvoiceStep(RemoteStep[OrderData]):
    name = "issue_invoice"
    participant = "payments"
    kind = StepKind.RETRIABLE
    timeout_s = 30.0
    retry = RetryPolicy(attempts=5, backoff_s=1.0)

    def command(self, data: OrderData) -> IssueInvoice:
        return IssueInvoice(order_id=data.order_id, customer_id=data.customer_id, amount=data.amount)

    def on_reply(self, data: OrderData, reply: InvoiceIssued) -> OrderData:
        return data.model_copy(update={"invoice_id": reply.invoice_id})


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
    steps = (
        ReserveCreditStep,
        ReserveStockStep,
        WaitForPicked,
        ChargePaymentStep,
        Parallel(ShipOrderStep, IssueInvoiceStep),
        ApproveOrderStep,
    )

"""The commands and replies the order saga exchanges with the services, and the signal the
warehouse sends it."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from outbox import MessageRegistry

messages = MessageRegistry()


@messages.message("customers.reserve_credit")
class ReserveCredit(BaseModel):
    customer_id: str
    order_id: str
    amount: Decimal


@messages.message("customers.credit_reserved")
class CreditReserved(BaseModel):
    reservation_id: str


@messages.message("customers.release_credit")
class ReleaseCredit(BaseModel):
    customer_id: str
    order_id: str


@messages.message("customers.credit_released")
class CreditReleased(BaseModel):
    released: bool


@messages.message("inventory.reserve_stock")
class ReserveStock(BaseModel):
    order_id: str
    sku: str
    quantity: int


@messages.message("inventory.stock_reserved")
class StockReserved(BaseModel):
    reservation_id: str


@messages.message("inventory.release_stock")
class ReleaseStock(BaseModel):
    order_id: str


@messages.message("inventory.stock_released")
class StockReleased(BaseModel):
    released: bool


@messages.message("payments.charge")
class ChargePayment(BaseModel):
    order_id: str
    customer_id: str
    amount: Decimal


@messages.message("payments.charged")
class PaymentCharged(BaseModel):
    payment_id: str


@messages.message("inventory.ship_order")
class ShipOrder(BaseModel):
    order_id: str
    sku: str
    quantity: int


@messages.message("inventory.order_shipped")
class OrderShipped(BaseModel):
    shipment_id: str


@messages.message("payments.issue_invoice")
class IssueInvoice(BaseModel):
    order_id: str
    customer_id: str
    amount: Decimal


@messages.message("payments.invoice_issued")
class InvoiceIssued(BaseModel):
    invoice_id: str


@messages.message("warehouse.picked")
class Picked(BaseModel):
    """A signal, not a reply: the warehouse says an order's goods are picked and packed."""

    order_id: str

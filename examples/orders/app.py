"""The order example as one App: what `saga worker`, `saga participant` and the CLI load."""

from __future__ import annotations

from examples.orders.messages import messages
from examples.orders.saga import OrderSaga
from examples.orders.services import HANDLERS
from saga import App

app = App(sagas=[OrderSaga], messages=messages, participants=HANDLERS, topic_prefix="shop")

"""An app with two saga types of the same steps, so that one start key can name two sagas."""

from __future__ import annotations

from examples.orders.messages import messages
from examples.orders.saga import OrderSaga
from examples.orders.services import HANDLERS
from saga import App


class ReorderSaga(OrderSaga):
    pass


app = App(sagas=[OrderSaga, ReorderSaga], messages=messages, participants=HANDLERS)

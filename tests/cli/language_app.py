"""The app of the language sagas, for the `saga` command in the CLI tests."""

from __future__ import annotations

from saga import App
from tests.cli.language_sagas import CrateSaga, PackSaga, PaymentSaga, ShopSaga, messages

app = App(
    sagas=[ShopSaga, PackSaga, CrateSaga, PaymentSaga],
    messages=messages,
    external_participants=["stock", "warehouse", "labels", "payments", "billing"],
)

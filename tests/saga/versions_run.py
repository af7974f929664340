"""The Transfer apps of `versions_app` on one test's topics, for `saga migrate` run as a
subprocess: ORDERS_RUN (set by tests.cli.test_cli.Cli) names the topic prefix. Also version 3
without declared migrations, for `--data module:function`."""

from __future__ import annotations

import os

from saga import App, Saga
from tests.saga.versions_app import (
    CreditStep,
    DebitStep,
    RiskHoldStep,
    TransferDataV3,
    TransferV2,
    app_v1,
    app_v1_v2,
    app_v2,
    app_v2_v3,
)


class TransferV3Bare(Saga[TransferDataV3]):
    """Version 3 declaring no migration: the operator gives the data function."""

    name = "Transfer"
    version = 3
    steps = (DebitStep, RiskHoldStep, CreditStep)


run = os.environ.get("ORDERS_RUN", "transfers")
v1 = app_v1.with_topic_prefix(run)
v1_v2 = app_v1_v2.with_topic_prefix(run)
v2 = app_v2.with_topic_prefix(run)
v2_v3 = app_v2_v3.with_topic_prefix(run)
v2_v3_bare = App(
    sagas=[TransferV2, TransferV3Bare],
    messages=app_v2.messages,
    participants=app_v2.participants,
    topic_prefix=run,
)

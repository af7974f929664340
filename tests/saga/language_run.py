"""The language test app on one test's topics, for the worker process a test starts and kills:
LANGUAGE_RUN names the topic prefix (as ORDERS_RUN does for the order example)."""

from __future__ import annotations

import os

from tests.saga.language_app import build_app

run = os.environ.get("LANGUAGE_RUN")
if not run:
    raise RuntimeError("tests.saga.language_run needs LANGUAGE_RUN, the test's topic prefix")
app = build_app(prefix=run)

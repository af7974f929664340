"""The order app on the topics of one run (of the demo, a benchmark, chaos or a test).

Many runs share one Kafka, each with a database and topics of its own. `Cluster` starts every
process of a run with ORDERS_RUN set to the run's name, and this module makes that name the
app's topic prefix: still one place, the app, for all of a run's processes.
"""

from __future__ import annotations

import os

from examples.orders.app import app as shop

run = os.environ.get("ORDERS_RUN")
if not run:
    raise RuntimeError("examples.orders.run_app needs ORDERS_RUN, the run's name (its topic prefix)")
app = shop.with_topic_prefix(run)

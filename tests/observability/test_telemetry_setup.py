"""A worker process given a SAGA_TELEMETRY_SETUP it cannot use stops at once, saying why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("telemetry", "SAGA_TELEMETRY_SETUP: Value error, must name a function as package.module:function"),
        ("no_such_module:setup", "SAGA_TELEMETRY_SETUP: cannot import 'no_such_module'"),
        ("json:no_such_function", "module 'json' has no function 'no_such_function'"),
        ("asyncio:sleep", "is async; it must be a plain function taking no arguments"),
        ("json:dumps", "SAGA_TELEMETRY_SETUP 'json:dumps' failed: TypeError"),
    ],
)
def test_a_setup_it_cannot_use_stops_the_process(value: str, says: str) -> None:
    # Never reached: the setup comes before Postgres and Kafka.
    env = {
        **os.environ,
        "SAGA_TELEMETRY_SETUP": value,
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
    }
    done = subprocess.run(
        [sys.executable, "-m", "saga", "relay"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert says in done.stderr
    assert "Traceback" not in done.stderr

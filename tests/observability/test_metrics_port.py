"""A /metrics port already in use stops a worker process at start, naming SAGA_METRICS_PORT."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [["relay"], ["worker"], ["participant", "payments"]])
def test_a_port_in_use_stops_the_process_at_start(args: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "SAGA_APP": "examples.orders.app:app",
            "SAGA_METRICS_PORT": str(port),
        }
        done = subprocess.run(
            [sys.executable, "-m", "saga", *args], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1, done.stderr
    assert f"SAGA_METRICS_PORT {port}: cannot serve /metrics" in done.stderr
    assert "choose a free port" in done.stderr

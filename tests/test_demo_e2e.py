"""The demo, small: 100 orders through five processes, two of them SIGKILLed midway."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson


async def test_demo_keeps_its_invariants_across_sigkills(database_url: str, kafka_bootstrap: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.orders.demo",
        "--orders",
        "100",
        "--slow",
        "1",
        "--deadline",
        "180",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
    out = stdout.decode()
    assert process.returncode == 0, f"demo failed:\n{out}\n{stderr.decode()[-3000:]}"
    assert "killed customers with SIGKILL" in out
    assert "killed relay with SIGKILL" in out
    summary = orjson.loads(out.strip().splitlines()[-1])
    assert summary["invariants_ok"] is True
    assert summary["completed"] + summary["compensated"] == 100
    assert summary["completed"] > 0
    assert summary["compensated"] > 0

"""The chaos suite, small: 300 order sagas through five processes while faults of most kinds go
in, on a Postgres and a Kafka of the run's own (the suite's shared servers are never touched).
`make chaos` is the full run (3,000 sagas, every fault kind several times). The run keeps its
servers under `.cache/chaos/` and removes them after: not in pytest's temporary folder, whose
parent a pytest session starting meanwhile makes private again (0700), which locks out the
Postgres server's own user."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson

SMALL = [
    "--sagas", "300",
    "--duration", "40",
    "--outage", "4",
    "--slow", "1",
    "--stall", "60",
    "--seed", "11",
    "--faults",
    "kill-worker*1,kill-several*1,pg-immediate,kafka-kill,term-all-pg-down,duplicate*1,poison*1,bad-reply-topic",
]  # fmt: skip


async def test_small_chaos_run_ends_every_saga_exactly_once() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaos",
        *SMALL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    communicating = asyncio.ensure_future(process.communicate())
    try:
        stdout, stderr = await asyncio.wait_for(asyncio.shield(communicating), timeout=600)
    except TimeoutError:
        process.send_signal(signal.SIGTERM)  # it stops its processes and servers on the way out
        stdout, stderr = await asyncio.wait_for(communicating, timeout=180)
        raise AssertionError(
            f"the chaos run took over 600s:\n{stdout.decode()}\n{stderr.decode()[-4000:]}"
        ) from None
    out = stdout.decode()
    where = f"\n{out}\n--- stderr ---\n{stderr.decode()[-4000:]}"
    assert out.strip(), f"the chaos run printed nothing (exit {process.returncode}){where}"
    summary = orjson.loads(out.strip().splitlines()[-1])
    assert summary["sagas"] == 300
    assert summary["faults"] == 8, where
    assert {k: summary[k] for k in ("lost", "applied_twice", "stuck", "timeouts_due_to_outage")} == {
        "lost": 0,
        "applied_twice": 0,
        "stuck": 0,
        "timeouts_due_to_outage": 0,
    }, where
    assert summary["invariants_ok"] is True, where
    assert process.returncode == 0, where

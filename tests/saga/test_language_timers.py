"""A durable timer on the real services (issue 14, must-show 1): a Delay step whose worker is
SIGKILLed before it is due fires after a new worker starts, and not before its time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventstore import Database
from saga._events import SagaCompleted, TimerSet
from tests.helpers import wait_for
from tests.saga.language_app import DelayedTrip, Go, running

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """`saga worker` on the language app, as an operator starts it; each start logs to one file."""

    def __init__(self, database_url: str, bootstrap: str, prefix: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_APP": "tests.saga.language_run:app",
            "LANGUAGE_RUN": prefix,
            "SAGA_LOG_LEVEL": "INFO",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "saga", "worker"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as when its host dies."""
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
async def test_e_a_delay_survives_a_sigkill_of_the_worker(
    database: Database, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running(database, kafka_bootstrap, orchestrator_worker=False) as trips:
        worker = WorkerProcess(database_url, kafka_bootstrap, trips.app.topic_prefix, tmp_path / "worker.log")
        worker.start()
        try:
            saga_id = await trips.start(DelayedTrip, "sleepy", Go())
            # The worker process took the signal and set the timer: a row of the deadline table.
            (timer,) = await trips.wait_event(saga_id, TimerSet, deadline_s=120)
            worker.kill()
            due = await trips.scalar(
                "SELECT kind FROM saga_deadlines WHERE saga_id = :s AND step = :t", s=saga_id, t=timer.step
            )
            assert due == "timer"

            # Due while no worker runs: nothing fires it.
            await wait_for(lambda: datetime.now(UTC) > timer.due_at, 60, "the timer to fall due")
            assert (await trips.state(saga_id)).status == "running"

            restarted_at = datetime.now(UTC)
            worker.start()
            final = await trips.wait_status(saga_id, "completed", "compensated", "failed", deadline_s=120)
        finally:
            worker.stop()
    assert final.status == "completed"
    events = await trips.events(saga_id)
    (completed,) = [e for e in events if isinstance(e.event, SagaCompleted)]
    completed_at = datetime.fromtimestamp(completed.recorded_us / 1e6, UTC)
    assert completed_at >= restarted_at > timer.due_at
    assert sum(isinstance(e.event, TimerSet) for e in events) == 1

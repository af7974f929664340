"""A single-node KRaft Kafka broker run from the Apache jars, and the process helpers it needs.

The jars come from Maven Central once (the pom ships beside this module) into a folder the
caller chooses; the broker's config, data, logs and pid live in a folder of its own.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from saga.testing._kafka_tls import KEYTOOL_WHY, LISTENER, BrokerTls, TlsError

KAFKA_POM = Path(__file__).with_name("kafka-pom.xml")
KAFKA_START_TIMEOUT_S = 90.0


class ServicesError(Exception):
    """A local service cannot be used or started; the message says what to do."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); /proc tells the truth.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().split(") ", 1)[1][:1] != "Z"
    return True


def stop_pid(pid: int, sig: signal.Signals, timeout_s: float) -> None:
    if pid <= 0:  # kill(0, ...) would signal our own process group
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Like the broker's own listener: a port left in TIME_WAIT by its last run is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


JAVA_WHY = "the local Kafka broker runs on a JVM (install Java 17 or newer)"
MVN_WHY = "it fetches the Kafka broker's jars once (install Maven, e.g. `apt-get install maven`)"


def _missing(program: str, why: str) -> str | None:
    return f"`{program}` is not on PATH; {why}" if shutil.which(program) is None else None


def _need(program: str, why: str) -> None:
    problem = _missing(program, why)
    if problem is not None:
        raise ServicesError(f"kafka: {problem}")


def fetch_kafka_jars(jars: Path) -> None:
    """The broker's jars into `jars`, once (a `.complete` marker records a whole fetch)."""
    if (jars / ".complete").exists():
        return
    _need("mvn", MVN_WHY)
    print(f"kafka: fetching broker jars from Maven Central into {jars} (once)...", file=sys.stderr)
    jars.mkdir(parents=True, exist_ok=True)
    command = ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies"]
    command += [f"-DoutputDirectory={jars}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServicesError(
            f"kafka: mvn could not fetch the jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    (jars / ".complete").write_text("ok\n")


def kafka_problem(bootstrap: str, timeout_s: float = 2.0) -> str | None:
    """None when `bootstrap` answers a real Kafka request (ApiVersions, key 18, v0, error code 0);
    otherwise why not."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if not host or not port.isdigit():
        return f"{bootstrap!r} is not host:port"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            client_id = b"services"
            body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
            body += len(client_id).to_bytes(2, "big") + client_id
            s.sendall(len(body).to_bytes(4, "big") + body)
            head = s.recv(10)
    except OSError as exc:
        return str(exc) or type(exc).__name__
    if len(head) < 10 or head[8:10] != b"\x00\x00":
        return "it answered, but not as a ready Kafka broker"
    return None


# A go-between starts the broker and exits: the broker outlives whoever called `up()` (it stays
# up for the next run) without being that process's child, which would have to be waited for.
_LAUNCHER = """
import subprocess, sys
with open(sys.argv[1], "wb") as out:
    broker = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
print(broker.pid)
"""


def _launch(command: list[str], output: Path) -> int:
    launched = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(output), *command], capture_output=True, text=True, check=False
    )
    if launched.returncode != 0:
        raise ServicesError(f"kafka: could not launch the broker: {launched.stderr.strip()}")
    return int(launched.stdout)


class KafkaBroker:
    """A single-node KRaft broker whose config, data, logs and pid live in `home`.

    `up()` after `down()` restarts it on the same port with the same data; a fresh home (or
    a port taken meanwhile) gets new ports and newly formatted storage. Tests use a second
    instance in a folder of their own to stop and restart a broker under load; the chaos suite
    runs one with `auto_create_topics=False`.

    `secure=True` adds a SASL_SSL listener on a port of its own (the third in `broker.ports`)
    with the user of `tls` (see `BrokerTls`); a broker or data from before that (no such
    listener, or no SCRAM credentials) is restarted, and its local data formatted anew.
    """

    def __init__(
        self, home: Path, *, jars: Path, auto_create_topics: bool = True, secure: bool = False
    ) -> None:
        self.home = home
        self.jars = jars
        # Off is the usual production setting: every topic must be created before use.
        self.auto_create_topics = auto_create_topics
        self.secure = secure
        self.tls = BrokerTls(home / "tls")
        self.credentials_mark = home / "scram.mark"
        self.data = home / "data"
        self.config = home / "server.properties"
        self.pidfile = home / "broker.pid"
        self.portfile = home / "broker.ports"

    def pid(self) -> int | None:
        if not self.pidfile.exists():
            return None
        pid = int(self.pidfile.read_text())
        return pid if pid_alive(pid) else None

    def _stored_ports(self) -> list[int]:
        return [int(p) for p in self.portfile.read_text().split()] if self.portfile.exists() else []

    def bootstrap(self) -> str | None:
        ports = self._stored_ports()
        return f"127.0.0.1:{ports[0]}" if ports else None

    def secure_bootstrap(self) -> str | None:
        """The SASL_SSL listener's address (None unless `secure` and started so)."""
        ports = self._stored_ports()
        return f"127.0.0.1:{ports[2]}" if self.secure and len(ports) > 2 else None

    def _credentials_stored(self) -> bool:
        mark = self.credentials_mark
        stored = mark.exists() and self.tls.password_file.exists()
        return stored and mark.read_text() == self.tls.credentials_mark()

    def _layout_current(self) -> bool:
        current = self.secure_bootstrap() is not None and self.tls.ready() and self._credentials_stored()
        return not self.secure or current

    def missing(self) -> str | None:
        """What `up()` would lack to start the broker (java; mvn while the jars are not here)."""
        if self.pid() is not None:
            return None
        fetched = (self.jars / ".complete").exists()
        keytool = self.secure and not self.tls.ready()
        return (
            _missing("java", JAVA_WHY)
            or (None if fetched else _missing("mvn", MVN_WHY))
            or (_missing("keytool", KEYTOOL_WHY) if keytool else None)
        )

    def _java(self, main: str, *args: str) -> list[str]:
        heap = os.environ.get("KAFKA_HEAP", "-Xms128m -Xmx512m")
        return [
            "java",
            *heap.split(),
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.jars}/*",
            main,
            *args,
        ]

    def _ports(self) -> tuple[list[int], bool]:
        """([broker port, controller port, the SASL_SSL port when secure], reuse the stored data?)"""
        stored = self._stored_ports()
        formatted = (self.data / "meta.properties").exists()
        kept = formatted and len(stored) >= 2 and all(_port_free(p) for p in stored[:2])
        ports = stored[:2] if kept else [_free_port(), _free_port()]
        if self.secure:
            ports.append(stored[2] if kept and len(stored) > 2 and _port_free(stored[2]) else _free_port())
        return ports, kept and (not self.secure or self._credentials_stored())

    def _write_config(self, ports: list[int]) -> None:
        port, controller_port = ports[:2]
        listeners = {"PLAINTEXT": port}
        if self.secure:
            listeners[LISTENER] = ports[2]
        advertised = ",".join(f"{name}://127.0.0.1:{p}" for name, p in listeners.items())
        settings = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners={advertised},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={''.join(f'{n}:{n},' for n in listeners)}CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.data}",
            "num.partitions=1",
            f"auto.create.topics.enable={str(self.auto_create_topics).lower()}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "log.retention.hours=24",
            *(self.tls.server_settings() if self.secure else []),
        ]
        self.config.touch(mode=0o600)  # the secured listener's passwords are in it
        self.config.chmod(0o600)
        self.config.write_text("\n".join(settings) + "\n")
        log4j = [
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = file",
            f"appender.file.fileName = {self.home / 'broker.log'}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = info",
            "rootLogger.appenderRef.file.ref = file",
            "logger.state.name = state.change.logger",
            "logger.state.level = warn",
        ]
        (self.home / "log4j2.properties").write_text("\n".join(log4j) + "\n")

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for f in (self.home / "broker.log", self.home / "broker.out"):
            if f.exists():
                tail = "\n".join(f.read_text(errors="replace").splitlines()[-lines:])
                text += f"--- {f} ---\n{tail}\n"
        return text

    def _format_storage(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        self.credentials_mark.unlink(missing_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        arguments = ["format", f"--cluster-id={cluster_id}", f"--config={self.config}"]
        scram = self.tls.format_arguments() if self.secure else []
        fmt = subprocess.run(
            self._java("kafka.tools.StorageTool", *arguments, *scram),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            output = f"{fmt.stdout}{fmt.stderr}"
            raise ServicesError(
                "kafka: formatting KRaft storage failed:\n"
                + (output.replace(self.tls.password(), "***") if scram else output)
            )
        if scram:
            self.credentials_mark.write_text(self.tls.credentials_mark())

    def _make_certificates(self) -> None:
        try:
            self.tls.ensure_certificates()
        except TlsError as exc:
            raise ServicesError(
                f"kafka: making the secured listener's certificates in {self.tls.folder}: {exc}"
            ) from None

    def up(self) -> str:
        bootstrap = self.bootstrap()
        if self.pid() is not None and bootstrap and kafka_problem(bootstrap) is None:
            if self._layout_current():
                return bootstrap
            print(
                f"kafka: restarting the broker in {self.home} to add its SASL_SSL listener", file=sys.stderr
            )
            self.down()
        _need("java", JAVA_WHY)
        fetch_kafka_jars(self.jars)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.secure:
            if not self.tls.ready():
                _need("keytool", KEYTOOL_WHY)
            self.tls.ensure_passwords()
        ports, reuse = self._ports()
        self._write_config(ports)
        # keytool's JVMs beside the format's: the broker needs the keystore only once it starts.
        with ThreadPoolExecutor(1) as pool:
            certificates = pool.submit(self._make_certificates) if self.secure else None
            if not reuse:
                self._format_storage()
            if certificates is not None:
                certificates.result()
        pid = _launch(self._java("kafka.Kafka", str(self.config)), self.home / "broker.out")
        self.pidfile.write_text(str(pid))
        self.portfile.write_text(" ".join(str(p) for p in ports))
        return self._wait_serving(pid, f"127.0.0.1:{ports[0]}")

    def _wait_serving(self, pid: int, bootstrap: str) -> str:
        deadline = time.monotonic() + KAFKA_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise ServicesError(f"kafka: broker exited\n{self.log_tail()}")
            if kafka_problem(bootstrap) is None:
                return bootstrap
            time.sleep(0.25)
        stop_pid(pid, signal.SIGKILL, 5)
        raise ServicesError(
            f"kafka: broker did not serve metadata within {KAFKA_START_TIMEOUT_S:.0f}s\n{self.log_tail()}"
        )

    def down(self) -> int | None:
        """Stop the broker (SIGTERM, then SIGKILL after 30s); returns its pid if it ran."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, signal.SIGTERM, 30)
        return pid

"""How every Kafka client of the project connects and is tuned: one `KafkaConnection`, and the
options each kind of client (producer, consumer, admin) is built with.

A plain `str` wherever a connection is taken means the bootstrap servers of a PLAINTEXT broker
with the defaults below. Problems name the environment variable of the setting (the CLI reads
them as `SAGA_KAFKA_<FIELD>`, see `SETTING_NAMES`), so that a message reads the same whether it
came from a process's settings or from code. The password is a `SecretStr`: it is in no repr,
no error and no log line.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from aiokafka import codec
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]

SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)
COMPRESSIONS: tuple[str, ...] = get_args(Compression)

# field -> the environment variable a process reads it from
SETTING_NAMES = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": "SAGA_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "SAGA_KAFKA_SASL_MECHANISM",
    "sasl_username": "SAGA_KAFKA_SASL_USERNAME",
    "sasl_password": "SAGA_KAFKA_SASL_PASSWORD",
    "ssl_cafile": "SAGA_KAFKA_SSL_CAFILE",
    "ssl_certfile": "SAGA_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "SAGA_KAFKA_SSL_KEYFILE",
    "ssl_check_hostname": "SAGA_KAFKA_SSL_CHECK_HOSTNAME",
    "client_id": "SAGA_KAFKA_CLIENT_ID",
    "linger_ms": "SAGA_KAFKA_LINGER_MS",
    "batch_size": "SAGA_KAFKA_BATCH_SIZE",
    "compression": "SAGA_KAFKA_COMPRESSION",
    "request_timeout_ms": "SAGA_KAFKA_REQUEST_TIMEOUT_MS",
    "session_timeout_ms": "SAGA_KAFKA_SESSION_TIMEOUT_MS",
}
PASSWORD_FILE = "SAGA_KAFKA_SASL_PASSWORD_FILE"

# What the producer is always built with: the relay's at-least-once, in order, no duplicates
# from its own retries. Not a setting.
PRODUCER_GUARANTEES: dict[str, Any] = {"acks": "all", "enable_idempotence": True}

_CODEC_PRESENT = {
    "gzip": codec.has_gzip,
    "snappy": codec.has_snappy,
    "lz4": codec.has_lz4,
    "zstd": codec.has_zstd,
}


class KafkaSettingsError(ValueError):
    """A connection's settings cannot work; the message names each wrong setting."""


def name(setting: str) -> str:
    return SETTING_NAMES.get(setting, setting)


@dataclass(frozen=True)
class KafkaConnection:
    """Where Kafka is, how to prove who we are to it, and the clients' tuning.

    Defaults suit a local PLAINTEXT broker and the project's latency: `linger_ms=1` (a batch
    waits at most 1 ms for more), `batch_size=16384` bytes per partition batch, no compression,
    `request_timeout_ms=30000`, `session_timeout_ms=6000` (a dead consumer's partitions move
    within 6 s; the broker's `group.min.session.timeout.ms` is 6000 by default).
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    client_id: str | None = None
    linger_ms: int = 1
    batch_size: int = 16384
    compression: Compression = "none"
    request_timeout_ms: int = 30_000
    session_timeout_ms: int = 6000

    def __post_init__(self) -> None:
        if isinstance(self.sasl_password, str):  # a plain string given in code: keep it secret too
            object.__setattr__(self, "sasl_password", SecretStr(self.sasl_password))
        problems = connection_problems(self)
        if problems:
            raise KafkaSettingsError("; ".join(f"{name(f)}: {p}" for f, p in problems))

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """Where and how, for log lines and errors: never the password."""
        how: str = self.security_protocol
        if self.uses_sasl:
            how = f"{how} {self.sasl_mechanism} as {self.sasl_username!r}"
        return f"Kafka at {self.bootstrap_servers} ({how})"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        except (ssl.SSLError, OSError) as exc:
            raise KafkaSettingsError(_ssl_file_problem(self, exc)) from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self, role: str) -> dict[str, Any]:
        """What every client takes: where, security, client id, request timeout."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id or f"saga-{role}",
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # connection_problems requires it
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options

    def producer_options(self, role: str = "producer", **overrides: Any) -> dict[str, Any]:
        """An idempotent producer with `acks=all`, whatever `overrides` say of the rest."""
        _refuse_weaker_guarantees(overrides)
        return {
            **self.client_options(role),
            "linger_ms": self.linger_ms,
            "max_batch_size": self.batch_size,
            "compression_type": None if self.compression == "none" else self.compression,
            **overrides,
            **PRODUCER_GUARANTEES,
        }

    def consumer_options(self, role: str = "consumer", **overrides: Any) -> dict[str, Any]:
        return {
            **self.client_options(role),
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": max(100, min(self.session_timeout_ms // 6, 3000)),
            **overrides,
        }

    def admin_options(self, role: str = "admin", **overrides: Any) -> dict[str, Any]:
        return {**self.client_options(role), **overrides}

    def with_bootstrap(self, bootstrap_servers: str) -> KafkaConnection:
        return replace(self, bootstrap_servers=bootstrap_servers)


def as_connection(kafka: str | KafkaConnection) -> KafkaConnection:
    """A connection from what a caller passed: bootstrap servers alone mean PLAINTEXT."""
    if isinstance(kafka, KafkaConnection):
        return kafka
    if not isinstance(kafka, str):
        raise TypeError(f"Kafka: expected bootstrap servers (str) or a KafkaConnection, got {kafka!r}")
    return KafkaConnection(bootstrap_servers=kafka)


def connection_problems(c: KafkaConnection) -> list[tuple[str, str]]:
    """(field, what is wrong) for each setting that cannot work, alone or with the others."""
    problems: list[tuple[str, str]] = []
    if not c.bootstrap_servers.strip():
        problems.append(("bootstrap_servers", "is empty; give host:port[,host:port...]"))
    if c.security_protocol not in SECURITY_PROTOCOLS:
        problems.append(("security_protocol", f"must be one of {', '.join(SECURITY_PROTOCOLS)}"))
    if c.sasl_mechanism not in SASL_MECHANISMS:
        problems.append(("sasl_mechanism", f"must be one of {', '.join(SASL_MECHANISMS)}"))
    problems += _sasl_problems(c) + _tls_problems(c) + _tuning_problems(c)
    return problems


def _sasl_problems(c: KafkaConnection) -> list[tuple[str, str]]:
    protocol = f"{name('security_protocol')} is {c.security_protocol}"
    if c.security_protocol.startswith("SASL_"):
        missing = []
        if not c.sasl_username:
            missing.append(("sasl_username", f"is not set; {protocol}, which logs in with a user name"))
        if c.sasl_password is None or not c.sasl_password.get_secret_value():
            missing.append(
                (
                    "sasl_password",
                    f"is not set (nor {PASSWORD_FILE}); {protocol}, which logs in with a password",
                )
            )
        return missing
    if c.sasl_username or c.sasl_password is not None:
        field_ = "sasl_username" if c.sasl_username else "sasl_password"
        return [(field_, f"is set, but {protocol}: use SASL_SSL (or SASL_PLAINTEXT) to log in")]
    return []


def _tls_problems(c: KafkaConnection) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    files = {"ssl_cafile": c.ssl_cafile, "ssl_certfile": c.ssl_certfile, "ssl_keyfile": c.ssl_keyfile}
    for setting, path in files.items():
        if path is None:
            continue
        if c.security_protocol not in ("SSL", "SASL_SSL"):
            problems.append(
                (
                    setting,
                    f"is set, but {name('security_protocol')} is {c.security_protocol}: use SSL or SASL_SSL",
                )
            )
        elif not Path(path).is_file():
            problems.append((setting, f"no readable file at {path}"))
    if c.ssl_keyfile and not c.ssl_certfile:
        problems.append(
            ("ssl_certfile", f"is not set, and {name('ssl_keyfile')} needs the certificate it is for")
        )
    return problems


def _tuning_problems(c: KafkaConnection) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    bounds = {
        "linger_ms": (0, 60_000),
        "batch_size": (1024, 16 * 1024 * 1024),
        "request_timeout_ms": (1000, 600_000),
        "session_timeout_ms": (6000, 1_800_000),
    }
    for setting, (low, high) in bounds.items():
        value = getattr(c, setting)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append((setting, f"must be a whole number from {low} to {high}, got {value!r}"))
    if c.compression not in COMPRESSIONS:
        problems.append(("compression", f"must be one of {', '.join(COMPRESSIONS)}, got {c.compression!r}"))
    elif c.compression != "none" and not _CODEC_PRESENT[c.compression]():
        problems.append(
            (
                "compression",
                f"{c.compression} needs the cramjam package in every process that produces or consumes: "
                f"pip install 'aiokafka[{c.compression}]'",
            )
        )
    if c.client_id is not None and not c.client_id.strip():
        problems.append(("client_id", "is empty; leave it unset for the default saga-<role>"))
    return problems


def _ssl_file_problem(c: KafkaConnection, exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    if c.ssl_certfile or c.ssl_keyfile:
        return (
            f"{name('ssl_cafile')}, {name('ssl_certfile')} or {name('ssl_keyfile')}: cannot be loaded "
            f"({reason}); give PEM files (the key unencrypted)"
        )
    return f"{name('ssl_cafile')}: {c.ssl_cafile} cannot be loaded as PEM CA certificates ({reason})"


def _refuse_weaker_guarantees(overrides: dict[str, Any]) -> None:
    for option, required in PRODUCER_GUARANTEES.items():
        if option in overrides and overrides[option] != required:
            raise KafkaSettingsError(
                f"producer option {option}={overrides[option]!r}: the producer is always built with "
                f"{option}={required!r} (no message lost or reordered by its retries)"
            )

"""The Kafka part of a process's settings: connection, security, client tuning, and the topics
`saga topics apply` creates. `KafkaSettings.kafka()` makes the one `KafkaConnection` every
client of the process is built from."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from outbox import (
    PASSWORD_FILE,
    SETTING_NAMES,
    Compression,
    KafkaConnection,
    KafkaSettingsError,
    SaslMechanism,
    SecurityProtocol,
)


class KafkaSettings(BaseModel):
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]"
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (TLS and a login: managed Kafka)"
    )
    kafka_sasl_mechanism: SaslMechanism = Field("PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(
        None, description=f"SASL password (or {PASSWORD_FILE}: a file holding it, e.g. a mounted secret)"
    )
    kafka_sasl_password_file: str | None = Field(
        None, description="File whose content (one line) is the SASL password"
    )
    kafka_ssl_cafile: str | None = Field(
        None,
        description="CA certificate(s) (PEM) that signed the brokers' certificates (default: the system's)",
    )
    kafka_ssl_certfile: str | None = Field(
        None, description="Client certificate (PEM), for brokers that ask one"
    )
    kafka_ssl_keyfile: str | None = Field(None, description="The client certificate's key (PEM, unencrypted)")
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to"
    )
    kafka_client_id: str | None = Field(
        None, description="Client id the brokers see (default: saga-<role>, e.g. saga-relay)"
    )
    kafka_linger_ms: int = Field(1, description="How long the producer waits to fill a batch (ms)")
    kafka_batch_size: int = Field(16384, description="Producer batch size per partition (bytes)")
    kafka_compression: Compression = Field("none", description="none, gzip, snappy, lz4 or zstd")
    kafka_request_timeout_ms: int = Field(
        30_000, description="How long a client waits for a broker's answer (ms)"
    )
    kafka_session_timeout_ms: int = Field(
        6000, description="A consumer silent this long leaves its group; its partitions move (ms)"
    )
    topic_partitions: int = Field(
        6, ge=1, le=10_000, description="Partitions of each topic `saga topics apply` creates"
    )
    topic_replication_factor: int = Field(
        1,
        ge=1,
        le=32,
        description="Replicas of each topic `saga topics apply` creates (3 on a production cluster)",
    )
    topic_min_insync_replicas: int = Field(
        1, ge=1, le=32, description="min.insync.replicas of those topics (2 with 3 replicas)"
    )

    def kafka(self) -> KafkaConnection:
        """The connection every Kafka client of this process is built from. Raises
        `KafkaSettingsError` naming each setting that cannot work."""
        password = self.kafka_sasl_password
        if self.kafka_sasl_password_file is not None:
            if password is not None:
                raise KafkaSettingsError(
                    f"{SETTING_NAMES['sasl_password']} and {PASSWORD_FILE} are both set: keep one"
                )
            password = SecretStr(read_password_file(self.kafka_sasl_password_file))
        values = {setting: getattr(self, f"kafka_{setting}") for setting in SETTING_NAMES}
        return KafkaConnection(**{**values, "sasl_password": password})


def read_password_file(path: str) -> str:
    """The password in `path`: its first line (a trailing newline is not part of it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSettingsError(f"{PASSWORD_FILE}: cannot read {path} ({type(exc).__name__})") from None
    password = text.splitlines()[0] if text.strip() else ""
    if not password:
        raise KafkaSettingsError(f"{PASSWORD_FILE}: {path} is empty")
    return password

"""How every Kafka client is built: one KafkaConnection, the settings that feed it, and the
password kept out of every repr, error and option list but the one aiokafka needs.

Pure: no broker is needed to build options or to check settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox import KafkaConnection, KafkaSettingsError, as_connection
from saga import Settings
from saga._settings import SettingsError

URL = "postgresql://u@localhost/db"
SECRET = "s3cret-Pa55word"


def secure(**more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": URL,
        "KAFKA_BOOTSTRAP_SERVERS": "broker.example:9093",
        "SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SAGA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SAGA_KAFKA_SASL_USERNAME": "saga",
        **more,
    }


def test_bootstrap_servers_alone_mean_a_plaintext_broker_with_the_defaults() -> None:
    kafka = as_connection("127.0.0.1:9092")
    assert kafka.security_protocol == "PLAINTEXT"
    options = kafka.producer_options("relay")
    assert options["bootstrap_servers"] == "127.0.0.1:9092"
    assert options["client_id"] == "saga-relay"
    assert (options["linger_ms"], options["max_batch_size"], options["compression_type"]) == (1, 16384, None)
    assert "ssl_context" not in options
    assert "sasl_plain_password" not in options


def test_the_producer_is_always_idempotent_with_acks_all() -> None:
    kafka = KafkaConnection(linger_ms=20, batch_size=65536, compression="gzip")
    options = kafka.producer_options("relay", linger_ms=5)
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert (options["linger_ms"], options["max_batch_size"], options["compression_type"]) == (
        5,
        65536,
        "gzip",
    )
    for weaker in ({"acks": 1}, {"enable_idempotence": False}):
        with pytest.raises(KafkaSettingsError, match="always built with"):
            kafka.producer_options("relay", **weaker)


def test_settings_feed_every_client_and_the_password_reaches_only_the_sasl_option() -> None:
    settings = Settings.load(
        secure(
            SAGA_KAFKA_SASL_PASSWORD=SECRET,
            SAGA_KAFKA_CLIENT_ID="billing",
            SAGA_KAFKA_REQUEST_TIMEOUT_MS="45000",
            SAGA_KAFKA_SESSION_TIMEOUT_MS="12000",
            SAGA_KAFKA_SSL_CHECK_HOSTNAME="false",
        )
    )
    kafka = settings.kafka()
    assert (kafka.bootstrap_servers, kafka.sasl_mechanism, kafka.ssl_check_hostname) == (
        "broker.example:9093",
        "SCRAM-SHA-512",
        False,
    )
    consumer = kafka.consumer_options("worker", group_id="g")
    assert consumer["client_id"] == "billing"
    assert (consumer["session_timeout_ms"], consumer["request_timeout_ms"]) == (12000, 45000)
    assert consumer["heartbeat_interval_ms"] < consumer["session_timeout_ms"] / 3
    assert consumer["sasl_plain_password"] == SECRET
    assert consumer["ssl_context"].check_hostname is False
    for text in (repr(kafka), kafka.describe(), repr(settings), str(settings.model_dump())):
        assert SECRET not in text


def test_the_password_can_come_from_a_file_and_not_from_both(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(f"{SECRET}\n")
    kafka = Settings.load(secure(SAGA_KAFKA_SASL_PASSWORD_FILE=str(secret))).kafka()
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == SECRET
    with pytest.raises(
        SettingsError, match="SAGA_KAFKA_SASL_PASSWORD and SAGA_KAFKA_SASL_PASSWORD_FILE"
    ) as both:
        Settings.load(secure(SAGA_KAFKA_SASL_PASSWORD_FILE=str(secret), SAGA_KAFKA_SASL_PASSWORD=SECRET))
    with pytest.raises(SettingsError, match=r"SAGA_KAFKA_SASL_PASSWORD_FILE: cannot read .*missing") as gone:
        Settings.load(secure(SAGA_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "missing")))
    assert SECRET not in str(both.value) + str(gone.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (secure(), "SAGA_KAFKA_SASL_PASSWORD: is not set (nor SAGA_KAFKA_SASL_PASSWORD_FILE)"),
        (
            {"SAGA_KAFKA_SASL_USERNAME": "saga"},
            "SAGA_KAFKA_SASL_USERNAME: is set, but SAGA_KAFKA_SECURITY_PROTOCOL",
        ),
        ({"SAGA_KAFKA_SSL_CAFILE": "/etc/ca.pem"}, "SAGA_KAFKA_SSL_CAFILE: is set, but"),
        (
            secure(SAGA_KAFKA_SASL_PASSWORD="x", SAGA_KAFKA_SSL_CAFILE="/nowhere/ca.pem"),
            "no readable file at",
        ),
        ({"SAGA_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SAGA_KAFKA_SECURITY_PROTOCOL: Input should be"),
        ({"SAGA_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SAGA_KAFKA_SASL_MECHANISM: Input should be"),
        ({"SAGA_KAFKA_LINGER_MS": "-1"}, "SAGA_KAFKA_LINGER_MS: must be a whole number from 0"),
        ({"SAGA_KAFKA_SESSION_TIMEOUT_MS": "1000"}, "SAGA_KAFKA_SESSION_TIMEOUT_MS: must be a whole number"),
        ({"SAGA_KAFKA_COMPRESSION": "brotli"}, "SAGA_KAFKA_COMPRESSION: Input should be"),
        ({"SAGA_KAFKA_COMPRESSION": "zstd"}, "pip install 'aiokafka[zstd]'"),
    ],
)
def test_a_setting_that_cannot_work_is_named_at_load(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load({"DATABASE_URL": URL, **env})
    assert named in str(caught.value)


def test_a_password_that_fails_validation_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(secure(SAGA_KAFKA_SASL_PASSWORD=SECRET, SAGA_KAFKA_SESSION_TIMEOUT_MS="oops"))
    assert SECRET not in str(caught.value)
    # A secret that is itself invalid is hidden too (here: not a string at all).
    with pytest.raises(SettingsError) as hidden:
        Settings.load({"DATABASE_URL": URL}, kafka_sasl_password=["a", SECRET])
    assert "SAGA_KAFKA_SASL_PASSWORD" in str(hidden.value)
    assert SECRET not in str(hidden.value)


def test_a_ca_file_that_is_no_certificate_is_named_at_load(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("this is no certificate\n")
    with pytest.raises(SettingsError, match=f"SAGA_KAFKA_SSL_CAFILE: {ca} cannot be loaded as PEM"):
        Settings.load(secure(SAGA_KAFKA_SASL_PASSWORD=SECRET, SAGA_KAFKA_SSL_CAFILE=str(ca)))

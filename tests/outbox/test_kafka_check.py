"""`check_kafka` on the shared broker's two listeners: each way of speaking the wrong protocol
or logging in wrong is a `KafkaConfigError` naming the setting; a port where nothing listens is
an outage (`BrokerUnavailableError`), to be waited out."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from outbox import BrokerUnavailableError, KafkaConfigError, KafkaConnection, check_kafka


def password(env: dict[str, str]) -> str:
    return Path(env["SAGA_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip()


def secured(env: dict[str, str], **more: object) -> KafkaConnection:
    values: dict[str, object] = {
        "bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
        "security_protocol": env["SAGA_KAFKA_SECURITY_PROTOCOL"],
        "sasl_mechanism": env["SAGA_KAFKA_SASL_MECHANISM"],
        "sasl_username": env["SAGA_KAFKA_SASL_USERNAME"],
        "sasl_password": password(env),
        "ssl_cafile": env["SAGA_KAFKA_SSL_CAFILE"],
    }
    return KafkaConnection(**{**values, **more})  # type: ignore[arg-type]


async def test_the_right_settings_pass_on_both_listeners(
    kafka_bootstrap: str, kafka_secure_env: dict[str, str]
) -> None:
    await check_kafka(KafkaConnection(bootstrap_servers=kafka_bootstrap))
    await check_kafka(secured(kafka_secure_env))
    await check_kafka(secured(kafka_secure_env, sasl_mechanism="PLAIN"))


@pytest.mark.parametrize(
    ("listener", "change", "named"),
    [
        ("secure", {"sasl_password": "wrong"}, "the login was refused; check SAGA_KAFKA_SASL_USERNAME"),
        ("secure", {"sasl_username": "nobody"}, "the login was refused"),
        ("secure", {"ssl_cafile": None}, "certificate is not trusted"),
        (
            "secure",
            {
                "security_protocol": "PLAINTEXT",
                "sasl_username": None,
                "sasl_password": None,
                "ssl_cafile": None,
            },
            "closed the connection at the first request",
        ),
        (
            "secure",
            {"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None},
            "SAGA_KAFKA_SECURITY_PROTOCOL",
        ),
        ("plain", {}, "SAGA_KAFKA_SECURITY_PROTOCOL is SASL_SSL"),
        (
            "plain",
            {"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None},
            "this listener takes no SASL login",
        ),
    ],
)
async def test_a_refused_setting_is_named(
    listener: str,
    change: dict[str, object],
    named: str,
    kafka_bootstrap: str,
    kafka_secure_env: dict[str, str],
) -> None:
    kafka = secured(kafka_secure_env, **change)
    if listener == "plain":
        kafka = kafka.with_bootstrap(kafka_bootstrap)
    with pytest.raises(KafkaConfigError) as refused:
        await check_kafka(kafka, timeout_s=10)
    assert named in str(refused.value)
    assert password(kafka_secure_env) not in str(refused.value)


async def test_a_port_where_nothing_listens_is_an_outage() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port} is unreachable"):
            await check_kafka(KafkaConnection(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=5)

"""The local broker's SASL_SSL listener, used by plain aiokafka clients built by hand: the
user `saga` with each mechanism, the local CA, and what a wrong password or CA looks like."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0


def client_options(env: dict[str, str], mechanism: str, **overrides: Any) -> dict[str, Any]:
    options = {
        "bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
        "security_protocol": env["SAGA_KAFKA_SECURITY_PROTOCOL"],
        "ssl_context": create_ssl_context(cafile=env["SAGA_KAFKA_SSL_CAFILE"]),
        "sasl_mechanism": mechanism,
        "sasl_plain_username": env["SAGA_KAFKA_SASL_USERNAME"],
        "sasl_plain_password": Path(env["SAGA_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
    }
    return {**options, **overrides}


def connect_options(env: dict[str, str], mechanism: str, **overrides: Any) -> dict[str, Any]:
    options = client_options(env, mechanism, **overrides)
    del options["bootstrap_servers"]
    return options


def host_port(env: dict[str, str]) -> tuple[str, int]:
    host, _, port = env["KAFKA_BOOTSTRAP_SERVERS"].rpartition(":")
    return host, int(port)


def test_the_settings_name_the_secured_listener_and_files_only_the_owner_reads(
    kafka_secure_env: dict[str, str],
) -> None:
    env = kafka_secure_env
    assert env["KAFKA_BOOTSTRAP_SERVERS"] != os.environ["KAFKA_BOOTSTRAP_SERVERS"]  # not the plain listener
    assert {k: v for k, v in env.items() if not k.endswith("FILE") and k != "KAFKA_BOOTSTRAP_SERVERS"} == {
        "SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SAGA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SAGA_KAFKA_SASL_USERNAME": "saga",
    }
    password = Path(env["SAGA_KAFKA_SASL_PASSWORD_FILE"])
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    assert len(password.read_text().strip()) >= 24
    assert Path(env["SAGA_KAFKA_SSL_CAFILE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    shown = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "services"), "env", "--secure"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.splitlines() == [
        f"export DATABASE_URL='{os.environ['DATABASE_URL']}'",
        *(f"export {name}='{value}'" for name, value in env.items()),
    ]
    assert password.read_text().strip() not in shown.stdout
    status = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "services"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (
        f"kafka SASL_SSL: {env['KAFKA_BOOTSTRAP_SERVERS']} (user saga, password in {password}, "
        in status.stdout
    )


async def test_a_message_goes_through_the_secured_listener_with_each_mechanism(
    kafka_secure_env: dict[str, str],
) -> None:
    env = kafka_secure_env
    topic = f"secured.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_options(env, "SCRAM-SHA-256"))
    producer = AIOKafkaProducer(**client_options(env, "SCRAM-SHA-512"), acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(topic, **client_options(env, "PLAIN"), auto_offset_reset="earliest")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        await producer.start()
        await consumer.start()
        try:
            await producer.send_and_wait(topic, b"over SASL_SSL")
            received = await asyncio.wait_for(consumer.getone(), DEADLINE_S)
            # The broker's metadata points every client at the secured listener, never the plain one.
            brokers = {(b.host, b.port) for b in producer.client.cluster.brokers()}
        finally:
            await consumer.stop()
            await producer.stop()
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    assert received.value == b"over SASL_SSL"
    assert brokers == {host_port(env)}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_certificate_passes_hostname_checking_for_both_local_names(
    kafka_secure_env: dict[str, str], host: str
) -> None:
    context = create_ssl_context(cafile=kafka_secure_env["SAGA_KAFKA_SSL_CAFILE"])
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 checks by default
    assert context.check_hostname
    options = connect_options(kafka_secure_env, "SCRAM-SHA-512", ssl_context=context)
    conn = await create_conn(host, host_port(kafka_secure_env)[1], **options)
    await asyncio.wait_for(conn.close(), DEADLINE_S)  # the TLS transport closed before the loop ends


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_a_wrong_password_fails_authentication(
    kafka_secure_env: dict[str, str], mechanism: str
) -> None:
    options = connect_options(kafka_secure_env, mechanism, sasl_plain_password="not-the-password")
    # What create_conn does, keeping the connection to wait until its TLS transport has closed.
    conn = AIOKafkaConnection(*host_port(kafka_secure_env), **options)
    with pytest.raises(SaslAuthenticationFailed) as raised:
        await conn.connect()
    await asyncio.wait_for(conn.close(), DEADLINE_S)
    assert f"SASL mechanism {mechanism}" in str(raised.value) or "Invalid username or password" in str(
        raised.value
    )


async def test_a_client_without_the_local_ca_fails_certificate_verification(
    kafka_secure_env: dict[str, str],
) -> None:
    options = connect_options(kafka_secure_env, "SCRAM-SHA-512", ssl_context=create_ssl_context())
    with pytest.raises(ssl.SSLCertVerificationError) as raised:
        await create_conn(*host_port(kafka_secure_env), **options)
    assert "certificate verify failed" in str(raised.value)

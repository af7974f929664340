"""A client's first look at Kafka: one connection made as the clients will make it, which tells
a setting Kafka refuses (credentials, certificate, protocol) from a broker that is away.

aiokafka itself retries a refused login as if the broker were down, and says why only in a log
line of its own; a process would wait forever. A refused setting is a `KafkaConfigError` that
names it (waiting will not help); an outage is a `BrokerUnavailableError` (worth waiting out).
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from outbox._errors import BrokerUnavailableError, KafkaConfigError
from outbox._kafka_connection import PASSWORD_FILE, KafkaConnection, name


async def check_kafka(kafka: KafkaConnection, timeout_s: float = 10.0) -> None:
    """Connect to the first bootstrap server that answers, log in, and ask its API versions.

    Raises `KafkaConfigError` when Kafka refuses the settings, `BrokerUnavailableError` when
    no bootstrap server answers."""
    options = kafka.client_options("check")
    last: BrokerUnavailableError | None = None
    for host, port in _addresses(kafka.bootstrap_servers):
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id=options["client_id"],
                    request_timeout_ms=int(timeout_s * 1000),
                    ssl_context=options.get("ssl_context"),
                    security_protocol=kafka.security_protocol,
                    sasl_mechanism=kafka.sasl_mechanism,
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                ),
                timeout_s,
            )
        except BaseException as exc:
            refused = refused_setting(kafka, exc)
            if refused is not None:
                raise refused from None
            if not isinstance(exc, (OSError, TimeoutError, KafkaError)):
                raise
            last = BrokerUnavailableError(kafka.bootstrap_servers, _first_line(exc))
            continue
        conn.close()
        return
    raise last or BrokerUnavailableError(kafka.bootstrap_servers, "no bootstrap server given")


def refused_setting(kafka: KafkaConnection, exc: BaseException) -> KafkaConfigError | None:
    """`exc` as a KafkaConfigError naming the setting, when it says Kafka refused the settings."""
    where = kafka.describe()
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == 62 or "hostname" in str(exc).lower():
            return KafkaConfigError(
                f"{where}: its certificate does not name the host we connect to ({exc.verify_message}); "
                f"connect by a name the certificate holds ({name('bootstrap_servers')}), or set "
                f"{name('ssl_check_hostname')}=false (not advised)"
            )
        return KafkaConfigError(
            f"{where}: its certificate is not trusted ({exc.verify_message}); set {name('ssl_cafile')} "
            "to the CA certificate (PEM) that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return KafkaConfigError(
            f"{where}: the TLS handshake failed ({exc.reason or exc}); is this a TLS listener? "
            f"{name('security_protocol')} is {kafka.security_protocol}"
        )
    if isinstance(exc, SaslAuthenticationFailed):
        return KafkaConfigError(
            f"{where}: the login was refused; check {name('sasl_username')} and {name('sasl_password')} "
            f"(or {PASSWORD_FILE}), and {name('sasl_mechanism')}"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return KafkaConfigError(f"{where}: {name('sasl_mechanism')} is not one this broker takes ({exc})")
    if isinstance(exc, IllegalSaslStateError):
        return KafkaConfigError(
            f"{where}: this listener takes no SASL login; {name('security_protocol')} is "
            f"{kafka.security_protocol}: use the listener's protocol (PLAINTEXT or SSL here)"
        )
    if kafka.uses_tls and isinstance(exc, ConnectionResetError):
        # Reset in the TLS handshake: a listener that does not speak TLS took the ClientHello
        # for a request, and hung up.
        return KafkaConfigError(
            f"{where}: the connection was reset in the TLS handshake; this listener does not speak "
            f"TLS? {name('security_protocol')} is {kafka.security_protocol}"
        )
    if isinstance(exc, KafkaConnectionError) and "closed" in str(exc).lower():
        # TCP connected, then the broker hung up at the first request: it speaks another protocol.
        return KafkaConfigError(
            f"{where}: the broker closed the connection at the first request; its listener wants "
            f"another {name('security_protocol')} (SSL or SASL_SSL for TLS, SASL_* to log in)"
        )
    return None


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    found = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        found.append((host.strip("[]") or server.strip(), int(port) if port.isdigit() else 9092))
    return found


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__

"""The local broker's SASL_SSL listener: a local CA and a broker certificate made once with
`keytool`, and the one SASL user `saga` with a password made once.

Everything lives in `<broker home>/tls` and is kept across restarts: `ca.pem` (what clients
trust), `broker.p12` (the broker's key and certificate chain), `saga.password` and
`keystore.password` (mode 0600).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

USER = "saga"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CLIENT_MECHANISM = "SCRAM-SHA-512"
LISTENER = "SASL_SSL"
KEYTOOL_WHY = (
    "it makes the local broker's TLS certificates once (it ships with Java beside `java`; install "
    "a Java 17 or newer that has it, e.g. `apt-get install openjdk-17-jdk-headless`)"
)
# Short-lived JVMs: the C1 compiler alone starts faster, and the keys are small.
_KEYTOOL = ["keytool", "-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]
_VALIDITY_DAYS = "3650"


class TlsError(Exception):
    """keytool failed; the message holds its output."""


def _write_secret(path: Path) -> None:
    """A random secret in a new file only its owner may read (kept when it exists)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(24) + "\n")


def _keytool(*args: str, cwd: Path) -> None:
    result = subprocess.run([*_KEYTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise TlsError(f"`keytool {args[0]}` failed:\n{result.stdout}{result.stderr}")


class BrokerTls:
    """The certificates and the SASL user of a broker's secured listener, under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = folder / "ca.pem"
        self.keystore = folder / "broker.p12"
        self.password_file = folder / f"{USER}.password"
        self.keystore_password_file = folder / "keystore.password"

    def ready(self) -> bool:
        return all(f.exists() for f in (self.ca, self.keystore, self.password_file))

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _keystore_password(self) -> str:
        return self.keystore_password_file.read_text().strip()

    def credentials_mark(self) -> str:
        """Names the SCRAM credentials stored at format time (not the password itself)."""
        return hashlib.sha256(f"{USER}:{self.password()}".encode()).hexdigest()[:16]

    def ensure_passwords(self) -> None:
        """The user's and the keystore's passwords, made when missing."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_secret(self.password_file)
        _write_secret(self.keystore_password_file)

    def ensure_certificates(self) -> None:
        """The CA and the broker's keystore, made when missing (keytool runs only then);
        after `ensure_passwords`."""
        if not (self.ca.exists() and self.keystore.exists()):
            self._make_certificates()

    def _make_certificates(self) -> None:
        work = self.folder / "making"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        store = ["-storetype", "PKCS12", "-storepass", self._keystore_password()]
        ca = ["-alias", "ca", "-keystore", "ca.p12", *store]
        broker = ["-alias", "broker", "-keystore", "broker.p12", *store]
        key = ["-keyalg", "EC", "-groupname", "secp256r1", "-validity", _VALIDITY_DAYS]
        # Two JVMs at a time where the steps do not depend on each other (each takes a second).
        self._in_pairs(
            work,
            (
                ["-genkeypair", *ca, *key, "-dname", "CN=saga local test CA"],
                ["-ext", "bc:c=ca:true", "-ext", "ku:c=keyCertSign,cRLSign"],
            ),
            (["-genkeypair", *broker, *key, "-dname", "CN=localhost"], []),
        )
        self._in_pairs(
            work,
            (["-exportcert", *ca, "-rfc", "-file", "ca.pem"], []),
            (["-certreq", *broker, "-file", "broker.csr"], []),
        )
        san = "SAN=IP:127.0.0.1,DNS:localhost"  # hostname checking passes for either name
        _keytool(
            "-gencert", *ca, "-rfc", "-infile", "broker.csr", "-outfile", "broker.pem",
            "-validity", _VALIDITY_DAYS, "-ext", san, "-ext", "ku:c=digitalSignature", "-ext", "eku=serverAuth",
            cwd=work,
        )  # fmt: skip
        chain = (work / "broker.pem").read_text() + (work / "ca.pem").read_text()
        (work / "chain.pem").write_text(chain)
        _keytool("-importcert", *broker, "-file", "chain.pem", "-noprompt", cwd=work)
        os.replace(work / "broker.p12", self.keystore)
        os.replace(work / "ca.pem", self.ca)  # last: its presence means all is made
        shutil.rmtree(work)

    @staticmethod
    def _in_pairs(work: Path, *steps: tuple[list[str], list[str]]) -> None:
        with ThreadPoolExecutor(len(steps)) as pool:
            futures = [pool.submit(_keytool, *args, *extra, cwd=work) for args, extra in steps]
        for future in futures:
            future.result()

    def server_settings(self) -> list[str]:
        """server.properties lines for the listener named SASL_SSL (its address set elsewhere)."""
        prefix = f"listener.name.{LISTENER.lower()}"
        password = self.password()
        plain = f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}="{password}";'
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        store = self._keystore_password()
        return [
            f"sasl.enabled.mechanisms={','.join(MECHANISMS)}",
            f"{prefix}.sasl.enabled.mechanisms={','.join(MECHANISMS)}",
            f"{prefix}.plain.sasl.jaas.config={plain}",
            f"{prefix}.scram-sha-256.sasl.jaas.config={scram}",
            f"{prefix}.scram-sha-512.sasl.jaas.config={scram}",
            f"{prefix}.ssl.keystore.type=PKCS12",
            f"{prefix}.ssl.keystore.location={self.keystore}",
            f"{prefix}.ssl.keystore.password={store}",
            f"{prefix}.ssl.key.password={store}",
        ]

    def format_arguments(self) -> list[str]:
        """StorageTool format arguments that store the SCRAM credentials of the user."""
        password = self.password()
        arguments = []
        for bits in (256, 512):
            arguments += ["--add-scram", f"SCRAM-SHA-{bits}=[name={USER},password={password}]"]
        return arguments

    def client_env(self, bootstrap: str) -> dict[str, str]:
        """The settings that make the project's processes use this listener at `bootstrap`."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_KAFKA_SECURITY_PROTOCOL": LISTENER,
            "SAGA_KAFKA_SASL_MECHANISM": CLIENT_MECHANISM,
            "SAGA_KAFKA_SASL_USERNAME": USER,
            "SAGA_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "SAGA_KAFKA_SSL_CAFILE": str(self.ca),
        }

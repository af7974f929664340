"""How a secured KafkaBroker treats a home from before its SASL_SSL listener, and a machine
without keytool: decided from the files alone (no broker runs here)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from saga.testing.services import KafkaBroker, LocalServices, ServiceDirs, ServicesError

pytestmark = pytest.mark.pure


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def older_home(home: Path, ports: list[int]) -> None:
    """What a broker started before the secured listener left: two ports, formatted data."""
    (home / "data").mkdir(parents=True)
    (home / "data" / "meta.properties").write_text("version=1\n")
    (home / "broker.ports").write_text(" ".join(str(p) for p in ports))


def made_tls(broker: KafkaBroker) -> None:
    """Stand-ins for what keytool makes once (these tests never start the broker)."""
    broker.tls.folder.mkdir(parents=True)
    for made in (broker.tls.ca, broker.tls.keystore):
        made.write_text("made\n")
    broker.tls.password_file.write_text("a-password\n")
    broker.tls.keystore_password_file.write_text("a-store-password\n")


def test_an_older_home_keeps_its_ports_gains_a_secured_one_and_is_formatted_for_the_scram_user(
    tmp_path: Path,
) -> None:
    plain, controller = free_ports(2)
    older_home(tmp_path, [plain, controller])
    broker = KafkaBroker(tmp_path, jars=tmp_path / "jars", secure=True)
    assert broker.secure_bootstrap() is None  # no third port: it has no SASL_SSL listener
    made_tls(broker)
    ports, reuse_data = broker._ports()
    assert ports[:2] == [plain, controller]
    assert len(ports) == 3
    assert ports[2] not in (plain, controller)
    assert not reuse_data  # its data has no SCRAM credentials
    (tmp_path / "broker.ports").write_text(" ".join(str(p) for p in ports))  # as `up()` stores them
    assert broker.secure_bootstrap() == f"127.0.0.1:{ports[2]}"
    broker.credentials_mark.write_text(broker.tls.credentials_mark())
    assert broker._ports() == ([plain, controller, ports[2]], True)
    broker.tls.password_file.write_text("another-password\n")  # credentials stored for another password
    assert broker._ports() == ([plain, controller, ports[2]], False)


def test_a_plain_broker_reads_a_secured_homes_ports_and_ignores_the_third(tmp_path: Path) -> None:
    ports = free_ports(3)
    older_home(tmp_path, ports)
    broker = KafkaBroker(tmp_path, jars=tmp_path / "jars")
    assert broker.bootstrap() == f"127.0.0.1:{ports[0]}"
    assert broker.secure_bootstrap() is None
    assert broker._ports() == (ports[:2], True)


def test_settings_for_the_secured_listener_exist_only_while_its_broker_runs(tmp_path: Path) -> None:
    local = LocalServices(ServiceDirs.under(tmp_path))
    older_home(local.dirs.kafka, free_ports(3))
    made_tls(local.broker)
    assert local.kafka_secure_env() is None


def test_without_keytool_a_secured_broker_names_it_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_folder, jars = tmp_path / "bin", tmp_path / "jars"
    bin_folder.mkdir()
    jars.mkdir()
    (jars / ".complete").write_text("ok\n")
    java = next(Path(p) / "java" for p in os.environ["PATH"].split(os.pathsep) if (Path(p) / "java").exists())
    (bin_folder / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_folder))
    assert KafkaBroker(tmp_path / "plain", jars=jars).missing() is None
    broker = KafkaBroker(tmp_path / "secured", jars=jars, secure=True)
    problem = broker.missing()
    assert problem is not None
    assert problem.startswith("`keytool` is not on PATH; it makes the local broker's TLS certificates once")
    with pytest.raises(ServicesError) as raised:
        broker.up()
    assert str(raised.value) == f"kafka: {problem}"
    assert not broker.tls.folder.exists()

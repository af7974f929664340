"""The local Postgres's settings (pg_stat_statements among them): a data folder made before a
setting was added gets it on the next `up`, and `up` says when the running server must restart
to load it. On files only: the "running server" is this test's own process, as postmaster.pid
names it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from saga.testing._local_services import PG_SETTINGS, add_settings
from saga.testing.services import ServiceDirs, main

pytestmark = pytest.mark.pure

OLD_CONF = "max_connections = 100\n#shared_preload_libraries = ''\t# (change requires restart)\n"
PRELOAD = "shared_preload_libraries = 'pg_stat_statements'"


def test_settings_missing_or_set_otherwise_are_appended_once(tmp_path: Path) -> None:
    conf = tmp_path / "postgresql.conf"
    conf.write_text(OLD_CONF + "shared_buffers = 256MB  # from an older `up`\n")
    assert add_settings(conf) == [
        "max_connections = 200",
        PRELOAD,
        f"pg_stat_statements.track = {PG_SETTINGS['pg_stat_statements.track']}",
    ]
    assert add_settings(conf) == []  # the last line for a name is the one that counts
    assert conf.read_text().count(PRELOAD) == 1


def a_running_server(tmp_path: Path, started: int) -> ServiceDirs:
    dirs = ServiceDirs.under(tmp_path)
    dirs.postgres.mkdir(parents=True)
    (dirs.postgres / "postgresql.conf").write_text(OLD_CONF)
    os.utime(dirs.postgres / "postgresql.conf", (started - 60, started - 60))
    lines = [
        str(os.getpid()),
        str(dirs.postgres),
        str(started),
        "5432",
        str(dirs.postgres),
        "",
        "1 2",
        "ready",
    ]
    (dirs.postgres / "postmaster.pid").write_text("\n".join(lines) + "\n")
    return dirs


def test_up_on_a_server_started_before_the_settings_adds_them_and_says_to_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # stands for Kafka: not started
    started = int(time.time()) - 10
    dirs = a_running_server(tmp_path, started)
    conf = dirs.postgres / "postgresql.conf"
    prog = "scripts/services"

    assert main(["up"], dirs=dirs, prog=prog) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"postgres: postgresql://postgres@/postgres?host={dirs.postgres}"
    assert PRELOAD in conf.read_text().splitlines()
    assert (
        f"postgres: {conf} changed after the server started (settings such as {PRELOAD} load only "
        f"at a start); restart it to load them, keeping its data: `{prog} down` then `{prog} up`"
    ) in err.splitlines()

    assert main(["up"], dirs=dirs, prog=prog) == 0  # until it restarts, every `up` says so
    assert "restart it to load them" in capsys.readouterr().err
    assert conf.read_text().count(PRELOAD) == 1

    pidfile = dirs.postgres / "postmaster.pid"  # restarted: it started after the file changed
    pidfile.write_text(pidfile.read_text().replace(f"\n{started}\n", f"\n{int(time.time()) + 1}\n"))
    assert main(["up"], dirs=dirs, prog=prog) == 0
    assert "restart" not in capsys.readouterr().err

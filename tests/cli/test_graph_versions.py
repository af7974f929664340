"""`saga graph NAME@VERSION` draws a version the app deploys beside the newest; NAME alone is
the newest; a version the app lacks is a clear error."""

from __future__ import annotations

from tests.cli.test_cli import Cli

APP = "tests.saga.versions_app:app_v1_v2"


async def test_graph_draws_the_version_asked_for(database_url: str, kafka_bootstrap: str) -> None:
    cli = Cli(database_url, kafka_bootstrap, "graphs")
    old = await cli("graph", "Transfer@1", app=APP)
    assert old.code == 0, old.describe()
    assert 'hold["hold<br/>' in old.stdout
    assert "risk_hold" not in old.stdout
    newest = await cli("graph", "Transfer", app=APP)
    assert newest.code == 0, newest.describe()
    assert 'risk_hold["risk_hold<br/>' in newest.stdout
    assert 'hold["hold' not in newest.stdout
    missing = await cli("graph", "Transfer@3", app=APP)
    assert missing.code == 1
    assert "the app has no version 3 of Transfer (it has: Transfer@1, Transfer@2)" in missing.stderr
    bad = await cli("graph", "Transfer@two", app=APP)
    assert bad.code == 2
    assert "write NAME or NAME@VERSION" in bad.stderr

"""Settings from environment variables: the ones not covered by a command's own test."""

from __future__ import annotations

from saga import Settings


def test_the_inbox_retention_comes_from_its_variable_and_defaults_to_a_week() -> None:
    url = "postgresql://u@localhost/db"
    assert Settings.load({"DATABASE_URL": url}).inbox_retention_s == 7 * 24 * 3600
    assert Settings.load({"DATABASE_URL": url, "SAGA_INBOX_RETENTION_S": "3600"}).inbox_retention_s == 3600

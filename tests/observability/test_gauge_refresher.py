"""A gauge refresh that fails is logged once, and the refresher keeps going."""

from __future__ import annotations

import logging

import pytest

from eventstore import GaugeRefresher
from tests.helpers import wait_for


async def test_a_failing_refresh_is_logged_once_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def refresh() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError("database away")

    refresher = GaugeRefresher("test", refresh, interval_s=0.01)
    with caplog.at_level(logging.INFO, logger="eventstore._metrics"):
        await refresher.start()
        await refresher.start()  # twice: one task
        await wait_for(lambda: len(calls) >= 5, 10, "the refreshes after the failures")
        await refresher.stop()
        await refresher.stop()
    failed = [r for r in caplog.records if "refreshing metrics failed" in r.getMessage()]
    assert len(failed) == 1
    assert "database away" in failed[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="metrics interval must be > 0"):
        GaugeRefresher("test", lambda: None, interval_s=0)  # type: ignore[arg-type,return-value]

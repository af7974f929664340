"""What a process says while a service it needs is away: little, and clearly."""

from __future__ import annotations

import logging
import time


class OutageLog:
    """One line when a service cannot be reached, one every `repeat_s` while that lasts, one
    when it answers again; the reason comes with each.

    `failed(service, reason)` after each failed try, `ended()` after a good one. A different
    service failing while one is away (Postgres came back, now Kafka is missing) ends the
    first outage and starts the second."""

    def __init__(self, logger: logging.Logger, retry_s: float, repeat_s: float = 60.0) -> None:
        self.logger = logger
        self.retry_s = retry_s
        self.repeat_s = repeat_s
        self.service: str | None = None
        self.since = 0.0
        self._said_at = 0.0

    @property
    def active(self) -> bool:
        return self.service is not None

    def lasted(self) -> float:
        return time.monotonic() - self.since if self.active else 0.0

    def failed(self, service: str, reason: str) -> None:
        now = time.monotonic()
        if service != self.service:
            self.ended()
            self.service, self.since, self._said_at = service, now, now
            self.logger.warning("%s is unreachable: %s; retrying every %gs", service, reason, self.retry_s)
        elif now - self._said_at >= self.repeat_s:
            self._said_at = now
            self.logger.warning(
                "%s is still unreachable after %.0fs: %s; retrying every %gs",
                service,
                now - self.since,
                reason,
                self.retry_s,
            )

    def ended(self, service: str | None = None) -> None:
        """The outage is over (only if it is `service`'s, when given)."""
        if self.service is not None and service in (None, self.service):
            self.logger.warning("%s is reachable again after %.1fs", self.service, self.lasted())
            self.service = None

"""The Postgres and Kafka a test run uses."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ServicesError(Exception):
    """The services cannot be found or started; the message says what to do."""


@dataclass(frozen=True)
class Services:
    database_url: str  # a server where the kit may create and drop databases
    kafka_bootstrap: str


def find_services() -> Services:
    url = os.environ.get("DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not url or not bootstrap:
        raise ServicesError(
            "saga.testing needs Postgres and Kafka: set DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS"
        )
    return Services(url, bootstrap)

"""One settings object per process, from environment variables and command-line flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from eventstore import sqlalchemy_url
from outbox import PASSWORD_FILE, SETTING_NAMES, KafkaSettingsError
from saga._process import EventLoop
from saga._settings_kafka import KafkaSettings

# field name -> environment variable
ENVIRONMENT = {
    "database_url": "DATABASE_URL",
    **{f"kafka_{setting}": variable for setting, variable in SETTING_NAMES.items()},
    "kafka_sasl_password_file": PASSWORD_FILE,
    "topic_partitions": "SAGA_TOPIC_PARTITIONS",
    "topic_replication_factor": "SAGA_TOPIC_REPLICATION_FACTOR",
    "topic_min_insync_replicas": "SAGA_TOPIC_MIN_INSYNC_REPLICAS",
    "topic_prefix": "SAGA_TOPIC_PREFIX",
    "relay_batch_size": "SAGA_RELAY_BATCH_SIZE",
    "relay_poll_interval_s": "SAGA_RELAY_POLL_INTERVAL_S",
    "relay_unpublishable_after_s": "SAGA_RELAY_UNPUBLISHABLE_AFTER_S",
    "relay_rebalance_interval_s": "SAGA_RELAY_REBALANCE_INTERVAL_S",
    "log_level": "SAGA_LOG_LEVEL",
    "app": "SAGA_APP",
    "event_loop": "SAGA_EVENT_LOOP",
    "slow_batch_s": "SAGA_SLOW_BATCH_S",
    "inbox_retention_s": "SAGA_INBOX_RETENTION_S",
    "log_format": "SAGA_LOG_FORMAT",
    "metrics_port": "SAGA_METRICS_PORT",
    "metrics_interval_s": "SAGA_METRICS_INTERVAL_S",
    "telemetry_setup": "SAGA_TELEMETRY_SETUP",
}


class SettingsError(Exception):
    pass


# Shown as hidden in every error; never printed.
SECRETS = frozenset({"kafka_sasl_password"})


class Settings(KafkaSettings):
    database_url: str = Field(description="Postgres URL (postgresql://user:pw@host:port/db)")
    topic_prefix: str = Field(
        "saga",
        description="Prefix of every topic name (letters, digits, '.', '_', '-'; at most 150 characters, "
        "so that every topic derived from it stays within Kafka's 249)",
        pattern=r"^[A-Za-z0-9._-]+$",
        max_length=150,
    )
    relay_batch_size: int = Field(500, ge=1, le=10_000, description="Outbox rows the relay sends per batch")
    relay_poll_interval_s: float = Field(1.0, gt=0, description="Relay poll interval when no NOTIFY arrives")
    relay_rebalance_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each relay looks at which relays run and takes up its share of the "
        "outbox buckets (so about how long a dead relay's share waits)",
    )
    relay_unpublishable_after_s: float = Field(
        300.0, gt=0, description="Rows of a topic the broker lacks this long are set aside in outbox_dead"
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level")
    app: str | None = Field(None, description="Import path of the App: package.module:attribute")
    slow_batch_s: float = Field(
        1.0, gt=0, description="A consumer batch running longer is redone record by record in the background"
    )
    inbox_retention_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="Consumers delete inbox rows older than this; a copy of a message arriving later "
        "would be handled again, so keep it above the topics' Kafka retention",
    )
    event_loop: EventLoop = Field(
        "auto", description="Workers' event loop: auto (uvloop when installed), asyncio or uvloop"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Workers' log lines: text, or json with saga id, step, attempt and trace id"
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port a worker serves Prometheus /metrics on (none: not served)"
    )
    metrics_interval_s: float = Field(
        5.0, gt=0, description="How often a served process refreshes the gauges that need a query"
    )
    telemetry_setup: str | None = Field(
        None,
        description="Function (package.module:function) a worker calls as it starts: set up the "
        "OpenTelemetry SDK and its exporter there",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        sqlalchemy_url(value)  # raises ValueError naming the URL when it is not Postgres
        return value

    @field_validator("telemetry_setup")
    @classmethod
    def _function_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError("must name a function as package.module:function")
        return value

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Flags (not None) win over environment variables, which win over defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {f: env[var] for f, var in ENVIRONMENT.items() if env.get(var)}
        values.update({k: v for k, v in flags.items() if v is not None})
        if "database_url" not in values:
            raise SettingsError("DATABASE_URL is not set (or pass --database-url)")
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "?"
                got = "a value, hidden" if field in SECRETS else repr(error.get("input"))
                problems.append(f"{ENVIRONMENT.get(field, field)}: {error['msg']} (got {got})")
            raise SettingsError("bad settings: " + "; ".join(problems)) from None
        try:
            settings.kafka().ssl_context()  # every Kafka setting together, and the files they name, now
        except KafkaSettingsError as exc:
            raise SettingsError(f"bad settings: {exc}") from None
        return settings

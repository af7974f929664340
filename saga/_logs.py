"""The worker processes' logs: text lines (the default), or one JSON object per line
(SAGA_LOG_FORMAT=json) that carries the saga, step, attempt and trace of what is being handled.

The runtime says what it is handling with `outbox.log_context` (around each message, and
each saga decided on); the JSON formatter adds those fields to every line logged meanwhile,
the lines of the user's own handlers and local steps too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from outbox import Envelope, LogContext, current_log_context, log_context, log_context_of, quiet_kafka_logs
from saga._decision import DeadlineDue, Input
from saga._settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came from `extra=` and is written too.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_LINE_KEYS = ("time", "level", "logger", "message", "exception", "stack")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the current
    `outbox.log_context` fields (saga_id, saga_type, step, attempt, trace_id, span_id, ...),
    the record's `extra=` fields, and the formatted traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(current_log_context())
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and name not in _LINE_KEYS:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(settings: Settings) -> None:
    """For the long-running processes (workers, relay, participants): to stderr, as text or JSON."""
    if settings.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=settings.log_level, handlers=[handler])
        logging.captureWarnings(True)  # a Python warning too is one JSON line, not free text
    else:
        logging.basicConfig(level=settings.log_level, format=TEXT_FORMAT)
    quiet_kafka_logs()  # with the broker away, aiokafka logs every failed try


def saga_log_context(saga_id: str, saga_type: str, given: Input, cause: Envelope | None) -> LogContext:
    """What a decision on one saga is about: the message it decides on (`cause`: a reply,
    which names the saga, its step and attempt), else the deadline that fell due."""
    if cause is not None:
        return log_context_of(cause)
    if isinstance(given, DeadlineDue):
        return log_context(
            saga_id=saga_id, saga_type=saga_type, step=given.step, phase=given.phase, attempt=given.attempt
        )
    return log_context(saga_id=saga_id, saga_type=saga_type)

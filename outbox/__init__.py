"""Transactional outbox, relay worker, Kafka consumer runtime with inbox and dead letters."""

from outbox._consumer import Consumer, ConsumerStats, Handler
from outbox._errors import MessageDecodeError, MessageTypeError, OutboxError, PublishError
from outbox._message import Envelope, MessageRegistry, child_traceparent, new_traceparent
from outbox._outbox import Outbox, outbox_migrations
from outbox._relay import Relay, RelayLag, RelayStats

__all__ = [
    "Consumer",
    "ConsumerStats",
    "Envelope",
    "Handler",
    "MessageDecodeError",
    "MessageRegistry",
    "MessageTypeError",
    "Outbox",
    "OutboxError",
    "PublishError",
    "Relay",
    "RelayLag",
    "RelayStats",
    "child_traceparent",
    "new_traceparent",
    "outbox_migrations",
]

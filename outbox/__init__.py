"""Transactional outbox, relay worker, Kafka consumer runtime with inbox and dead letters."""

from outbox._broker import KafkaLogThrottle, quiet_kafka_logs
from outbox._consumer import Consumer
from outbox._delivery import BatchHandler, ConsumerStats, Delivery, Handler
from outbox._errors import (
    BrokerUnavailableError,
    MessageDecodeError,
    MessageTypeError,
    OutboxError,
    PublishError,
)
from outbox._message import Envelope, MessageRegistry, child_traceparent, new_traceparent
from outbox._outbox import Outbox, Outgoing, PendingMessage, RelayLag, outbox_migrations
from outbox._relay import Relay, RelayStats

__all__ = [
    "BatchHandler",
    "BrokerUnavailableError",
    "Consumer",
    "ConsumerStats",
    "Delivery",
    "Envelope",
    "Handler",
    "KafkaLogThrottle",
    "MessageDecodeError",
    "MessageRegistry",
    "MessageTypeError",
    "Outbox",
    "OutboxError",
    "Outgoing",
    "PendingMessage",
    "PublishError",
    "Relay",
    "RelayLag",
    "RelayStats",
    "child_traceparent",
    "new_traceparent",
    "outbox_migrations",
    "quiet_kafka_logs",
]

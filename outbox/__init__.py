"""Transactional outbox, relay worker, Kafka consumer runtime with inbox and dead letters."""

from outbox._broker import KafkaLogThrottle, quiet_kafka_logs
from outbox._consumer import Consumer
from outbox._dead_letter_reader import DeadLetterReader, DeadLetterTopic, PartitionRange, Redrive, parse_ref
from outbox._dead_letter_record import DeadLetter
from outbox._delivery import BatchHandler, ConsumerStats, Delivery, Handler
from outbox._errors import (
    BrokerUnavailableError,
    DeadLetterError,
    KafkaConfigError,
    MessageDecodeError,
    MessageTypeError,
    OutboxError,
    PublishError,
    TopicPlanError,
    TopicsMissingError,
)
from outbox._kafka_check import check_kafka
from outbox._kafka_connection import (
    PASSWORD_FILE,
    SETTING_NAMES,
    Compression,
    KafkaConnection,
    KafkaSettingsError,
    SaslMechanism,
    SecurityProtocol,
    as_connection,
)
from outbox._log_context import LogContext, current_log_context, log_context, log_context_of
from outbox._message import Envelope, MessageRegistry, child_traceparent, new_traceparent
from outbox._outbox import Outbox, Outgoing, PendingMessage, RelayLag, outbox_migrations
from outbox._relay import Relay, RelayStats
from outbox._topic_admin import ChangeOutcome, apply_topic_plan, check_topics, describe_broker
from outbox._topic_plan import BrokerTopics, TopicChange, TopicPlan, TopicSpec, TopicState, plan_topics
from outbox._tracing import (
    caused_by,
    context_of,
    current_traceparent,
    ended,
    in_context,
    link_to,
    traceparent_of,
    tracer,
    tracing_on,
)

__all__ = [
    "PASSWORD_FILE",
    "SETTING_NAMES",
    "BatchHandler",
    "BrokerTopics",
    "BrokerUnavailableError",
    "ChangeOutcome",
    "Compression",
    "Consumer",
    "ConsumerStats",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterReader",
    "DeadLetterTopic",
    "Delivery",
    "Envelope",
    "Handler",
    "KafkaConfigError",
    "KafkaConnection",
    "KafkaLogThrottle",
    "KafkaSettingsError",
    "LogContext",
    "MessageDecodeError",
    "MessageRegistry",
    "MessageTypeError",
    "Outbox",
    "OutboxError",
    "Outgoing",
    "PartitionRange",
    "PendingMessage",
    "PublishError",
    "Redrive",
    "Relay",
    "RelayLag",
    "RelayStats",
    "SaslMechanism",
    "SecurityProtocol",
    "TopicChange",
    "TopicPlan",
    "TopicPlanError",
    "TopicSpec",
    "TopicState",
    "TopicsMissingError",
    "apply_topic_plan",
    "as_connection",
    "caused_by",
    "check_kafka",
    "check_topics",
    "child_traceparent",
    "context_of",
    "current_log_context",
    "current_traceparent",
    "describe_broker",
    "ended",
    "in_context",
    "link_to",
    "log_context",
    "log_context_of",
    "new_traceparent",
    "outbox_migrations",
    "parse_ref",
    "plan_topics",
    "quiet_kafka_logs",
    "traceparent_of",
    "tracer",
    "tracing_on",
]

"""Transactional outbox, relay worker, Kafka consumer runtime and inbox."""

__all__: list[str] = []

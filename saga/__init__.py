"""Saga orchestration on an event-sourced Postgres store and Kafka."""

__all__: list[str] = []

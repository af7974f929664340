"""Saga orchestration on an event-sourced Postgres store and Kafka."""

from eventstore import Migration, eventstore_migrations
from outbox import outbox_migrations
from saga._settings import Settings, SettingsError


def all_migrations() -> list[Migration]:
    """Every schema migration of the product, in the order `saga db upgrade` applies them."""
    return [*eventstore_migrations(), *outbox_migrations()]


__all__ = ["Settings", "SettingsError", "all_migrations"]

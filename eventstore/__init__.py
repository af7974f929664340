"""Append-only event store on Postgres."""

from eventstore._engine import create_engine, libpq_url, sqlalchemy_url

__all__ = ["create_engine", "libpq_url", "sqlalchemy_url"]

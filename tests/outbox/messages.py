from __future__ import annotations

from pydantic import BaseModel

from outbox import MessageRegistry


class Ping(BaseModel):
    key: str
    seq: int


class Unhandled(BaseModel):
    note: str


def make_registry() -> MessageRegistry:
    registry = MessageRegistry()
    registry.register(Ping, "test.ping")
    registry.register(Unhandled, "test.unhandled")
    return registry

"""Testing sagas (placeholder until the lead lands the package)."""

from saga.testing._services import Services, ServicesError, find_services

__all__ = ["Services", "ServicesError", "find_services"]

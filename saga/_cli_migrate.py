"""migrate commands (issue 15); filled in by its owner."""

from __future__ import annotations

from saga._cli_base import cli

__all__ = ["cli"]

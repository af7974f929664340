"""This checkout as a user would install it."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_source(dest: Path) -> Path:
    """A copy of the checkout without build leftovers (a stale build/ folder would leak into a
    wheel), local services or environments."""
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    return dest

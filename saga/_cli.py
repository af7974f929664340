"""The `saga` command line: workers, migrations and operator commands.

Every command takes `--json` (before the command: `saga --json ls`) for scripts; without it,
output is a table in a terminal. The commands live in `_cli_workers`, `_cli_operators` and
`_cli_dlq`; importing them adds them to the group.
"""

from __future__ import annotations

import sys

from saga import _cli_dlq, _cli_operators, _cli_workers
from saga._cli_base import cli

COMMAND_MODULES = (_cli_workers, _cli_operators, _cli_dlq)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)

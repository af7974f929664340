"""The `saga` command line: workers, migrations and operator commands.

Every command takes `--json` for scripts and `--wide` for whole columns, before or after the
command's name (`saga --json ls`, `saga ls --json`); without them, output is a table that
fits the terminal, and is never folded when stdout is not a terminal. The commands live in
`_cli_workers`, `_cli_operators` and `_cli_dlq`; importing them adds them to the group.
"""

from __future__ import annotations

import sys

from saga import _cli_deploy, _cli_dlq, _cli_migrate, _cli_operators, _cli_topics, _cli_workers
from saga._cli_base import cli

COMMAND_MODULES = (_cli_workers, _cli_operators, _cli_dlq, _cli_deploy, _cli_migrate, _cli_topics)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)

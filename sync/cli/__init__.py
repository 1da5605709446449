"""The command line: ``crm-esp-sync`` (also ``python -m sync``), one module per command group.

Every expected failure (bad input, missing key, unreachable database) is one line on stderr
and a non-zero exit; nothing is changed by a command that fails.
"""

from sync.cli import erasure, pulled, registry, rejects, runs, sandbox, setup, status  # noqa: F401  (they register the commands)
from sync.cli.app import cli, main

__all__ = ["cli", "main"]

"""``python -m sync``: the same command line as ``crm-esp-sync``."""

from sync.cli import main

main()

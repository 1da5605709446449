"""Run the test tiers and print the wall time of each at the end (``make check``, ``make test``).

``check``: ruff, mypy, then the unit tests and the shared provider suite on SQLite, in parallel: the
loop to run before every commit. ``test``: the same, then everything else (PostgreSQL and MariaDB,
real processes, the CLI, the browser): what CI runs. Every tier runs even after one fails, so one
run shows everything that is broken; the exit status is 1 when any failed. See tests/README.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYTEST = [sys.executable, "-m", "pytest", "-n", "auto", "--dist", "worksteal", "--durations=25", "-q"]

TIERS: dict[str, list[tuple[str, list[str]]]] = {
    "check": [
        ("ruff", [str(BIN / "ruff"), "check", "sync", "tests", "bench", "migrations"]),
        ("mypy", [str(BIN / "mypy")]),
        ("unit + SQLite provider suite", [*PYTEST, "--tier", "check"]),
    ],
}
TIERS["test"] = [*TIERS["check"], ("the rest: server databases, processes, CLI", [*PYTEST, "--tier", "rest"])]


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in TIERS:
        print(f"usage: python tests/tiers.py {'|'.join(TIERS)} [pytest arguments...]", file=sys.stderr)
        return 2
    name, extra = argv[0], argv[1:]
    results: list[tuple[str, float, int]] = []
    for label, command in TIERS[name]:
        print(f"\n=== {label}: {' '.join(command[2:] if command[0] == sys.executable else command)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([*command, *extra] if command[0] == sys.executable else command, cwd=ROOT)
        results.append((label, time.monotonic() - started, code))
    print(f"\n=== wall time per tier ({name})")
    for label, seconds, code in results:
        print(f"{label:<45} {seconds:8.1f} s  {'ok' if code == 0 else f'FAILED (exit {code})'}")
    total = sum(seconds for _, seconds, _ in results)
    print(f"{'total':<45} {total:8.1f} s")
    return 0 if all(code == 0 for _, _, code in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

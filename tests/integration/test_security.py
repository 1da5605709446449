"""Issue 24: security checks as tests.

- No credential follows a redirect to another host, in a whole run (the HTTP layer's own cases,
  every 3xx and https -> http, are in tests/unit/test_bad_input_catalogue.py).
- TLS verification is on by default, a certificate it refuses ends the run in one line before a
  byte of the request is sent, and no setting turns it off.
- CRM and user values with quotes, ``<script>``, rich markup and control characters reach neither
  SQL nor the status page nor the terminal as code (quotes in CRM ids and names through a run on
  every database: tests/integration/test_bad_input_catalogue.py, ``crm-quotes-in-*``).
- The HTTP endpoint binds to 127.0.0.1 unless told otherwise.
- Nothing secret in ``/metrics``, the status page, ``status --json``, any CLI output or the
  database: a connection registered through the CLI with a known password, synced, then grepped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sync import db
from sync.config import CrmSource, Settings, load_settings, parse_http_address
from sync.crm import crm_tables
from sync.engine.runner import run_connection
from sync.errors import ConfigurationError, SyncError
from sync.models import Base, Reject
from sync.providers.specs import PROVIDERS
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from sync.web import HttpEndpoint, status_page
from tests.cli_runner import Result, run_cli
from tests.integration.providers.conftest import FAST, World, make_world
from tests.integration.providers.harness import Harness, PostacellHarness
from tests.integration.providers.harness_postatr import PostatrHarness
from tests.integration.providers.harness_wapcrm import WapcrmHarness

SCRIPT = "<script>alert('x')</script>"
COLLECTOR = "collector.example.net"

# --- redirects ---------------------------------------------------------------------------------


class RedirectingTransport(httpx.AsyncBaseTransport):
    """The harness, except that its ``at``-th request (after any login) is answered by a redirect to
    another host; every request that reaches another host is recorded (there must be none)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, at: int, status: int) -> None:
        self.inner, self.at, self.status = inner, at, status
        self.seen = 0
        self.elsewhere: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == COLLECTOR:
            self.elsewhere.append(request)
            return httpx.Response(200, json={})
        self.seen += 1
        if self.seen == self.at:
            return httpx.Response(self.status, headers={"Location": f"https://{COLLECTOR}{request.url.path}"})
        return await self.inner.handle_async_request(request)


def secrets_of(harness: Harness) -> list[str]:
    return [value for key, value in harness.credentials.items() if key not in ("username",)]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("harness_class", [PostacellHarness, PostatrHarness, WapcrmHarness],
                         ids=["postacell-bearer-token", "postatr-token-in-body", "wapcrm-key-header"])
def test_a_run_sends_no_credential_to_another_host_after_a_redirect(engine: sa.Engine, harness_class: type[Any],
                                                                     status: int) -> None:
    harness: Harness = harness_class()
    harness.start()
    world = make_world(engine, harness, members=20)
    transport = RedirectingTransport(harness.transport(), at=2, status=status)
    result = asyncio.run(run_connection(world.settings, engine, engine, world.connection_id,
                                        transport_factory=lambda _: transport, http_policy=FAST))
    assert transport.elsewhere == []
    with engine.connect() as conn:
        reasons = list(conn.scalars(sa.select(Reject.reason)))
    said = [result.error or "", *reasons]
    assert any(f"to another host, {COLLECTOR}: not followed" in text for text in said), (result, reasons)
    for text in said:
        assert "\n" not in text and not any(secret in text for secret in secrets_of(harness))


# --- TLS ---------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store holds."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer:
    """An HTTPS listener with a self-signed certificate that counts handshakes that succeeded and
    the bytes it received after one (the request: headers, credentials)."""

    def __init__(self, directory: Path) -> None:
        cert, key = self_signed(directory)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = self.handshakes = self.received = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            raw.settimeout(2)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    self.handshakes += 1
                    self.received += len(tls.recv(65536))
            except (ssl.SSLError, OSError):
                raw.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tls_verification_is_on_by_default_and_a_refused_certificate_sends_nothing(engine: sa.Engine,
                                                                                    tmp_path: Path) -> None:
    """A run with the daemon's own HTTP client (no transport plugged in) against a provider whose
    certificate no trust store holds: one line naming the host, not a byte of the request sent."""
    server = TlsServer(tmp_path)
    try:
        harness = PostacellHarness()
        harness.start()
        harness.base_url = f"https://127.0.0.1:{server.port}/api/v1/"
        world = make_world(engine, harness, members=5)
        result = asyncio.run(run_connection(world.settings, engine, engine, world.connection_id, http_policy=FAST))
    finally:
        server.close()
    assert result.status == "failed"
    assert result.error is not None and "\n" not in result.error
    assert "the TLS certificate of 127.0.0.1 is not trusted (self-signed certificate" in result.error, result.error
    assert "nothing was sent" in result.error and PostacellHarness.credentials["password"] not in result.error
    assert server.connections >= 1 and server.handshakes == 0 and server.received == 0
    assert server.connections == 1            # not retried: a certificate does not become trusted


def test_no_setting_turns_tls_verification_off() -> None:
    words = ("verify", "insecure", "ssl", "tls", "cert")
    names = [f.name for f in dataclasses.fields(Settings)]
    names += [key for spec in PROVIDERS.values() for key in spec.all_settings]
    assert not [name for name in names if any(word in name.lower() for word in words)]
    for attempt in ("TLS_VERIFY", "SSL_VERIFY", "VERIFY", "INSECURE"):
        with pytest.raises(ConfigurationError, match=f"unknown setting: {attempt.lower()}"):
            load_settings({f"CRM_ESP_SYNC_{attempt}": "false"})
    for spec in PROVIDERS.values():
        with pytest.raises(SyncError):
            spec.validate_settings({"verify": False})
    sources = "\n".join(path.read_text(encoding="utf-8") for path in Path("sync").rglob("*.py")
                        if "sandbox" not in path.parts)
    assert "verify=False" not in sources and "CERT_NONE" not in sources and "check_hostname" not in sources


# --- values that must stay data ------------------------------------------------------------------


@pytest.fixture
def world_with_script(engine: sa.Engine) -> Iterator[World]:
    """A synced world whose CRM holds ``<script>`` in a tenant name, a member's name, a member id
    and an address (a reject whose reason quotes it), and a control character in a name."""
    harness = PostacellHarness()
    harness.start()
    world = make_world(engine, harness, members=10)
    t = crm_tables(CrmSource()).members
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET name = :name"), {"name": f"Acme {SCRIPT}"})
        conn.execute(t.insert().values(tenant_id="acme", id=f"M{SCRIPT}", email=f"{SCRIPT}@ornek.com.tr",
                                       first_name=SCRIPT, last_name="O'Brien\x1b[31m\x07", consent_status="ONAY",
                                       updated_at=world.now()))
        conn.execute(crm_tables(CrmSource()).memberships.insert().values(
            tenant_id="acme", member_id=f"M{SCRIPT}", list_id="L1", updated_at=world.now()))
    result = world.run()
    assert result.status in ("succeeded_with_rejects", "partial"), result.error
    yield world


def test_script_in_crm_values_is_escaped_on_the_status_page(world_with_script: World) -> None:
    page = status_page(world_with_script.engine)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    with world_with_script.engine.connect() as conn:
        reasons = list(conn.scalars(sa.select(Reject.reason).where(Reject.crm_member_id == f"M{SCRIPT}")))
    assert reasons and SCRIPT in reasons[0]               # the reason quotes it: the page had it to escape


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_endpoint_serves_the_page_escaped_and_forbids_scripts(world_with_script: World) -> None:
    endpoint = HttpEndpoint("127.0.0.1:0", world_with_script.engine, None, lambda: True).start()
    try:
        with urllib.request.urlopen(endpoint.url + "/", timeout=10) as answer:  # noqa: S310 (our loopback URL)
            page = answer.read().decode()
            csp = answer.headers["Content-Security-Policy"]
    finally:
        endpoint.close()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert "script-src" not in csp and "default-src 'none'" in csp


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_terminal_shows_markup_and_control_characters_as_text(daemon_env: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A tenant name with rich markup broke `tenant list` (MarkupError, 'internal error') and one
    with an escape sequence went to the terminal raw."""
    def cli(*args: str) -> Result:
        return run_cli(monkeypatch, capsys, daemon_env, *args)

    assert cli("tenant", "add", "acme", "--name", "[/red] Acme [bold]x\x1b]0;pwned\x07").code == 0
    listed = cli("tenant", "list")
    assert listed.code == 0, listed
    assert "[/red] Acme [bold]x\\x1b]0;pwned\\x07" in listed.out
    assert "\x1b" not in listed.out and "\x07" not in listed.out


@pytest.mark.parametrize("name", ["O'Reilly\"; DROP TABLE tenants; --", "x' OR '1'='1", "Robert'); --"])
def test_quotes_in_values_given_to_the_cli_are_stored_as_data(name: str, daemon_env: dict[str, str],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    def cli(*args: str) -> Result:
        return run_cli(monkeypatch, capsys, daemon_env, *args)

    assert cli("tenant", "add", "acme", "--name", name, "--crm-tenant-id", name).code == 0
    assert cli("tenant", "add", "beta").code == 0
    engine = db.create_engine(daemon_env["CRM_ESP_SYNC_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT slug, name, crm_tenant_id FROM tenants ORDER BY slug")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("acme", name, name), ("beta", "beta", "beta")]


# --- where the endpoint listens ------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_http_endpoint_binds_to_loopback_unless_told_otherwise(engine: sa.Engine) -> None:
    assert Settings().http_address == ""                               # off unless asked for
    assert parse_http_address("9108") == ("127.0.0.1", 9108)
    assert parse_http_address(":9108") == ("127.0.0.1", 9108)
    assert parse_http_address("0.0.0.0:9108") == ("0.0.0.0", 9108)    # noqa: S104 (told otherwise)
    for address in ("0", ":0"):
        endpoint = HttpEndpoint(address, engine, None, lambda: True)
        try:
            assert endpoint.server.server_address[0] == "127.0.0.1"
        finally:
            endpoint.server.server_close()
            endpoint.metrics.close()


# --- nothing secret anywhere -----------------------------------------------------------------------

PASSWORD = "Gizli-Şifre-ZX81-" + "4242"


def test_nothing_secret_in_metrics_status_page_status_json_cli_output_or_database(
        engine: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Register a connection with a known password through the CLI, sync, then look for the
    password (and the sandbox's tokens) in every output and every table."""
    from sync.crypto import generate_key

    sandbox = PostacellSandbox({"acme-api": PASSWORD}, seed=5)
    tokens: list[str] = []          # every access and refresh token the sandbox hands out
    issue = sandbox._issue

    def recording(*args: Any, **kwargs: Any) -> str:
        token = issue(*args, **kwargs)
        tokens.append(token)
        return token

    monkeypatch.setattr(sandbox, "_issue", recording)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json", "CRM_ESP_SYNC_LOG_LEVEL": "debug"}
    seed_crm(engine, CrmSource(), ["acme"], 20, seed=3)
    outputs: list[str] = []

    def cli(*args: str, stdin: str = "") -> Result:
        result = run_cli(monkeypatch, capsys, env, *args, stdin=stdin)
        outputs.append(result.out + result.err)
        return result

    with serve_in_thread(sandbox.app) as url:
        assert cli("tenant", "add", "acme").code == 0
        added = cli("connection", "add", "acme", "postacell", "--credentials", "-", "--base-url", f"{url}/api/v1/",
                    "--setting", "rate_per_s=0", stdin=json.dumps({"username": "acme-api", "password": PASSWORD}))
        assert added.code == 0, added
        once = cli("once")
        assert once.code in (0, 3), once            # 3: new rejects (the sample has a typo)
        for args in (("status",), ("status", "--json"), ("connection", "list"), ("rejects", "list"),
                     ("connection", "test", "acme", "postacell")):
            assert cli(*args).code in (0, 3), outputs[-1]
        endpoint = HttpEndpoint("127.0.0.1:0", engine, None, lambda: True).start()
        try:
            for path in ("/", "/metrics", "/healthz"):
                try:
                    with urllib.request.urlopen(endpoint.url + path, timeout=10) as answer:  # noqa: S310
                        outputs.append(answer.read().decode())
                except urllib.error.HTTPError as refused:        # /healthz: 503, no scheduler here
                    outputs.append(refused.read().decode())
        finally:
            endpoint.close()
    status = _json_document(outputs[4])         # tenant add, connection add, once, status, status --json
    assert status["connections"][0]["last_run"]["status"] in ("succeeded", "succeeded_with_rejects", "partial")
    assert tokens, "the sandbox issued no token: the check below would look for nothing"
    with engine.connect() as conn:
        tables = [repr(tuple(row)) for table in Base.metadata.sorted_tables for row in conn.execute(sa.select(table))]
    for secret in (PASSWORD, *tokens):
        for text in (*outputs, *tables):
            assert secret not in text, (secret, text[:300])
    assert any("crm_esp_sync_runs" in text for text in outputs)           # the outputs were the real ones


def _json_document(text: str) -> Any:
    """The JSON document `status --json` printed (stdout; log lines are on stderr, after it)."""
    document, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    return document

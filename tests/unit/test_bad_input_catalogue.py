"""Issue 24: the bad-input catalogue, part one: kinds that need no server (the fast tier).

Settings (``load_settings``, then the vault) and provider answers (the Postacell client over its
sandbox, one endpoint spoiled; the HTTP layer itself where no client call fits). Each case names its
kind (``settings-bad-cron``, ``answer-html-200``, ...) and ends in one clear line: an error whose
message is one line and says what was wrong (never the secret it was given), or the answer read as it
should be. Part two, CRM rows through a run and the command line, is
tests/integration/test_bad_input_catalogue.py.

Kinds covered fully elsewhere, referenced and not repeated here:
- a 10,000-character first name against what each provider's document allows (Euromsg,
  MailMasterPlus, Postacell, Postatr: the bound and its source in the reason; WapCRM sends no
  names): tests/unit/test_field_validation_<provider>.py,
  ``test_a_ten_thousand_character_first_name_is_refused_naming_the_field_and_our_bound``; through a
  whole run on every database: the integration catalogue's ``crm-10000-char-first-name``.
- addresses no document shows (emoji, IDN, long local part) per provider:
  tests/unit/field_validation_cases.py ``BAD_ADDRESSES``, run by each test_field_validation_*.py.
- an error envelope with 200 at each Postacell endpoint: tests/unit/test_malformed_answers.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync.config import load_settings
from sync.crypto import Vault, generate_key
from sync.errors import (
    AnswerLostError,
    AuthenticationError,
    ConfigurationError,
    FatalError,
    MalformedAnswerError,
    RetriableError,
    SyncError,
)
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellAuth, PostacellProvider
from sync.providers.wapcrm.client import SecretHeaderAuth
from sync.sandbox import PostacellSandbox, sandbox_transport

ENV = "CRM_ESP_SYNC_"
KEY_IN_CLEAR = "this-is-not-a-fernet-key-but-a-secret-all-the-same"


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingsCase:
    env: dict[str, str]
    says: str                       # a part of the one line
    toml: str | None = None         # a config file with this text (None: no file)


SETTINGS_CASES: dict[str, SettingsCase] = {
    "settings-unknown-key": SettingsCase({"DATABSE_URL": "sqlite:///x.db"}, "unknown setting: databse_url (known: "),
    "settings-unknown-key-in-toml": SettingsCase({}, "unknown setting: crm_memebers", toml='[crm]\nmemebers = "m"\n'),
    "settings-invalid-toml": SettingsCase({}, "is not valid TOML", toml="workers = [\n"),
    "settings-missing-config-file": SettingsCase({"CONFIG": "/nonexistent/crm-esp-sync.toml"},
                                                 "config file not found: /nonexistent/crm-esp-sync.toml"),
    "settings-url-not-a-url": SettingsCase({"DATABASE_URL": "crm-esp-sync.db"}, "database_url is not a database URL"),
    "settings-url-unsupported-database": SettingsCase({"DATABASE_URL": "oracle://db.example/crm"},
                                                      "database_url: 'oracle' databases are not supported"),
    "settings-url-malformed": SettingsCase({"CRM_DATABASE_URL": "postgresql://h:notaport/crm"},
                                           "crm_database_url is not a valid database URL"),
    "settings-bad-cron": SettingsCase({"DEFAULT_SCHEDULE": "61 2 * * *"}, "default_schedule is not a cron expression"),
    "settings-cron-with-three-fields": SettingsCase({"DEFAULT_SCHEDULE": "30 2 *"},
                                                    "default_schedule is not a cron expression"),
    "settings-unknown-timezone": SettingsCase({"TIMEZONE": "Mars/Olympus_Mons"},
                                              "timezone is not a known time zone: 'Mars/Olympus_Mons'"),
    "settings-seconds-not-a-number": SettingsCase({"LOOKBACK_SECONDS": "five minutes"},
                                                  "lookback_seconds must be a whole number of seconds"),
    "settings-negative-seconds": SettingsCase({"JITTER_SECONDS": "-1"}, "jitter_seconds is too small: -1"),
    "settings-zero-workers": SettingsCase({"WORKERS": "0"}, "workers is too small: 0"),
    "settings-bad-http-address": SettingsCase({"HTTP_ADDRESS": "localhost:metrics"},
                                              "http_address must look like 127.0.0.1:9108"),
    "settings-http-port-out-of-range": SettingsCase({"HTTP_ADDRESS": "127.0.0.1:70000"},
                                                    "http_address: port 70000 is out of range"),
    "settings-bad-log-level": SettingsCase({"LOG_LEVEL": "verbose"}, "log_level must be one of"),
    "settings-crm-relation-with-sql": SettingsCase({"CRM_MEMBERS": "crm_members; DROP TABLE sync_runs"},
                                                   "CRM relation name must be an identifier"),
    "settings-bad-change-xid-column": SettingsCase({"CRM_CHANGE_XID": "xid()"}, "crm_change_xid must be a column name"),
    "settings-master-key-and-file": SettingsCase({"MASTER_KEY": KEY_IN_CLEAR, "MASTER_KEY_FILE": "/etc/key"},
                                                 "set either master_key or master_key_file, not both"),
    "settings-missing-master-key-file": SettingsCase({"MASTER_KEY_FILE": "/nonexistent/master.key"},
                                                     "cannot read master key file /nonexistent/master.key"),
    "settings-bad-encryption-key": SettingsCase({"MASTER_KEY": KEY_IN_CLEAR},
                                                "master key #1 is not a Fernet key (32 url-safe base64-encoded "
                                                "bytes); create one with `crm-esp-sync keys generate`"),
    "settings-second-encryption-key-bad": SettingsCase({"MASTER_KEY": f"{generate_key()},{KEY_IN_CLEAR}"},
                                                       "master key #2 is not a Fernet key"),
}


@pytest.mark.parametrize("case", SETTINGS_CASES)
def test_bad_settings(case: str, tmp_path: Path) -> None:
    """Each bad setting fails at start in one line naming the setting, never echoing a key."""
    spec = SETTINGS_CASES[case]
    environ = {ENV + name: value for name, value in spec.env.items()}
    config_file = None
    if spec.toml is not None:
        config_file = tmp_path / "crm-esp-sync.toml"
        config_file.write_text(spec.toml, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        settings = load_settings(environ, config_file)
        Vault(settings.require_master_keys())          # what every command that needs a key does first
    message = caught.value.message
    assert spec.says in message, message
    assert "\n" not in message.strip(), message
    assert KEY_IN_CLEAR not in message


def test_good_settings_pass_the_same_checks() -> None:
    """The checks above refuse bad values only: the values they stand beside are taken."""
    settings = load_settings({ENV + "MASTER_KEY": generate_key(), ENV + "DEFAULT_SCHEDULE": "30 2 * * 1-5",
                              ENV + "HTTP_ADDRESS": "9108", ENV + "CRM_MEMBERS": "crm.members_v"})
    Vault(settings.require_master_keys())
    assert settings.crm.members == "crm.members_v" and settings.default_schedule == "30 2 * * 1-5"


# --- provider answers --------------------------------------------------------------------------

ACCOUNT, PASSWORD = "acme", "pw-123456"
BASE = "http://sandbox/api/v1/"
LIST_FILTER = "/api/v1/" + api.LIST_FILTER_PATH
FAST = HttpPolicy(max_attempts=2, backoff_base_s=0.001, backoff_max_s=0.001, max_body_bytes=1024 * 1024)
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


class ResetMidBody(httpx.AsyncByteStream):
    """Half a JSON body, then the peer resets the connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"count": 3, "results": [{"id": "6571a", "ti'
        raise httpx.ReadError("[Errno 104] Connection reset by peer")


class Endless(httpx.AsyncByteStream):
    """A body that never ends (a runaway export, a misrouted download), 256 KiB at a time."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"[" + b"0," * (128 * 1024)
        while True:
            self.sent += len(chunk)
            yield chunk


@dataclass
class Spoiler:
    """The sandbox, except that ``answer`` speaks for the list index (GET list-filter) when it
    returns a response; every request is recorded by host."""

    answer: Callable[[httpx.Request], httpx.Response | None]
    hosts: list[str]

    def transport(self, sandbox: PostacellSandbox) -> httpx.AsyncBaseTransport:
        inner = sandbox_transport(sandbox.app)

        async def handler(request: httpx.Request) -> httpx.Response:
            self.hosts.append(request.url.host)
            if request.url.host != "sandbox":
                return httpx.Response(200, json={"count": 0, "results": []})
            if request.method == "GET" and request.url.path.rstrip("/") == LIST_FILTER.rstrip("/"):
                spoiled = self.answer(request)
                if spoiled is not None:
                    return spoiled
            response = await inner.handle_async_request(request)
            await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=response.content)

        return httpx.MockTransport(handler)


def body(status: int, content: bytes, content_type: str = "application/json",
         **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, content=content, headers={"Content-Type": content_type, **headers})


def redirect_once(location: str, status: int = 302) -> Callable[[httpx.Request], httpx.Response | None]:
    """Redirect the first request to ``location``; the request that follows gets the real answer."""
    def answer(request: httpx.Request) -> httpx.Response | None:
        return None if "moved" in request.url.params else httpx.Response(status, headers={"Location": location})
    return answer


@dataclass(frozen=True)
class AnswerCase:
    answer: Callable[[httpx.Request], httpx.Response | None]
    error: type[SyncError] | None     # None: the answer is read and the call succeeds
    says: str = ""                    # a part of the one line
    stream: Callable[[], httpx.AsyncByteStream] | None = None


ANSWER_CASES: dict[str, AnswerCase] = {
    "answer-html-200": AnswerCase(body(200, HTML, "text/html; charset=utf-8"), MalformedAnswerError,
                                  "answered HTTP 200 with an HTML page instead of JSON"),
    "answer-empty-200": AnswerCase(body(200, b""), MalformedAnswerError, "answered HTTP 200 with an empty body"),
    "answer-truncated-json": AnswerCase(body(200, b'{"count": 3, "results": [{"id": "6571a", "ti'),
                                        MalformedAnswerError, "with truncated or invalid JSON (Unterminated string"),
    "answer-not-utf8": AnswerCase(body(200, b'{"count": 1, "results": [{"title": "B\xfclten"}]}'),
                                  MalformedAnswerError, "with a body that is not UTF-8 text"),
    "answer-array-for-object": AnswerCase(body(200, b'[{"id": "6571a"}]'), MalformedAnswerError,
                                          "with a JSON array where an object was expected"),
    "answer-error-envelope-200": AnswerCase(body(200, b'{"detail": "Sunucu hatas\xc4\xb1"}'), MalformedAnswerError,
                                            "with an error envelope: Sunucu hatası"),
    "answer-xml-labelled-json": AnswerCase(body(200, b'<?xml version="1.0"?><error>maintenance</error>'),
                                           MalformedAnswerError, "with an XML document instead of JSON"),
    "answer-xml-content-type": AnswerCase(body(200, b"<error>maintenance</error>", "application/xml"),
                                          MalformedAnswerError, "with an XML document instead of JSON"),
    "answer-json-labelled-text-plain": AnswerCase(body(200, b'{"count": 0, "next": null, "results": []}',
                                                       "text/plain"), None),
    "answer-json-labelled-html": AnswerCase(body(200, b'{"count": 0, "next": null, "results": []}', "text/html"),
                                            None),
    "answer-text-labelled-html": AnswerCase(body(200, b"Service Unavailable", "text/html"), MalformedAnswerError,
                                            "with an HTML page instead of JSON"),
    "answer-connection-reset-mid-body": AnswerCase(
        lambda _: httpx.Response(200, headers={"Content-Type": "application/json"}, stream=ResetMidBody()),
        RetriableError, "GET sandbox/api/v1/email/list-filter/ failed 2 times, last: ReadError"),
    "answer-huge-body": AnswerCase(
        lambda _: httpx.Response(200, headers={"Content-Type": "application/json"}, stream=Endless()),
        MalformedAnswerError, "answered HTTP 200 with a body over 1,048,576 bytes; not read further"),
    "answer-500-every-time": AnswerCase(body(500, HTML, "text/html"), RetriableError,
                                        "failed 2 times, last: HTTP 500"),
    "answer-429-retry-after-a-day": AnswerCase(body(429, b"{}", **{"Retry-After": "86400"}), RetriableError,
                                               "is throttled for 86400 s (HTTP 429)"),
    "answer-401-after-a-fresh-login": AnswerCase(body(401, b'{"detail": "Invalid token."}'), AuthenticationError,
                                                 "was refused (HTTP 401)"),
    "answer-redirect-to-another-host": AnswerCase(redirect_once("https://collector.example.net/steal"), FatalError,
                                                  "was redirected (HTTP 302) to another host, collector.example.net: "
                                                  "not followed"),
    "answer-307-to-another-host": AnswerCase(redirect_once("http://sandbox.example.net/api/v1/email/list-filter/",
                                                           307), FatalError, "to another host, sandbox.example.net"),
    "answer-redirect-to-another-port": AnswerCase(redirect_once("http://sandbox:8080/api/v1/email/list-filter/"),
                                                  FatalError, "to another host, sandbox"),
    "answer-redirect-loop": AnswerCase(lambda r: httpx.Response(302, headers={"Location": str(r.url)}), FatalError,
                                       "was redirected more than 5 times"),
    "answer-redirect-on-the-same-host": AnswerCase(redirect_once("/api/v1/email/list-filter/?moved=1"), None),
}


def run_case(case: AnswerCase) -> tuple[Any, list[str]]:
    sandbox = PostacellSandbox({ACCOUNT: PASSWORD})
    spoiler = Spoiler(case.answer, [])

    async def scenario() -> Any:
        async with httpx.AsyncClient(transport=spoiler.transport(sandbox), follow_redirects=True) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=FAST,
                                auth=PostacellAuth(ACCOUNT, PASSWORD))
            return await PostacellProvider(http).find_lists("Bülten")
    return asyncio.run(scenario()), spoiler.hosts


@pytest.mark.parametrize("case", ANSWER_CASES)
def test_bad_provider_answers(case: str) -> None:
    spec = ANSWER_CASES[case]
    if spec.error is None:
        found, hosts = run_case(spec)
        assert found == [] or isinstance(found, list | dict), found
        assert set(hosts) == {"sandbox"}
        return
    hosts: list[str] = []
    with pytest.raises(spec.error) as caught:
        _, hosts = run_case(spec)
    message = caught.value.message
    assert spec.says in message, message
    assert "\n" not in message and "Traceback" not in message and "JSONDecodeError" not in message
    assert PASSWORD not in message
    assert "collector.example.net" not in hosts and "sandbox.example.net" not in hosts


def test_a_huge_body_is_not_read_past_the_bound() -> None:
    """``answer-huge-body`` stops reading: about the bound is read from the endless stream, not more."""
    endless = Endless()
    case = AnswerCase(lambda _: httpx.Response(200, headers={"Content-Type": "application/json"}, stream=endless),
                      MalformedAnswerError)
    with pytest.raises(MalformedAnswerError):
        run_case(case)
    assert FAST.max_body_bytes < endless.sent <= FAST.max_body_bytes + 2 * 256 * 1024 + 16


def test_a_write_whose_answer_breaks_off_mid_body_is_not_sent_again() -> None:
    """``answer-connection-reset-mid-body`` on a write: it may have been applied, so it is not repeated."""
    sent: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return httpx.Response(201, headers={"Content-Type": "application/json"}, stream=ResetMidBody())

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            http = ProviderHTTP(client, provider="wapcrm", base_url="https://api.example.com/", policy=FAST)
            await http.request("POST", "contacts", json={"email": "a@example.com"})

    with pytest.raises(AnswerLostError) as caught:
        asyncio.run(scenario())
    assert sent == ["POST"]
    assert caught.value.message == ("wapcrm: POST api.example.com/contacts got no usable answer (ReadError) and may "
                                    "have been applied; not sent again")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_no_credential_follows_a_redirect_to_another_host(status: int) -> None:
    """A secret in its own header (WapCRM) and a token in the body (Postatr's TokenSlot) stay here:
    httpx follows a redirect with every header but Authorization, and a 307/308 with the body."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, dict(request.headers), request.content))
        if request.url.host == "api.example.com":
            return httpx.Response(status, headers={"Location": "https://collector.example.net/steal"})
        return httpx.Response(200, json={"ok": True})

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True) as client:
            http = ProviderHTTP(client, provider="wapcrm", base_url="https://api.example.com/", policy=FAST,
                                auth=SecretHeaderAuth("X-Secret-Key", "sk-live-4242"))
            await http.request("POST", "contacts/search", json={"token": "tok-4242"}, idempotent=True)

    with pytest.raises(FatalError, match=re.escape("to another host, collector.example.net: not followed")):
        asyncio.run(scenario())
    assert [host for host, _, _ in seen] == ["api.example.com"]


def test_a_redirect_from_https_to_http_on_the_same_host_is_not_followed() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            return httpx.Response(301, headers={"Location": "http://api.example.com/contacts"})
        raise AssertionError("a request went out in clear text")

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            http = ProviderHTTP(client, provider="wapcrm", base_url="https://api.example.com/", policy=FAST,
                                auth=SecretHeaderAuth("X-Secret-Key", "sk-live-4242"))
            await http.request("GET", "contacts")

    with pytest.raises(FatalError, match=re.escape("to another host, api.example.com")):
        asyncio.run(scenario())


def test_the_catalogue_counts_at_least_thirty_kinds_of_its_own() -> None:
    from tests.integration.test_bad_input_catalogue import CLI_CASES, CRM_CASES

    kinds = [*SETTINGS_CASES, *ANSWER_CASES, *CRM_CASES, *CLI_CASES]
    assert len(kinds) == len(set(kinds)) >= 30


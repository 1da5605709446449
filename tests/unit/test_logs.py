"""No secret reaches log output: not as a field, not inside a message, not in a traceback."""

from __future__ import annotations

import io
import json

import structlog

from sync.config import Secret
from sync.crypto import Vault, generate_key
from sync.logs import SECRETS, configure_logging


def render(fmt: str, emit) -> str:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    configure_logging("debug", fmt, stream)
    emit(structlog.get_logger("test"))
    structlog.reset_defaults()
    return stream.getvalue()


def test_registered_secret_is_removed_everywhere_in_json_and_console() -> None:
    vault = Vault([Secret(generate_key())])
    vault.encrypt({"password": "Gizli-Parola-123"})   # registers the value, as a decrypt would

    def emit(log) -> None:  # type: ignore[no-untyped-def]
        log.info("login failed for Gizli-Parola-123", detail={"nested": ["x Gizli-Parola-123 y"]})
        try:
            raise RuntimeError("server said: bad password Gizli-Parola-123")
        except RuntimeError:
            log.exception("provider call failed")

    for fmt in ("json", "console"):
        output = render(fmt, emit)
        assert "Gizli-Parola-123" not in output
        assert "***" in output


def test_fields_named_like_secrets_are_masked_even_when_unregistered() -> None:
    output = render("json", lambda log: log.info("calling", api_key="k-unregistered-1", password="p-2",
                                                 access_token="t-3", client_secret="s-4", user="ali"))
    event = json.loads(output)
    assert event["user"] == "ali"
    for field in ("api_key", "password", "access_token", "client_secret"):
        assert event[field] == "***"


def test_url_userinfo_is_stripped() -> None:
    output = render("json", lambda log: log.info("GET http://mmp-user:mmp-pass@restapi.emesz.com/list/1"))
    assert "mmp-pass" not in output and "restapi.emesz.com/list/1" in output


def test_context_variables_are_in_every_line() -> None:
    def emit(log) -> None:  # type: ignore[no-untyped-def]
        structlog.contextvars.bind_contextvars(run_id="r1", tenant="acme", provider="postacell")
        log.info("hello")
        structlog.contextvars.clear_contextvars()

    event = json.loads(render("json", emit))
    assert (event["run_id"], event["tenant"], event["provider"]) == ("r1", "acme", "postacell")


def test_scrub_covers_the_longest_secret_first() -> None:
    SECRETS.register("abcd", "abcdefgh")
    assert SECRETS.scrub("x abcdefgh y") == "x *** y"

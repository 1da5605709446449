"""Issue 22, the shared reading plumbing: which readings changed, what is stored, which request
readings `connection test` tries and in what order, and `sandbox serve --dialect`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import sync.cli.sandbox
from sync.cli.sandbox import dialect_of
from sync.errors import ConfigurationError, FatalError, ProviderError, RejectedRow
from sync.ops.connection_test import Check, _failed
from sync.providers.readings import (
    MAX_REQUEST_VARIANTS,
    ReadingChange,
    ReadingLog,
    changed_readings,
    merged_readings,
    reading_changes,
    readings_of,
    request_fallbacks_of,
    request_variants,
    variant_text,
)
from tests.cli_runner import Result

Cli = Callable[..., Result]


def _log(*notes: tuple[str, str]) -> ReadingLog:
    log = ReadingLog()
    for endpoint, reading in notes:
        log.note(endpoint, reading)
    return log


# --- changes and what is stored --------------------------------------------------------------


def test_nothing_stored_yet_is_no_change() -> None:
    assert reading_changes(None, _log(("GET list", "array"))) == []
    assert reading_changes({}, _log(("GET list", "array"))) == []


def test_a_reading_other_than_the_stored_one_is_one_change() -> None:
    stored = {"GET list": "array", "GET report": "envelope"}
    log = _log(("GET list", "id-keyed object"), ("GET report", "envelope"), ("GET new", "bare"))
    assert reading_changes(stored, log) == [ReadingChange("GET list", "array", "id-keyed object")]
    assert changed_readings(stored, log.as_dict()) == ["GET list: answered as 'id-keyed object', was 'array'"]


def test_a_change_within_the_run_is_one_line_and_never_counted_twice() -> None:
    """Stored A; the run sees A, then B: one change (A -> B), not also "stored A, now B"."""
    log = _log(("GET list", "array"), ("GET list", "id-keyed object"), ("GET list", "id-keyed object"))
    assert reading_changes({"GET list": "array"}, log) == [ReadingChange("GET list", "array", "id-keyed object")]
    # stored B, the run sees A then B: two changes, each said once
    assert reading_changes({"GET list": "id-keyed object"}, log) == [
        ReadingChange("GET list", "id-keyed object", "array"), ReadingChange("GET list", "array", "id-keyed object")]


def test_merged_readings_keep_endpoints_not_read_this_time() -> None:
    assert merged_readings({"GET a": "x", "GET b": "y"}, {"GET b": "z", "GET c": "w"}) == {
        "GET a": "x", "GET b": "z", "GET c": "w"}
    assert merged_readings(None, {}) == {}


def test_readings_of_a_provider_without_a_log_is_none() -> None:
    class Plain:
        readings: ClassVar[dict[str, str]] = {"not": "a log"}

    class Logged:
        readings = ReadingLog()

    assert readings_of(Plain()) is None and readings_of(object()) is None
    assert readings_of(Logged()) is Logged.readings


# --- request readings ------------------------------------------------------------------------


class TwoSettings:
    name = "example"
    request_fallbacks: ClassVar[dict[str, tuple[str, ...]]] = {"api_key_in": ("path", "query"),
                                                                "params_in": ("query", "body")}


def test_request_variants_start_with_the_connection_s_values_then_the_documents_order() -> None:
    fallbacks = request_fallbacks_of(TwoSettings)
    assert request_variants(fallbacks, {}) == [
        {"api_key_in": "path", "params_in": "query"}, {"api_key_in": "path", "params_in": "body"},
        {"api_key_in": "query", "params_in": "query"}, {"api_key_in": "query", "params_in": "body"}]
    assert request_variants(fallbacks, {"api_key_in": "query"})[:2] == [
        {"api_key_in": "query", "params_in": "query"}, {"api_key_in": "query", "params_in": "body"}]
    assert variant_text({"api_key_in": "query", "params_in": "body"}) == "api_key_in=query, params_in=body"


def test_request_variants_are_bounded_and_a_provider_without_any_has_one() -> None:
    many = {f"s{n}": ("a", "b") for n in range(6)}
    assert len(request_variants(many, {})) == MAX_REQUEST_VARIANTS
    assert request_variants(request_fallbacks_of(object()), {}) == [{}]


@pytest.mark.parametrize("declared", [{"api_key_in": "path"}, {"api_key_in": ()}, ["api_key_in"]])
def test_a_malformed_request_fallbacks_is_one_line(declared: Any) -> None:
    class Wrong:
        name = "example"
        request_fallbacks = declared

    with pytest.raises(ConfigurationError, match="example: request_fallbacks"):
        request_fallbacks_of(Wrong)


def test_only_a_provider_error_of_404_or_405_makes_a_check_try_another_request_reading() -> None:
    def check(exc: BaseException) -> bool:
        return _failed("lists", exc).not_in_this_reading

    assert check(ProviderError("x", status_code=404)) and check(FatalError("x", status_code=405))
    assert not check(ProviderError("x", status_code=401)) and not check(RejectedRow("x", status_code=400))
    assert not check(ValueError("404"))
    assert not Check("lists", True, "read", status_code=404).not_in_this_reading


# --- sandbox serve --dialect -----------------------------------------------------------------


DIALECTS = {"euromsg": ("envelope", "bare"), "mailmasterplus": ("document", "negative"), "postacell": (),
            "postatr": ("document", "asmx-d"), "wapcrm": ()}


@pytest.fixture
def dialects(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, ...]]:
    monkeypatch.setattr(sync.cli.sandbox, "sandbox_dialects", lambda: DIALECTS)
    return DIALECTS


def test_dialect_of_picks_the_provider_s_first_and_refuses_another_provider_s(dialects: Any) -> None:
    assert dialect_of("postatr", None) == {"dialect": "document"}
    assert dialect_of("euromsg", "bare") == {"dialect": "bare"}
    assert dialect_of("postacell", None) == {}                       # one reading: no dialect= at all
    with pytest.raises(ConfigurationError, match=r"^--dialect 'negative' is not a dialect of the postatr sandbox "
                                                  r"\(its dialects: document, asmx-d\)$"):
        dialect_of("postatr", "negative")
    with pytest.raises(ConfigurationError, match="the postacell sandbox serves one reading only"):
        dialect_of("postacell", "bare")


def test_sandbox_serve_help_lists_each_provider_s_dialects(dialects: Any, cli: Cli) -> None:
    result = cli("sandbox", "serve", "--help")
    assert result.code == 0
    text = " ".join(result.out.split())
    assert "euromsg: envelope, bare; mailmasterplus: document, negative; postatr: document, asmx-d" in text


def test_sandbox_serve_takes_every_provider_s_dialect_and_checks_it_belongs(dialects: Any, cli: Cli,
                                                                            started: list[Any]) -> None:
    wrong = cli("sandbox", "serve", "mailmasterplus", "--dialect", "asmx-d")
    assert wrong.code != 0 and "Traceback" not in wrong.err
    assert [line for line in wrong.err.splitlines() if line.startswith("crm-esp-sync: error:")] == [
        "crm-esp-sync: error: --dialect 'asmx-d' is not a dialect of the mailmasterplus sandbox "
        "(its dialects: document, negative)"]
    unknown = cli("sandbox", "serve", "mailmasterplus", "--dialect", "klingon")
    assert unknown.code == 2 and "'klingon' is not one of" in unknown.err
    assert started == []                                  # refused before any sandbox was built


def test_every_sandbox_serves_each_of_its_declared_dialects(cli: Cli, started: list[Any]) -> None:
    """The real table: each provider's sandbox module's ``DIALECTS`` (or none), distinct names, and
    `sandbox serve PROVIDER --dialect D` builds that sandbox in D for every one of them."""
    found = sync.cli.sandbox.sandbox_dialects()
    assert set(found) == set(sync.cli.sandbox.SANDBOX_PATHS)
    for provider, names in found.items():
        assert len(set(names)) == len(names), provider
        for name in names:
            served = cli("sandbox", "serve", provider, "--dialect", name, "--port", "8124")
            assert served.code == 0, (provider, name, served.err)
            assert getattr(started[-1], "dialect", name) == name

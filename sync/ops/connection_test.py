"""`crm-esp-sync connection test TENANT PROVIDER`: log in and make one read-only call per
capability the provider has, then the reads a run makes; one line per check, never a secret.

The provider is built as a run builds it (``sync.engine.runner``): credentials from the vault,
the integrator's credentials where the provider has them, the connection's ``base_url`` and
settings. Nothing is written at the provider and no lease is taken.

Readings (``sync.providers.readings``): a provider with ``connection_probe`` makes the read-only
calls a run makes (check ``reads``, one line each); the readings its answers came in are printed
and merged into ``connections.readings``. A provider with ``request_fallbacks`` is tried in its
request readings in turn while a check fails with 404/405; the one that worked is reported (check
``request readings``) and stored in the connection's settings. These are the only writes, and
they are to our own database.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from sync import db, registry
from sync.config import Settings
from sync.crypto import Vault
from sync.engine.runner import TransportFactory
from sync.errors import AuthenticationError, ConfigurationError, ProviderError, SyncError
from sync.http import Auth, HttpPolicy, ProviderHTTP
from sync.logs import SECRETS
from sync.models import Connection
from sync.providers.base import IMPLEMENTATIONS, Capabilities, build_provider, provider_class
from sync.providers.readings import (
    FALLBACK_STATUSES,
    ReadingChange,
    ReadingLog,
    merged_readings,
    reading_changes,
    readings_of,
    request_fallbacks_of,
    request_variants,
    variant_text,
)
from sync.providers.specs import get_spec

#: A connection test answers quickly: few retries, short waits (a run retries much longer).
TEST_POLICY = HttpPolicy(max_attempts=3, backoff_base_s=0.2, backoff_max_s=2.0, max_retry_after_s=10.0)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: The HTTP status a failed check's provider error carried (not printed): 404/405 makes the
    #: test try the provider's next request reading.
    status_code: int | None = field(default=None, compare=False)

    def line(self) -> str:
        return SECRETS.scrub(f"{self.name}: {'ok' if self.ok else 'FAILED'}" + (
            f" ({self.detail})" if self.ok and self.detail else f": {self.detail}" if self.detail else ""))

    @property
    def not_in_this_reading(self) -> bool:
        """Failed with 404/405: the server may have the call in another request reading."""
        return not self.ok and self.status_code in FALLBACK_STATUSES


@dataclass
class ConnectionTest:
    tenant: str
    provider: str
    base_url: str
    checks: list[Check]
    #: Endpoint -> reading, as this test's answers came (stored on the connection, merged).
    readings: dict[str, str] = field(default_factory=dict)
    #: Readings that differ from the ones stored before this test.
    reading_changes: list[ReadingChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def lines(self) -> list[str]:
        """What the CLI prints under its header: the checks, then the readings seen (``; `` between
        endpoints: a reading may name fields with commas) and the ones that changed."""
        lines = [check.line() for check in self.checks]
        if self.readings:
            lines.append("readings: " + "; ".join(f"{endpoint}={reading}"
                                                  for endpoint, reading in self.readings.items()))
        lines += [f"reading changed: {c.endpoint}: answered as {c.now!r}, was {c.was!r}"
                  for c in self.reading_changes]
        return [SECRETS.scrub(line) for line in lines]


@dataclass
class _Attempt:
    """The checks made with one set of request readings, and the readings the answers came in."""

    checks: list[Check]
    log: ReadingLog | None = None

    @property
    def misses(self) -> int:
        return sum(check.not_in_this_reading for check in self.checks)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SyncError):
        return " ".join(exc.message.split())
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


def _failed(name: str, exc: BaseException) -> Check:
    return Check(name, False, _reason(exc), status_code=exc.status_code if isinstance(exc, ProviderError) else None)


async def _first(items: Any) -> Any:
    """The first item of an async iterator (or None), closing it: one page read, not a full scan."""
    try:
        async for item in items:
            return item
        return None
    finally:
        await items.aclose()


async def check_connection(settings: Settings, engine: sa.Engine, tenant: str, provider_name: str, *,
                          transport_factory: TransportFactory | None = None,
                          http_policy: HttpPolicy = TEST_POLICY) -> ConnectionTest:
    """The checks of TENANT's PROVIDER connection, in order; a failed login skips the rest.

    Stores on the connection the readings its answers came in and, where the provider has request
    readings (``request_fallbacks``) and the connection's own failed with 404/405 where another
    answered, the one that answered."""
    spec = get_spec(provider_name)
    vault = Vault(settings.require_master_keys())
    with db.session_factory(engine)() as session:
        connection = registry.get_connection(session, tenant, provider_name)
        session.expunge(connection)
        credentials = vault.decrypt(connection.credentials_encrypted)
        integrator = registry.integrator_credentials(session, vault, provider_name) \
            if spec.integrator_credentials else None
    result = ConnectionTest(tenant, provider_name, connection.base_url, [])
    if provider_name not in IMPLEMENTATIONS:
        result.checks.append(Check("provider", False, f"{provider_name} has no sync implementation in this version"))
        return result
    try:
        fallbacks = request_fallbacks_of(provider_class(provider_name))
    except ConfigurationError as exc:
        result.checks.append(Check("request readings", False, _reason(exc)))
        return result
    variants = request_variants(fallbacks, connection.settings)
    attempts: list[_Attempt] = []
    for variant in variants:
        attempts.append(await _attempt(connection, {**connection.settings, **variant}, credentials, integrator,
                                       transport_factory, http_policy))
        if not attempts[-1].misses:
            break
    best = min(range(len(attempts)), key=lambda n: attempts[n].misses)   # the first of the best
    attempt, variant = attempts[best], variants[best]
    result.checks = list(attempt.checks)
    new_settings: dict[str, Any] | None = None
    if fallbacks:
        check = _request_check(variants, attempts, best)
        if variant != variants[0] and attempt.misses < attempts[0].misses:
            try:
                new_settings = spec.validate_settings(variant, base=connection.settings)
            except ConfigurationError as exc:
                check = Check("request readings", False, f"{variant_text(variant)} answered, but it cannot be "
                              f"stored: {_reason(exc)}")
            else:
                check = replace(check, detail=f"{check.detail}; " + ("" if check.ok else
                                f"{variant_text(variant)} answered the most: ") + "stored in the connection's settings")
        result.checks.append(check)
    if attempt.log is not None:
        result.readings = attempt.log.as_dict()
        result.reading_changes = reading_changes(connection.readings, attempt.log)
    if result.readings or new_settings is not None:
        _store(engine, connection.id, result.readings, new_settings)
    return result


def _request_check(variants: list[dict[str, str]], attempts: list[_Attempt], best: int) -> Check:
    """Which request reading answered, and what the ones tried before it answered."""
    def misses(n: int) -> str:
        missed = [c for c in attempts[n].checks if c.not_in_this_reading]
        return f"{variant_text(variants[n])}: " + ", ".join(f"{c.name} HTTP {c.status_code}" for c in missed)

    if attempts[best].misses:
        return Check("request readings", False, "no request reading answered every call with other than 404/405 ("
                     + "; ".join(misses(n) for n in range(len(attempts))) + ")", status_code=404)
    tried = [misses(n) for n in range(best)]
    return Check("request readings", True, f"{variant_text(variants[best])} answered"
                 + (f"; tried first: {'; '.join(tried)}" if tried else ""))


def _store(engine: sa.Engine, connection_id: int, seen: Mapping[str, str],
           new_settings: dict[str, Any] | None) -> None:
    """The readings seen, merged over the stored ones, and the request settings that answered."""
    with db.transaction(db.session_factory(engine)) as session:
        row = session.get(Connection, connection_id)
        if row is None:         # removed while it was being tested
            return
        readings = merged_readings(row.readings, seen)
        if readings != (row.readings or {}):
            row.readings = readings
        if new_settings is not None:
            row.settings = new_settings


async def _attempt(connection: Connection, provider_settings: dict[str, Any], credentials: Mapping[str, str],
                   integrator: Mapping[str, str] | None, transport_factory: TransportFactory | None,
                   http_policy: HttpPolicy) -> _Attempt:
    """Every check, with the provider built on ``provider_settings``."""
    provider_name = connection.provider
    result = _Attempt([])
    client = httpx.AsyncClient(transport=transport_factory(connection) if transport_factory else None,
                               timeout=http_policy.timeout, follow_redirects=True)
    auths: list[Auth | None] = []
    https: list[ProviderHTTP] = []

    def http_factory(caps: Capabilities, auth: Auth | None) -> ProviderHTTP:
        auths.append(auth)
        http = ProviderHTTP(client, provider=provider_name, base_url=connection.base_url,
                            policy=replace(http_policy, concurrency=caps.concurrency, rate_per_s=caps.rate_per_s),
                            auth=auth)
        https.append(http)
        return http

    async def check(name: str, probe: Callable[[], Awaitable[str]]) -> bool:
        try:
            detail = await probe()
        except Exception as exc:  # a check reports what went wrong; it never stops the others with a traceback
            result.checks.append(_failed(name, exc))
            return False
        result.checks.append(Check(name, True, detail))
        return True

    try:
        try:
            provider: Any = build_provider(provider_name, http_factory, credentials, provider_settings, integrator)
        except SyncError as exc:
            result.checks.append(Check("settings", False, _reason(exc)))
            return result
        result.log = readings_of(provider)
        caps: Capabilities = provider.capabilities
        if hasattr(provider, "health_check"):
            async def health() -> str:
                if not await provider.health_check():
                    raise ConfigurationError(f"{connection.base_url} does not answer its health check as healthy")
                return f"{connection.base_url} is healthy"
            await check("health check", health)
        if caps.lists == "mapped":   # no login call: the reads of the mapped lists prove the credentials
            logged_in = await _mapped_lists(provider, result.checks)
        elif caps.pulls_activity and not caps.pushes_members:   # pull-only: its reference data proves the key
            logged_in = await check("login", lambda: _reference(provider))
        else:
            logged_in = await check("login", lambda: _login(provider, auths, https, integrator is not None))
        if not logged_in:
            result.checks.append(Check("the other checks", False, "skipped: the login failed"))
            return result
        if caps.lists == "create":
            async def lists() -> str:
                found = await provider.all_lists()
                return f"list index read: {len(found)} list(s)"
            await check("lists", lists)
        if caps.has_campaign_reports:
            async def campaigns() -> str:
                first = await _first(provider.pull_campaigns())
                return "campaign index read" + ("" if first else ": no campaign yet")
            await check("campaigns", campaigns)
        if caps.pulls_consents:
            result.checks.append(Check("İYS", True, "on: pushed members carry İYS fields, checked before sending"))
        if caps.pulls_activity:
            async def activity() -> str:
                today = dt.datetime.now(ZoneInfo(provider.activity_window.time_zone)).date()
                found = await provider.pull_conversations(today)
                return f"conversations of {today.isoformat()} read: {len(found)}"
            await check("activity", activity)
        if hasattr(provider, "connection_probe"):
            await _reads(provider, result.checks)
    finally:
        await client.aclose()
    return result


async def _reads(provider: Any, checks: list[Check]) -> None:
    """The provider's own probe of what a run reads: one ``reads`` check per line it returns."""
    try:
        lines = await provider.connection_probe()
    except Exception as exc:  # reported as the reads check
        checks.append(_failed("reads", exc))
        return
    checks.extend(Check("reads", True, " ".join(str(line).split())) for line in lines)
    if not lines:
        checks.append(Check("reads", True, "nothing a run reads yet"))


async def _login(provider: Any, auths: list[Auth | None], https: list[ProviderHTTP],
                 has_integrator: bool) -> str:
    """Log in (a token provider gets its token; an account read where the provider has one)."""
    if hasattr(provider, "account"):
        account = await provider.account()
        if account.get("packageActive") is False:
            raise ConfigurationError(f"account {account.get('name')!r}: no active sending package, so members "
                                     "cannot be pushed until the tenant renews it")
        credits = account.get("remainingCredits")
        return (f"token issued{' with the integrator login' if has_integrator else ''}, API key identified, "
                f"account {account.get('name')!r}, sending package active"
                + (f", {credits} credit(s) left" if credits is not None else ""))
    auth, http = auths[-1], https[-1]
    if auth is None:
        return "no login needed"
    await auth.headers(http)
    return "token issued"


async def _reference(provider: Any) -> str:
    """A pull-only provider's reference data (users, instances, call results): read with the key."""
    items = await provider.pull_reference()
    kinds = Counter(item.kind for item in items)
    return "key accepted, reference data read: " + (", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
                                                     or "none yet")


async def _mapped_lists(provider: Any, checks: list[Check]) -> bool:
    """Login and each mapped list read back (``check_lists``); False when the login failed.
    An empty mapping is a failure, not a pass, where the provider needs one (``requires_list_mapping``:
    a provider whose list ids the sender chooses, like Postatr, maps every CRM list by itself)."""
    mapped = provider.mapped_lists()
    if not mapped and getattr(provider, "requires_list_mapping", True):
        checks.append(Check("lists", False, "no CRM list is mapped: set the connection's `lists` "
                            "setting (`connection set ... --setting lists=...`)"))
        return True
    try:
        problems = await provider.check_lists()
    except AuthenticationError as exc:
        checks.append(_failed("login", exc))
        return False
    except Exception as exc:  # reported as the lists check
        checks.append(_failed("lists", exc))
        return True
    checks.append(Check("login", True, getattr(provider, "login_detail", "credentials accepted")))
    list_detail = getattr(provider, "list_detail", "readable")
    for crm_list, remote in sorted(mapped.items()):
        wrong = [p for p in problems if p.startswith(f"CRM list {crm_list} -> ")]
        name = f"list {crm_list} -> {remote.remote_id}"
        checks.append(Check(name, not wrong, wrong[0].split(": ", 1)[-1] if wrong else
                            f"{remote.name!r} {list_detail}"))
    if not mapped:
        checks.append(Check("lists", True, getattr(provider, "unmapped_detail", "every CRM list maps itself")))
    return True


def run_test(settings: Settings, engine: sa.Engine, tenant: str, provider: str, *,
             transport_factory: TransportFactory | None = None) -> ConnectionTest:
    """The synchronous entry point the CLI calls."""
    import asyncio

    return asyncio.run(check_connection(settings, engine, tenant, provider, transport_factory=transport_factory))


__all__ = ["TEST_POLICY", "Check", "ConnectionTest", "check_connection", "run_test"]

"""Tenants, connections and the integrator's own credentials; secrets encrypted at rest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.crypto import Vault
from sync.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from sync.models import Connection, IntegratorCredential, Tenant
from sync.providers.specs import get_spec, mask

#: A tenant slug: what commands, logs and metrics name the tenant by; safe in a path or a URL.
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def add_tenant(session: Session, slug: str, name: str | None = None, crm_tenant_id: str | None = None) -> Tenant:
    if not TENANT_SLUG.match(slug):
        raise InvalidInputError(f"tenant slug {slug!r} is not valid: 1 to 64 lower-case letters a-z, digits, "
                                "'-' or '_', starting with a letter or digit (e.g. acme-ticaret)")
    crm_id = (crm_tenant_id or slug).strip()
    clash = session.scalar(sa.select(Tenant).where((Tenant.slug == slug) | (Tenant.crm_tenant_id == crm_id)))
    if clash is not None:
        raise AlreadyExistsError(f"tenant {slug!r} already exists" if clash.slug == slug
                                 else f"CRM tenant id {crm_id!r} already belongs to tenant {clash.slug!r}")
    tenant = Tenant(slug=slug, name=name or slug, crm_tenant_id=crm_id)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, slug: str) -> Tenant:
    tenant = session.scalar(sa.select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise NotFoundError(f"no tenant {slug!r} (see `crm-esp-sync tenant list`)")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(sa.select(Tenant).order_by(Tenant.slug)))


def remove_tenant(session: Session, slug: str) -> None:
    session.delete(get_tenant(session, slug))


def get_connection(session: Session, tenant_slug: str, provider: str) -> Connection:
    get_spec(provider)
    tenant = get_tenant(session, tenant_slug)
    connection = session.scalar(
        sa.select(Connection).where(Connection.tenant_id == tenant.id, Connection.provider == provider))
    if connection is None:
        raise NotFoundError(f"tenant {tenant_slug!r} has no {provider} connection")
    return connection


def add_connection(
    session: Session, vault: Vault, tenant_slug: str, provider: str, credentials: Mapping[str, Any], *,
    settings: Mapping[str, Any] | None = None, base_url: str | None = None, schedule: str | None = None,
    enabled: bool = True,
) -> Connection:
    spec = get_spec(provider)
    tenant = get_tenant(session, tenant_slug)
    clean = spec.validate_credentials(credentials)
    merged = spec.validate_settings(settings or {})
    exists = session.scalar(
        sa.select(Connection.id).where(Connection.tenant_id == tenant.id, Connection.provider == provider))
    if exists is not None:
        raise AlreadyExistsError(f"tenant {tenant_slug!r} already has a {provider} connection "
                                 "(use `connection rotate` to change its credentials)")
    connection = Connection(
        tenant_id=tenant.id, provider=provider, credentials_encrypted=vault.encrypt(clean), settings=merged,
        base_url=_base_url(base_url or spec.default_base_url), schedule=schedule, enabled=enabled,
    )
    session.add(connection)
    session.flush()
    return connection


def _base_url(url: str) -> str:
    """An http(s) URL with a host and no user or password in it (it is stored and shown in clear;
    credentials go in the encrypted credentials), ending in a slash."""
    url = url.strip()
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is not None and (parsed.username or parsed.password):
        raise InvalidInputError("base_url must not carry a user name or password (it is stored and shown in "
                                "clear): give them with --credentials")
    if parsed is None or parsed.scheme not in ("http", "https") or not url.startswith(("http://", "https://")):
        raise InvalidInputError(f"base_url must be an http(s) URL: {url!r}")
    if not parsed.host or any(char.isspace() for char in url):
        raise InvalidInputError(f"base_url has no host (or has blanks in it): {url!r}")
    return url if url.endswith("/") else url + "/"


def rotate_connection(session: Session, vault: Vault, tenant_slug: str, provider: str,
                      credentials: Mapping[str, Any]) -> Connection:
    connection = get_connection(session, tenant_slug, provider)
    connection.credentials_encrypted = vault.encrypt(get_spec(provider).validate_credentials(credentials))
    return connection


def update_connection(session: Session, tenant_slug: str, provider: str, *, schedule: str | None = None,
                      enabled: bool | None = None, base_url: str | None = None,
                      settings: Mapping[str, Any] | None = None) -> Connection:
    """Change what the daemon does with a connection; ``schedule="default"`` clears it. ``settings``
    are merged over the current ones and checked like at ``add``; the sync state is kept."""
    connection = get_connection(session, tenant_slug, provider)
    if settings:
        connection.settings = get_spec(provider).validate_settings(settings, base=connection.settings)
    if schedule is not None:
        connection.schedule = None if schedule == "default" else schedule
    if enabled is not None:
        connection.enabled = enabled
    if base_url is not None:
        connection.base_url = _base_url(base_url)
    return connection


def remove_connection(session: Session, tenant_slug: str, provider: str) -> None:
    session.delete(get_connection(session, tenant_slug, provider))


def set_integrator_credentials(session: Session, vault: Vault, provider: str, credentials: Mapping[str, Any]) -> None:
    clean = get_spec(provider).validate_credentials(credentials, integrator=True)
    row = session.get(IntegratorCredential, provider)
    if row is None:
        session.add(IntegratorCredential(provider=provider, credentials_encrypted=vault.encrypt(clean)))
    else:
        row.credentials_encrypted = vault.encrypt(clean)


def integrator_credentials(session: Session, vault: Vault, provider: str) -> dict[str, str] | None:
    row = session.get(IntegratorCredential, provider)
    return None if row is None else vault.decrypt(row.credentials_encrypted)


@dataclass(frozen=True)
class ConnectionView:
    """A connection as ``connection list`` shows it: secrets masked."""

    id: int
    tenant: str
    provider: str
    base_url: str
    enabled: bool
    schedule: str | None
    credentials: dict[str, str]
    settings: dict[str, Any]


def list_connections(session: Session, vault: Vault, tenant_slug: str | None = None) -> list[ConnectionView]:
    query = sa.select(Connection, Tenant.slug).join(Tenant).order_by(Tenant.slug, Connection.provider)
    if tenant_slug is not None:
        query = query.where(Tenant.slug == get_tenant(session, tenant_slug).slug)
    views = []
    for connection, slug in session.execute(query):
        spec = get_spec(connection.provider)
        plain = vault.decrypt(connection.credentials_encrypted)
        secret = {f.name: f.secret for f in spec.credentials}
        shown = {k: (mask(v) if secret.get(k, True) else v) for k, v in plain.items()}
        views.append(ConnectionView(connection.id, slug, connection.provider, connection.base_url,
                                    connection.enabled, connection.schedule, shown, connection.settings))
    return views


def rotate_master_keys(session: Session, vault: Vault) -> int:
    """Re-encrypt every stored credential under the newest master key; returns how many."""
    count = 0
    for connection in session.scalars(sa.select(Connection)):
        connection.credentials_encrypted = vault.rotate(connection.credentials_encrypted)
        count += 1
    for row in session.scalars(sa.select(IntegratorCredential)):
        row.credentials_encrypted = vault.rotate(row.credentials_encrypted)
        count += 1
    return count

"""Settings: loaded once at start from ``CRM_ESP_SYNC_*`` variables and an optional TOML file.

Precedence: environment variable > TOML file > default. A bad value fails at start with
one line naming the setting, never at 3 a.m. in the middle of a run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync.errors import ConfigurationError

ENV_PREFIX = "CRM_ESP_SYNC_"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class CrmSource:
    """Names of the three CRM relations (tables or views) the daemon reads."""

    lists: str = "crm_lists"
    members: str = "crm_members"
    memberships: str = "crm_list_members"
    #: PostgreSQL only: a bigint column of members and memberships holding the id of the
    #: transaction that last wrote the row (``pg_current_xact_id()``, e.g. set by a trigger).
    #: When set, changes are found by transaction id against the snapshot's oldest running
    #: transaction, which does not depend on commit timing (see docs/guarantees.md, "Late commits").
    change_xid: str = ""


@dataclass(frozen=True)
class Settings:
    """Every setting of the daemon, typed. Build it with :func:`load_settings`."""

    database_url: str = "sqlite:///crm-esp-sync.db"
    #: Where the CRM relations live; ``None`` means the daemon's own database.
    crm_database_url: str | None = None
    crm: CrmSource = field(default_factory=CrmSource)
    #: Fernet keys, newest first (MultiFernet): the first encrypts, all decrypt.
    master_keys: tuple[Secret, ...] = ()
    log_format: str = "auto"
    log_level: str = "info"
    #: Re-read this many seconds before a member watermark, to catch late-committed rows.
    lookback_seconds: int = 300
    #: A connection lease lasts this long (by the database's clock); the run's heartbeat renews it
    #: every third of that, so a crashed worker's connection is free again within about this long.
    lease_seconds: int = 60
    #: Per-recipient results of a campaign that is not final are re-fetched at most this often.
    report_refresh_seconds: int = 6 * 3600
    #: A scheduled run looks for CRM members deleted without a trace (ids that vanished) at most
    #: this often per connection; 0 = on every run. The nightly run therefore finds them.
    vanished_check_seconds: int = 20 * 3600
    #: Default schedule (cron, 5 fields) of connections that set none: nightly at 02:30.
    default_schedule: str = "30 2 * * *"
    #: Time zone of the cron schedules (the CRM's business day).
    timezone: str = "Europe/Istanbul"
    #: Connections synced at the same time by one daemon.
    workers: int = 4
    #: A scheduled run that could not start on time still starts if it is at most this late.
    misfire_grace_seconds: int = 3600
    #: The daemon re-reads connections (added, disabled, rescheduled) this often.
    refresh_seconds: int = 300
    #: Each connection's cron fire time is delayed by a fixed offset in [0, this) seconds, derived
    #: from its id, so hundreds of connections on one schedule do not start in the same second.
    jitter_seconds: int = 300
    #: ``HOST:PORT`` of the daemon's HTTP endpoint (/healthz, /metrics, the status page); empty = off.
    http_address: str = ""
    #: Identity of this worker in leases.
    worker_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    @property
    def crm_url(self) -> str:
        return self.crm_database_url or self.database_url

    def require_master_keys(self) -> tuple[Secret, ...]:
        if not self.master_keys:
            raise ConfigurationError(
                "no master key: set CRM_ESP_SYNC_MASTER_KEY or CRM_ESP_SYNC_MASTER_KEY_FILE "
                "(create one with `crm-esp-sync keys generate`)"
            )
        return self.master_keys


def _parse_keys(raw: str, origin: str) -> tuple[Secret, ...]:
    keys = tuple(Secret(part.strip()) for part in re.split(r"[,\s]+", raw) if part.strip())
    if not keys:
        raise ConfigurationError(f"{origin} is empty")
    return keys


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def load_settings(environ: Mapping[str, str] | None = None, config_file: str | Path | None = None) -> Settings:
    """Read settings from the environment and an optional TOML file; raise ConfigurationError on bad input."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    path = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            with open(path, "rb") as handle:
                values.update(_flatten(tomllib.load(handle)))
        except FileNotFoundError:
            raise ConfigurationError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    for key, value in env.items():
        # CRM_ESP_SYNC_TEST_* belong to the test suite (database URLs), not to the daemon.
        if key.startswith(ENV_PREFIX) and key != f"{ENV_PREFIX}CONFIG" and not key.startswith(f"{ENV_PREFIX}TEST_"):
            values[key[len(ENV_PREFIX):].lower()] = value

    known = {f.name for f in dataclasses.fields(Settings)} - {"crm", "master_keys"} | {
        "master_key", "master_key_file", "crm_lists", "crm_members", "crm_memberships", "crm_change_xid",
    }
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(f"unknown setting: {unknown[0]} (known: {', '.join(sorted(known))})")

    kwargs: dict[str, Any] = {}
    for name in ("database_url", "crm_database_url", "log_format", "log_level", "default_schedule", "worker_id",
                 "timezone", "http_address"):
        if name in values:
            kwargs[name] = str(values[name]).strip()
    for name in ("lookback_seconds", "lease_seconds", "report_refresh_seconds", "workers", "misfire_grace_seconds",
                 "refresh_seconds", "vanished_check_seconds", "jitter_seconds"):
        if name in values:
            try:
                kwargs[name] = int(values[name])
            except (TypeError, ValueError):
                raise ConfigurationError(f"{name} must be a whole number of seconds") from None
            if kwargs[name] < 0 or (name in ("lease_seconds", "refresh_seconds") and kwargs[name] < 10) \
                    or (name == "workers" and kwargs[name] < 1):
                raise ConfigurationError(f"{name} is too small: {kwargs[name]}")

    for name in ("master_key", "master_key_file"):     # `NAME=` in an env file means "not set"
        if name in values and not str(values[name]).strip():
            del values[name]
    if "master_key" in values and "master_key_file" in values:
        raise ConfigurationError("set either master_key or master_key_file, not both")
    if "master_key" in values:
        kwargs["master_keys"] = _parse_keys(str(values["master_key"]), "CRM_ESP_SYNC_MASTER_KEY")
    elif "master_key_file" in values:
        key_path = Path(str(values["master_key_file"]))
        try:
            kwargs["master_keys"] = _parse_keys(key_path.read_text(encoding="utf-8"), f"master key file {key_path}")
        except OSError as exc:
            raise ConfigurationError(f"cannot read master key file {key_path}: {exc.strerror}") from None

    crm = {k[len("crm_"):]: str(v).strip() for k, v in values.items()
           if k in ("crm_lists", "crm_members", "crm_memberships", "crm_change_xid")}
    for key, relation in crm.items():
        if key != "change_xid" and not _IDENTIFIER.match(relation):
            raise ConfigurationError(f"CRM relation name must be an identifier (schema.name allowed): {relation!r}")
    if crm.get("change_xid") and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", crm["change_xid"]):
        raise ConfigurationError(f"crm_change_xid must be a column name: {crm['change_xid']!r}")
    kwargs["crm"] = CrmSource(**crm)

    settings = Settings(**kwargs)
    if settings.log_format not in LOG_FORMATS:
        raise ConfigurationError(f"log_format must be one of {', '.join(LOG_FORMATS)}: {settings.log_format!r}")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigurationError(f"log_level must be one of {', '.join(LOG_LEVELS)}: {settings.log_level!r}")
    try:
        zoneinfo.ZoneInfo(settings.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"timezone is not a known time zone: {settings.timezone!r}") from None
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    try:
        CronTrigger.from_crontab(settings.default_schedule, timezone=settings.timezone)
    except ValueError as exc:
        raise ConfigurationError(f"default_schedule is not a cron expression: {exc}") from None
    if settings.http_address:
        parse_http_address(settings.http_address)
    for url_name in ("database_url", "crm_database_url"):
        url = getattr(settings, url_name)
        if url is not None:
            _check_database_url(url_name, url)
    return settings


#: The databases the daemon is tested on; the scheme picks the driver (see ``sync.db``).
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb")


def _check_database_url(name: str, url: str) -> None:
    """A URL of a database we support, or one line saying which ones we do."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    supported = "sqlite:///FILE, postgresql://HOST/DB, mysql://HOST/DB or mariadb://HOST/DB"
    if "://" not in url:
        raise ConfigurationError(f"{name} is not a database URL (e.g. sqlite:///sync.db; supported: {supported})")
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):     # ValueError: a port that is not a number
        raise ConfigurationError(f"{name} is not a valid database URL (supported: {supported})") from None
    if backend not in DATABASE_SCHEMES:
        raise ConfigurationError(f"{name}: {backend!r} databases are not supported (supported: {supported})")


def parse_http_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9108`` for IPv6; a bare ``PORT`` means loopback) of the HTTP endpoint."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", address.strip()
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigurationError(f"http_address must look like 127.0.0.1:9108: {address!r}") from None
    if not 0 <= port < 65536:          # 0: any free port (the tests use it)
        raise ConfigurationError(f"http_address: port {port} is out of range")
    return host, port

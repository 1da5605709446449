"""What each provider needs from an operator: credential fields, settings, default address.

A plain name -> spec table: the registry validates credentials with it, and a wrong name
gets the list of valid ones. The sync code of each provider lives in its own module and is
looked up through :data:`IMPLEMENTATIONS` in ``sync.providers.base``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.errors import ConfigurationError, CredentialsError
from sync.fields import check_field_mapping
from sync.providers.euromsg import api as euromsg_api
from sync.providers.mailmasterplus import api as mmp_api
from sync.providers.mailmasterplus.api import parse_list_mapping
from sync.providers.postatr import api as postatr_api
from sync.providers.postatr.api import parse_list_settings
from sync.providers.wapcrm import api as wapcrm_api


@dataclass(frozen=True)
class CredentialField:
    name: str
    help: str
    secret: bool = True


@dataclass(frozen=True)
class SettingSpec:
    """One connection setting: its default, its kind and the smallest value it takes."""

    default: Any
    kind: str             # "int" | "number" | "bool" | "mapping"
    minimum: float | None = None
    help: str = ""

    def coerce(self, key: str, value: Any) -> Any:
        """``value`` (a string from ``--setting``, or a JSON value) as this setting's kind, or one line why not."""
        if self.kind == "bool":
            return _boolean(key, value)
        if self.kind == "mapping":
            return _mapping(key, value)
        number = _number(key, value, whole=self.kind == "int")
        if self.minimum is not None and number < self.minimum:
            raise ConfigurationError(f"setting {key} must be at least {self.minimum:g}: {value!r}"
                                     + (f" ({self.help})" if self.help else ""))
        return number


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"setting {key} must be true or false: {value!r}")


def _number(key: str, value: Any, *, whole: bool) -> int | float:
    what = "a whole number" if whole else "a number"
    if isinstance(value, bool):
        raise ConfigurationError(f"setting {key} must be {what}: {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip()) if whole else float(value.strip())
        except ValueError:
            raise ConfigurationError(f"setting {key} must be {what}: {value!r}") from None
    if whole and isinstance(value, int):
        return value
    if not whole and isinstance(value, int | float) and math.isfinite(value):
        return value
    raise ConfigurationError(f"setting {key} must be {what}: {value!r}")


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigurationError(f"setting {key} must be a JSON object: {value!r}") from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"setting {key} must be a JSON object: {value!r}")
    return dict(value)


@dataclass(frozen=True)
class CheckedMappingSpec(SettingSpec):
    """A mapping setting whose entries the provider checks (MailMasterPlus's list mapping)."""

    check: Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None

    def coerce(self, key: str, value: Any) -> Any:
        mapping = super().coerce(key, value)
        return self.check(key, mapping) if self.check is not None else mapping


@dataclass(frozen=True)
class CheckedTextSpec(SettingSpec):
    """A text setting the provider checks (WapCRM's secret header name)."""

    check: Callable[[str, Any], str] | None = None

    def coerce(self, key: str, value: Any) -> Any:
        return self.check(key, value) if self.check is not None else str(value)


#: Settings of every connection, whatever its provider: the mass-delete guard (a run that would
#: remove more members than this, or more than this share of the linked members or lists, stops
#: before it sends anything; `--allow-mass-delete` goes on).
COMMON_SETTINGS: Mapping[str, SettingSpec] = {
    "max_delete_members": SettingSpec(5000, "int", minimum=0, help="most members one run may remove"),
    "max_delete_percent": SettingSpec(25, "number", minimum=0, help="most members/lists (in %) one run may remove"),
    "fields": CheckedMappingSpec({}, "mapping", check=check_field_mapping,
                                 help="extra CRM member columns -> provider custom fields (docs/crm-contract.md)"),
}


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    title: str
    default_base_url: str
    credentials: tuple[CredentialField, ...]
    #: Credentials the integrator holds once for all tenants (Euromsg's clientName/password).
    integrator_credentials: tuple[CredentialField, ...] = ()
    #: Settings with their defaults and rules; anything else given as a setting is refused.
    settings: Mapping[str, SettingSpec] = field(default_factory=dict)

    def validate_credentials(self, given: Mapping[str, Any], *, integrator: bool = False) -> dict[str, str]:
        """Return the credentials as clean strings, or say exactly which fields are wrong."""
        fields = self.integrator_credentials if integrator else self.credentials
        if not fields:
            raise CredentialsError(f"{self.name} has no integrator credentials")
        names = [f.name for f in fields]
        expected = f"(expected: {', '.join(names)})"
        not_text = [n for n in names if given.get(n) is not None and not isinstance(given[n], str)]
        if not_text:
            raise CredentialsError(f"{self.name} credentials: field(s) {', '.join(not_text)} must be a string "
                                   f'in quotes, e.g. {{"{not_text[0]}": "..."}} {expected}')
        missing = [n for n in names if not isinstance(given.get(n), str) or not given[n].strip()]
        if missing:
            raise CredentialsError(
                f"{self.name} credentials: missing or empty field(s) {', '.join(missing)} {expected}")
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise CredentialsError(f"{self.name} credentials: unknown field(s) {', '.join(unknown)} {expected}")
        return {n: str(given[n]).strip() for n in names}

    @property
    def all_settings(self) -> Mapping[str, SettingSpec]:
        """This provider's settings and those every connection has (COMMON_SETTINGS)."""
        return {**COMMON_SETTINGS, **self.settings}

    def default_settings(self) -> dict[str, Any]:
        return {key: spec.default for key, spec in self.all_settings.items()}

    def validate_settings(self, given: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``given`` over ``base`` (default: the defaults), each value checked; one line for the first bad one."""
        specs = self.all_settings
        unknown = sorted(set(given) - set(specs))
        if unknown:
            known = ", ".join(sorted(specs)) or "none"
            raise ConfigurationError(f"{self.name}: unknown setting(s) {', '.join(unknown)} (known: {known})")
        merged = {**self.default_settings(), **(base or {})}
        for key, value in given.items():
            merged[key] = specs[key].coerce(key, value)
        return merged


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            name="euromsg",
            title="Euromsg Express (Related Digital) CRM/ERP gateway",
            default_base_url="https://express-crm-gw.relateddigital.com/",
            credentials=(CredentialField("api_key", "the tenant's API key (Ana Sayfa > API > API Anahtarı)"),),
            integrator_credentials=(
                CredentialField("client_name", "the integrator's clientName", secret=False),
                CredentialField("password", "the integrator's password"),
            ),
            settings={
                "iys": SettingSpec(False, "bool", help="push İYS consent fields (Euromsg as İYS integrator)"),
                euromsg_api.API_KEY_SETTING: CheckedTextSpec(
                    euromsg_api.API_KEY_IN_DEFAULT, "text", check=euromsg_api.parse_api_key_in,
                    help="where the API key goes in PUT identification: path (the document), segment or query; "
                         "`connection test` finds the one the gateway takes"),
                euromsg_api.CONCURRENCY_SETTING: SettingSpec(
                    euromsg_api.CONCURRENCY, "int", minimum=1,
                    help="most requests in flight: the ceiling of the adaptive limit, which starts at 2 and "
                         "climbs while answers stay fast and unrefused (the document gives no limit)"),
                euromsg_api.LIST_PATH_SETTING: CheckedTextSpec(
                    euromsg_api.LIST_PATHS[0], "text", check=euromsg_api.parse_list_path,
                    help="the path of the email lists: emailList (the document) or email-list; "
                         "`connection test` finds it"),
            },
        ),
        ProviderSpec(
            name="postatr",
            title="Postatr (api.asmx, JSON)",
            default_base_url="http://api.postatr.com/api.asmx/",
            credentials=(
                CredentialField("username", "Postatr user name", secret=False),
                CredentialField("password", "Postatr password"),
                CredentialField("encrypted_id", "EncryptedId: the encrypted account number"),
            ),
            settings={
                "lists": CheckedMappingSpec(
                    {}, "mapping", check=parse_list_settings,
                    help='optional, CRM list id -> {"list_id"?: GUID, "member_groups"?: "1354,1359"}; '
                         "other lists get a ListId derived from the account and the list"),
                "columns": CheckedMappingSpec({}, "mapping", check=postatr_api.parse_column_settings,
                                              help=postatr_api.COLUMNS_HELP),
                "fields": CheckedMappingSpec({}, "mapping", check=postatr_api.check_fields,
                                             help="extra CRM member columns -> Postatr MyColumns "
                                                  "(docs/crm-contract.md); phone and city go by the columns setting"),
            },
        ),
        ProviderSpec(
            name="postacell",
            title="Postacell e-mail API",
            default_base_url="https://app.postacell.com.tr/api/v1/",
            credentials=(
                CredentialField("username", "Postacell user name or e-mail", secret=False),
                CredentialField("password", "Postacell password"),
            ),
            settings={
                "concurrency": SettingSpec(4, "int", minimum=1, help="requests in flight at once"),
                "rate_per_s": SettingSpec(10, "number", minimum=0, help=(
                    "requests per second at most (the documented 10); the pace is learnt from 429s "
                    "below it; 0 = no ceiling")),
            },
        ),
        ProviderSpec(
            name="mailmasterplus",
            title="MailMasterPlus REST API (HTTP basic auth)",
            default_base_url="http://restapi.emesz.com/",
            credentials=(
                CredentialField("username", "MMP API user name", secret=False),
                CredentialField("password", "MMP API password"),
            ),
            settings={"lists": CheckedMappingSpec(
                {}, "mapping", check=parse_list_mapping,
                help='CRM list id -> {"nl_id", "subscribe_form", "update_form", "name"?, "fields"?}'),
                mmp_api.CONCURRENCY_SETTING: SettingSpec(
                    mmp_api.CONCURRENCY, "int", minimum=1,
                    help="most requests in flight: the ceiling of the adaptive limit, which starts at 2 and "
                         "climbs while answers stay fast and unrefused (the document gives no limit)")},
        ),
        ProviderSpec(
            name="wapcrm",
            title="WapCRM (WhatsApp / call centre CRM)",
            default_base_url="https://cxapi.wapcrm.net/api/",
            credentials=(CredentialField("secret_key", "X-CIB-SecretKey (Ayarlar > Api)"),),
            settings={
                "secret_header": CheckedTextSpec(wapcrm_api.SECRET_HEADER, "text", check=wapcrm_api.parse_header_name,
                                                 help="the header carrying the secret key (help pages: "
                                                      "X-WapCrm-SecretKey)"),
                "instance_id": SettingSpec(0, "int", minimum=0, help="read messages of this instance only; 0 = all"),
                "first_days": SettingSpec(30, "int", minimum=1, help="days of conversations the first run reads"),
                "lookback_days": SettingSpec(2, "int", minimum=0, help="days re-read before the watermark"),
                "messages_refresh_per_run": SettingSpec(
                    100, "int", minimum=0, help="message lists of members without news refreshed per run"),
                "conversations_reread_days": SettingSpec(
                    30, "int", minimum=0, help="days of conversations re-read in full now and then; 0 = off"),
                "conversations_reread_every_days": SettingSpec(
                    7, "int", minimum=0, help="days between those full re-reads; 0 = off"),
                "messages_refresh_days": SettingSpec(
                    7, "int", minimum=0, help="days within which every member's messages are read; 0 = off"),
                wapcrm_api.REQUEST_READING_SETTING: CheckedTextSpec(
                    wapcrm_api.DEFAULT_REQUEST_READING, "text", check=wapcrm_api.parse_request_reading,
                    help="how a request model travels: post-json (the document) or get-query; "
                         "`connection test` finds the one the account answers"),
            },
        ),
    )
}


def get_spec(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigurationError(f"unknown provider {name!r} (valid: {', '.join(sorted(PROVIDERS))})") from None


def mask(value: str) -> str:
    """Show that a secret is set without showing it."""
    return "****" + (value[-2:] if len(value) >= 12 else "")

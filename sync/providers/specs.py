"""What each provider needs from an operator: credential fields, settings, default address.

A plain name -> spec table: the registry validates credentials with it, and a wrong name
gets the list of valid ones. The sync code of each provider lives in its own module and is
looked up through :data:`IMPLEMENTATIONS` in ``sync.providers.base``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.errors import ConfigurationError, CredentialsError


@dataclass(frozen=True)
class CredentialField:
    name: str
    help: str
    secret: bool = True


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    title: str
    default_base_url: str
    credentials: tuple[CredentialField, ...]
    #: Credentials the integrator holds once for all tenants (Euromsg's clientName/password).
    integrator_credentials: tuple[CredentialField, ...] = ()
    #: Settings with their defaults; anything else given as a setting is refused.
    settings: Mapping[str, Any] = field(default_factory=dict)

    def validate_credentials(self, given: Mapping[str, Any], *, integrator: bool = False) -> dict[str, str]:
        """Return the credentials as clean strings, or say exactly which fields are wrong."""
        fields = self.integrator_credentials if integrator else self.credentials
        if not fields:
            raise CredentialsError(f"{self.name} has no integrator credentials")
        names = [f.name for f in fields]
        missing = [n for n in names if not isinstance(given.get(n), str) or not given[n].strip()]
        if missing:
            raise CredentialsError(
                f"{self.name} credentials: missing or empty field(s) {', '.join(missing)} "
                f"(expected: {', '.join(names)})"
            )
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise CredentialsError(
                f"{self.name} credentials: unknown field(s) {', '.join(unknown)} (expected: {', '.join(names)})"
            )
        return {n: str(given[n]).strip() for n in names}

    def validate_settings(self, given: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.settings))
        if unknown:
            known = ", ".join(sorted(self.settings)) or "none"
            raise ConfigurationError(f"{self.name}: unknown setting(s) {', '.join(unknown)} (known: {known})")
        merged = dict(self.settings)
        for key, value in given.items():
            default = self.settings[key]
            merged[key] = _coerce(key, value, default)
        return merged


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"setting {key} must be true or false: {value!r}")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigurationError(f"setting {key} must be a whole number: {value!r}") from None
    return value


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
            settings={"iys": False},
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
        ),
        ProviderSpec(
            name="postacell",
            title="Postacell e-mail API",
            default_base_url="https://app.postacell.com.tr/api/v1/",
            credentials=(
                CredentialField("username", "Postacell user name or e-mail", secret=False),
                CredentialField("password", "Postacell password"),
            ),
            settings={"concurrency": 4, "rate_per_s": 10},
        ),
        ProviderSpec(
            name="mailmasterplus",
            title="MailMasterPlus REST API (HTTP basic auth)",
            default_base_url="http://restapi.emesz.com/",
            credentials=(
                CredentialField("username", "MMP API user name", secret=False),
                CredentialField("password", "MMP API password"),
            ),
            settings={"lists": {}},
        ),
        ProviderSpec(
            name="wapcrm",
            title="WapCRM (WhatsApp / call centre CRM)",
            default_base_url="https://cxapi.wapcrm.net/api/",
            credentials=(CredentialField("secret_key", "X-CIB-SecretKey (Ayarlar > Api)"),),
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

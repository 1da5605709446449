"""Custom fields: extra columns of the CRM's members relation, mapped per connection to provider fields.

A connection's ``fields`` setting maps a CRM column to the provider's field, as the provider's
document names it (Postacell: the custom field's id from ``GET email/fields``; MailMasterPlus: the
list field's name; Postatr: the ``MyColumns`` key)::

    {"loyalty_tier": "613ef1081ee5c40e796387b8",
     "birth_date": {"field": "dogum_tarihi", "type": "date", "required": true}}

A short form (a string) is a text field that may be empty. ``type`` is one of text, number, date,
boolean; a CRM value that does not fit its type, or an empty value of a required field, makes that
member a reject with the reason (it never stops the run). A mapped column that the members
relation does not have is a configuration error naming the column, before anything is sent; a
mapping on a provider that has no custom fields is refused the same way.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sync.errors import ConfigurationError, RejectedRow

FieldType = Literal["text", "number", "date", "boolean"]
TYPES: tuple[FieldType, ...] = ("text", "number", "date", "boolean")
#: A CRM column name we are willing to put in a SELECT (it is a configured identifier, quoted by
#: SQLAlchemy anyway; this keeps typos and injection attempts out of the error path).
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: The contract's own columns: mapped through the provider's standard fields, not as custom ones.
RESERVED = frozenset({"tenant_id", "id", "email", "first_name", "last_name", "phone", "city", "consent_status",
                      "consent_date", "consent_source", "recipient_type", "updated_at", "deleted_at"})
VALIDATION = "field"


@dataclass(frozen=True)
class FieldMap:
    column: str          # CRM column of the members relation
    target: str          # the provider's field
    type: FieldType = "text"
    required: bool = False


def check_field_mapping(key: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The ``fields`` setting, checked and in its long form; one line for the first wrong entry."""
    checked: dict[str, Any] = {}
    targets: set[str] = set()
    for column, spec in mapping.items():
        where = f"setting {key}: {column!r}"
        if not isinstance(column, str) or not _COLUMN.match(column):
            raise ConfigurationError(f"{where} is not a column name (letters, digits and _)")
        if column in RESERVED:
            raise ConfigurationError(f"{where} is a column of the CRM source contract, synced already")
        if isinstance(spec, str):
            spec = {"field": spec}  # noqa: PLW2901 - the short form, read as the long one
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where} must map to a provider field name or "
                                     '{"field": ..., "type": ..., "required": ...}')
        unknown = sorted(set(spec) - {"field", "type", "required"})
        if unknown:
            raise ConfigurationError(f"{where} has unknown key(s) {', '.join(unknown)} (field, type, required)")
        target, kind, required = spec.get("field"), spec.get("type", "text"), spec.get("required", False)
        if not isinstance(target, str) or not target.strip():
            raise ConfigurationError(f"{where} needs a provider field name (\"field\")")
        if kind not in TYPES:
            raise ConfigurationError(f"{where} has type {kind!r}; expected one of {', '.join(TYPES)}")
        if not isinstance(required, bool):
            raise ConfigurationError(f"{where}: required must be true or false")
        if target.strip() in targets:
            raise ConfigurationError(f"{where} maps to provider field {target.strip()!r}, mapped already")
        targets.add(target.strip())
        checked[column] = {"field": target.strip(), "type": kind, "required": required}
    return checked


def field_maps(settings: Mapping[str, Any]) -> tuple[FieldMap, ...]:
    """The connection's mapping (already checked when it was set) as FieldMaps, by column."""
    mapping = settings.get("fields") or {}
    return tuple(FieldMap(column, spec["field"], spec.get("type", "text"), bool(spec.get("required")))
                 for column, spec in sorted(check_field_mapping("fields", mapping).items()))


def convert(maps: tuple[FieldMap, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """Provider field -> value (text, a number, an ISO date, a bool) of one member, or RejectedRow."""
    out: dict[str, Any] = {}
    for m in maps:
        value = values.get(m.column)
        if value is None or (isinstance(value, str) and not value.strip()):
            if m.required:
                raise RejectedRow(f"required field {m.column} is empty", provider_code=VALIDATION)
            continue
        out[m.target] = _typed(m, value)
    return out


def _typed(m: FieldMap, value: Any) -> Any:  # noqa: PLR0911 - one return per type and form
    def wrong() -> RejectedRow:
        shown = str(value)
        shown = shown if len(shown) <= 40 else shown[:39] + "…"
        what = {"number": "a number", "date": "a date (YYYY-MM-DD)", "boolean": "a yes/no value"}[m.type]
        return RejectedRow(f"field {m.column}: {shown!r} is not {what}", provider_code=VALIDATION)

    if m.type == "text":
        return value.strip() if isinstance(value, str) else str(value)
    if m.type == "number":
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, int | float | decimal.Decimal):
            number = decimal.Decimal(str(value))
        else:
            try:
                number = decimal.Decimal(str(value).strip().replace(",", "."))
            except decimal.InvalidOperation:
                raise wrong() from None
        if not number.is_finite():
            raise wrong()
        return int(number) if number == number.to_integral_value() else float(number)
    if m.type == "date":
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        try:
            return dt.date.fromisoformat(str(value).strip()[:10]).isoformat()
        except ValueError:
            raise wrong() from None
    # boolean
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "evet", "e", "t"):
        return True
    if text in ("0", "false", "no", "hayır", "hayir", "h", "f"):
        return False
    raise wrong()

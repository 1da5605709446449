"""Custom field mappings: the setting's checks and the typing of CRM values."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from sync.errors import ConfigurationError, RejectedRow
from sync.fields import FieldMap, check_field_mapping, convert, field_maps
from sync.providers.specs import get_spec


def test_short_and_long_forms_read_the_same() -> None:
    checked = check_field_mapping("fields", {"tier": "f1", "born": {"field": "f2", "type": "date", "required": True}})
    assert checked == {"tier": {"field": "f1", "type": "text", "required": False},
                       "born": {"field": "f2", "type": "date", "required": True}}
    assert field_maps({"fields": checked}) == (FieldMap("born", "f2", "date", True), FieldMap("tier", "f1"))


@pytest.mark.parametrize(("mapping", "message"), [
    ({"email": "f"}, "column of the CRM source contract"),
    ({"drop table": "f"}, "is not a column name"),
    ({"tier": 7}, "must map to a provider field name"),
    ({"tier": {"field": ""}}, "needs a provider field name"),
    ({"tier": {"field": "f", "type": "money"}}, "type 'money'; expected one of text, number, date, boolean"),
    ({"tier": {"field": "f", "required": "yes"}}, "required must be true or false"),
    ({"tier": {"field": "f", "format": "x"}}, "unknown key(s) format"),
    ({"a": "f", "b": "f"}, "mapped already"),
])
def test_a_wrong_mapping_is_one_line_naming_the_entry(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match="setting fields: ") as caught:
        check_field_mapping("fields", mapping)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_every_connection_takes_the_fields_setting() -> None:
    settings = get_spec("postacell").validate_settings({"fields": '{"tier": "f1"}'})
    assert settings["fields"] == {"tier": {"field": "f1", "type": "text", "required": False}}
    with pytest.raises(ConfigurationError, match="setting fields"):
        get_spec("postacell").validate_settings({"fields": '{"tier": {"field": "f1", "type": "money"}}'})


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("text", "  Altın ", "Altın"),
    ("text", 42, "42"),
    ("number", "12,5", 12.5),
    ("number", decimal.Decimal("7.000"), 7),
    ("number", 3, 3),
    ("date", dt.datetime(2026, 5, 1, 23, 0, tzinfo=dt.UTC), "2026-05-01"),
    ("date", "1990-02-03", "1990-02-03"),
    ("boolean", "Evet", True),
    ("boolean", 0, False),
])
def test_values_are_typed(kind: str, value: Any, expected: Any) -> None:
    assert convert((FieldMap("c", "f", kind),), {"c": value}) == {"f": expected}  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "value"), [("number", "on iki"), ("number", True), ("number", "NaN"),
                                             ("date", "31.02.2026"), ("boolean", "belki")])
def test_a_value_that_does_not_fit_is_a_reject_with_the_reason(kind: str, value: Any) -> None:
    with pytest.raises(RejectedRow, match=r"field c: .* is not") as caught:
        convert((FieldMap("c", "f", kind),), {"c": value})  # type: ignore[arg-type]
    assert caught.value.provider_code == "field"


def test_empty_values_are_left_out_unless_required() -> None:
    maps = (FieldMap("a", "fa"), FieldMap("b", "fb", required=True))
    assert convert(maps, {"a": "  ", "b": "x"}) == {"fb": "x"}
    with pytest.raises(RejectedRow, match="required field b is empty"):
        convert(maps, {"a": "x", "b": None})

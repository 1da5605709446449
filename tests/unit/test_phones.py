"""Turkish phone numbers: every way a CRM writes one becomes WapCRM's 905XXXXXXXXX; the rest is refused
with a reason."""

from __future__ import annotations

import pytest

from sync.phones import UnusablePhone, is_mobile, normalize_phone, phone_or_none


@pytest.mark.parametrize("given", [
    "905321234567", "+90 532 123 45 67", "+905321234567", "0090 532 123 4567", "00905321234567",
    "0532 123 45 67", "0532-123-45-67", "0 (532) 123-45.67", "5321234567", " 532 123 4567 ", "532\u00a01234567",
])
def test_every_crm_spelling_of_a_mobile_becomes_wapcrm_format(given: str) -> None:
    assert normalize_phone(given) == "905321234567"


def test_a_landline_is_usable_but_not_a_mobile() -> None:
    phone = normalize_phone("0212 555 66 77")
    assert phone == "902125556677"
    assert not is_mobile(phone) and is_mobile("905321234567")


@pytest.mark.parametrize(("given", "why"), [
    ("", "empty"),
    ("   ", "empty"),
    ("532 123 45", "has 8 digits"),
    ("0532 123 45 678", "has 12 digits"),
    ("+49 30 1234567", "not a Turkish number"),
    ("0049301234567", "not a Turkish number"),
    ("0850 123 45 67", "start with 2, 3, 4 or 5"),
    ("05321234567x", "characters other than digits"),
    ("tel: 0532 123 45 67", "characters other than digits"),
    ("٠٥٣٢١٢٣٤٥٦٧", "characters other than digits"),
    ("9053212345678", "has 13 digits"),
])
def test_an_unusable_number_is_refused_with_a_readable_reason(given: str, why: str) -> None:
    with pytest.raises(UnusablePhone, match=why) as caught:
        normalize_phone(given)
    assert caught.value.reason == str(caught.value)


def test_phone_or_none_never_guesses() -> None:
    assert phone_or_none(None) is None
    assert phone_or_none("12") is None
    assert phone_or_none("0532 123 45 67") == "905321234567"

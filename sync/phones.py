"""The one rule for Turkish phone numbers: how a CRM's number becomes WapCRM's ``905XXXXXXXXX``.

WapCRM's document: "Türkiye numaraları için 905******** formatında ve 9 hane ve üzeri olmak
zorundadır" (Turkish numbers as 905..., at least 9 digits). The engine, the WapCRM client and
its sandbox all call :func:`normalize_phone`, so a number is the same key everywhere. The rule:

1. Drop spaces, dashes, dots, slashes and parentheses (``0 (532) 123-45.67``).
2. The international prefix ``+90`` or ``0090`` becomes ``90``; a trunk ``0`` before the ten
   national digits (``0532...``) and ten national digits alone (``532...``) get ``90`` in front.
3. What is left must be ``90`` + ten digits whose first is 2, 3 or 4 (a landline: calls only) or
   5 (a mobile: calls and WhatsApp). Anything else (letters, too few or too many digits, another
   country's prefix, an 8xx service number) is :class:`UnusablePhone` with a reason a person
   can act on; it never becomes a guess.
"""

from __future__ import annotations

import re

#: WapCRM's shape of a Turkish number: country code, then ten national digits.
COUNTRY_CODE = "90"
NATIONAL_DIGITS = 10
_SEPARATORS = re.compile(r"[\s\-./()\u00a0]")
_NATIONAL = re.compile(r"^[2-5][0-9]{9}$")
#: The longest text we look at (a CRM column may hold anything).
_MAX_INPUT = 64


class UnusablePhone(ValueError):
    """The CRM's phone number cannot be a Turkish number; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_phone(value: str) -> str:
    """``905321234567`` for ``+90 532 123 45 67``, ``0532-123-4567``, ``0090 532 1234567``,
    ``5321234567``; :class:`UnusablePhone` when it cannot be a Turkish number."""
    text = _SEPARATORS.sub("", value.strip())[:_MAX_INPUT + 1]
    if not text:
        raise UnusablePhone("the phone number is empty")
    if text.startswith("+"):
        text = text[1:]
        if not text.startswith(COUNTRY_CODE):
            raise UnusablePhone(f"{value.strip()!r} is not a Turkish number (+90)")
    elif text.startswith("00"):
        text = text[2:]
        if not text.startswith(COUNTRY_CODE):
            raise UnusablePhone(f"{value.strip()!r} is not a Turkish number (0090)")
    if not text.isdigit() or not text.isascii():
        raise UnusablePhone(f"{value.strip()[:_MAX_INPUT]!r} holds characters other than digits, spaces and dashes")
    if len(text) == NATIONAL_DIGITS + 1 and text.startswith("0"):
        national = text[1:]
    elif len(text) == NATIONAL_DIGITS:
        national = text
    elif len(text) == NATIONAL_DIGITS + len(COUNTRY_CODE) and text.startswith(COUNTRY_CODE):
        national = text[len(COUNTRY_CODE):]
    else:
        raise UnusablePhone(f"{value.strip()!r} has {len(text)} digits; a Turkish number has 10 after 0 or +90 "
                            "(e.g. 0532 123 45 67)")
    if not _NATIONAL.match(national):
        raise UnusablePhone(f"{value.strip()!r} is not a Turkish landline or mobile number "
                            "(the ten digits after +90 start with 2, 3, 4 or 5)")
    return COUNTRY_CODE + national


def is_mobile(phone: str) -> bool:
    """A normalised number that can have WhatsApp messages (``905...``)."""
    return phone.startswith(COUNTRY_CODE + "5")


def phone_or_none(value: str | None) -> str | None:
    """The normalised number, or None when ``value`` is empty or unusable (for numbers the
    provider reports: kept raw beside it, never a reject)."""
    if not value:
        return None
    try:
        return normalize_phone(value)
    except UnusablePhone:
        return None

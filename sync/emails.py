"""The one rule for e-mail addresses: how an address is normalised before it is compared or sent.

Engine, provider clients and sandboxes all call :func:`normalize_email`, so an address is the same
key everywhere. The rule:

1. Trim surrounding white space and apply Unicode NFC (a decomposed ``ş`` equals a composed one).
2. Fold case **Turkish-safely**: ``İ`` (U+0130, dotted capital I) becomes ``i``. Python's
   ``"İ".lower()`` gives ``"i̇"`` (``i`` + U+0307 COMBINING DOT ABOVE), which would turn
   ``AYSE.CETİN@GMAİL.COM`` into a different address than ``ayse.cetin@gmail.com``; a stray
   U+0307 after an ``i`` is dropped for the same reason. ASCII ``I`` becomes ``i`` (an address is
   not Turkish text: ``I`` → ``ı`` would be wrong); ``ı`` (dotless) stays as it is.
3. The local part is folded too. RFC 5321 allows a case-sensitive local part, but every provider
   this daemon talks to keeps one contact per address compared without case, and so do mail
   servers in practice; two CRM rows differing only in case are one recipient.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

#: The longest address a provider or our tables accept (RFC 5321 path limit).
MAX_EMAIL_LENGTH = 254
_TURKISH_FOLD = str.maketrans({"İ": "i"})
_COMBINING_DOT_AFTER_I = re.compile("(?<=[iI])\u0307")
_SHAPE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")


def normalize_email(value: str | None) -> str:
    """The comparable form of an address ("" for None); see the module docstring for the rule."""
    if not value:
        return ""
    if value.isascii():     # the common case, and exact: NFC and the Turkish fold leave ASCII alone
        return value.strip().lower()
    text = unicodedata.normalize("NFC", value.strip())
    text = _COMBINING_DOT_AFTER_I.sub("", text.translate(_TURKISH_FOLD))
    return unicodedata.normalize("NFC", text.lower())


def valid_email(value: str | None) -> bool:
    """A normalised address of a plausible shape (local@domain.tld) that fits every table."""
    return bool(value) and len(value or "") <= MAX_EMAIL_LENGTH and _SHAPE.match(value or "") is not None


def email_digest(value: str | None) -> str:
    """SHA-256 (hex) of the normalised address: proves which address an audit row is about without
    keeping the address (the erasure audit)."""
    return hashlib.sha256(normalize_email(value).encode("utf-8")).hexdigest()

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

:func:`valid_email` is the engine's coarse shape check (local@domain.tld, ≤ 254 characters).
:func:`address_problem` is the strict check every provider client applies to the address it is
about to send, with the provider's reading of its document (``utf8_local``, ``idn``), and its
sandbox applies where the document says malformed addresses are refused:

- RFC 5321 §4.5.3.1: a local part of at most 64 octets, a domain of at most 255 octets (253
  characters written without the root's dot, RFC 1035 §2.3.4), labels of at most 63 octets, a
  path of at most 256 octets (254 characters for the address, :data:`MAX_EMAIL_LENGTH`);
- RFC 5322 §3.2.3 / §3.4.1: the local part a dot-atom (atext: ASCII letters, digits and
  ``!#$%&'*+-/=?^_`{|}~``, dots between atoms: no leading, trailing or doubled dot); a quoted
  local part is refused (no provider here documents one);
- RFC 1123 §2.1 / RFC 5321 §2.3.5: domain labels of letters, digits and hyphens, not starting or
  ending with a hyphen, none empty; an ``xn--`` label must be a valid A-label;
- IDNA 2008 (RFC 5890-5893, the ``idna`` package, not Python's IDNA 2003 ``encodings.idna``): a
  non-ASCII label must encode to an A-label. IDNA 2008 disallows emoji (and upper case, symbols,
  punctuation), so an emoji is never valid in a domain, whatever the provider reads;
- ``utf8_local`` (RFC 6531, SMTPUTF8): non-ASCII letters in the local part, only where a
  provider's document says so; never control, format, space or unassigned characters.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Literal

import idna

#: The longest address a provider or our tables accept (RFC 5321 path limit).
MAX_EMAIL_LENGTH = 254
_TURKISH_FOLD = str.maketrans({"İ": "i"})
_COMBINING_DOT_AFTER_I = re.compile("(?<=[iI])\u0307")
_SHAPE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
#: RFC 5321 §4.5.3.1.1: "The maximum total length of a user name or other local-part is 64 octets."
MAX_LOCAL_PART_OCTETS = 64
#: RFC 5321 §4.5.3.1.2: a domain of at most 255 octets on the wire, i.e. 253 characters written.
MAX_DOMAIN_OCTETS = 253
#: RFC 1035 §2.3.4 (and RFC 5890 for an A-label): a label of at most 63 octets.
MAX_LABEL_OCTETS = 63
#: How a provider takes a domain with non-ASCII letters (an IDN, ``örnek.com.tr``):
#: "reject" (its document shows none: refused with a reason saying so), "punycode" (sent as its
#: A-label form, ``xn--rnek-4qa.com.tr``, where the document shows that form), "as_is" (sent in
#: Unicode, where the document says it takes UTF-8 addresses). A domain that IDNA 2008 refuses
#: (an emoji) is refused in every reading.
IdnReading = Literal["reject", "punycode", "as_is"]
#: RFC 5322 §3.2.3 atext (ASCII).
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
#: Unicode categories never valid in an address, even an SMTPUTF8 one: controls, format
#: characters, surrogates, private use, unassigned, separators (spaces).
_NEVER_IN_LOCAL = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


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


def _shown(text: str, limit: int = 40) -> str:
    """A value as a reason shows it: quoted, cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


def _non_ascii(text: str) -> str:
    """The distinct non-ASCII characters of ``text``, as a reason lists them (at most five)."""
    found = list(dict.fromkeys(ch for ch in text if not ch.isascii()))
    return " ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in found[:5]) + (" ..." if len(found) > 5 else "")


def _local_problem(local: str, utf8_local: bool) -> str | None:  # noqa: PLR0911 - one return per rule
    if not local:
        return "has no local part before the @"
    octets = len(local.encode("utf-8"))
    if octets > MAX_LOCAL_PART_OCTETS:
        return (f"has a local part of {octets} octets; RFC 5321 (§4.5.3.1.1) allows at most "
                f"{MAX_LOCAL_PART_OCTETS}")
    if local.startswith(".") or local.endswith("."):
        return "has a local part that starts or ends with a dot (RFC 5322 dot-atom)"
    if ".." in local:
        return "has two dots in a row in its local part (RFC 5322 dot-atom)"
    if not local.isascii():
        if not utf8_local:
            return (f"has non-ASCII characters in its local part ({_non_ascii(local)}); only ASCII "
                    "(RFC 5322 dot-atom) is taken")
        bad = [ch for ch in local if not ch.isascii() and unicodedata.category(ch) in _NEVER_IN_LOCAL]
        if bad:
            return f"has characters no address may hold in its local part ({_non_ascii(''.join(bad))})"
    wrong = sorted({ch for ch in local if ch.isascii() and ch != "." and ch not in _ATEXT})
    if wrong:
        return (f"has characters outside RFC 5322's dot-atom in its local part ({' '.join(map(repr, wrong))}; "
                "letters, digits and !#$%&'*+-/=?^_`{|}~ are allowed)")
    return None


def _label_problem(label: str) -> str | None:
    """An ASCII label's problem (RFC 1123 LDH; an ``xn--`` label must decode), or None."""
    if not label:
        return "has an empty label in its domain (two dots in a row, or a dot at either end)"
    if len(label) > MAX_LABEL_OCTETS:
        return (f"has a domain label of {len(label)} characters ({_shown(label, 20)}); RFC 1035 allows at most "
                f"{MAX_LABEL_OCTETS}")
    if not _LDH.match(label):
        return (f"has a domain label {_shown(label)} that is not letters, digits and inner hyphens "
                "(RFC 1123: no leading or trailing hyphen, no other character)")
    if label[:4].lower() == "xn--":
        try:
            idna.decode(label)
        except idna.IDNAError:
            return f"has a domain label {_shown(label)} that is not a valid punycode (xn--) label"
    return None


def ascii_domain(domain: str) -> str:
    """The domain with every non-ASCII label as its IDNA 2008 A-label (``örnek.com.tr`` ->
    ``xn--rnek-4qa.com.tr``); call after :func:`address_problem` found none (raises otherwise)."""
    return ".".join(label if label.isascii() else idna.alabel(label).decode("ascii")
                    for label in normalize_email(domain).split("."))


def address_problem(email: str, *, utf8_local: bool = False, idn: IdnReading = "reject") -> str | None:
    """Why ``email`` (the address exactly as it would be sent) is not an address this reading
    takes, as a short English phrase that follows "the e-mail address ...", or None when it is.

    ``utf8_local``: the local part may hold non-ASCII letters (RFC 6531); ``idn``: how a non-ASCII
    domain is taken (:data:`IdnReading`). The limits and their sources: the module docstring."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "has no @"
    return _local_problem(local, utf8_local) or _domain_problem(len(local.encode("utf-8")), domain, idn)


def _domain_problem(local_octets: int, domain: str, idn: IdnReading) -> str | None:  # noqa: PLR0911 - one per rule
    if not domain:
        return "has no domain after the @"
    labels = domain.split(".")
    if len(labels) < 2:
        return "has a domain without a dot (a top-level domain alone cannot take mail here)"
    encoded: list[str] = []
    for label in labels:
        if label.isascii():
            if problem := _label_problem(label):
                return problem
            encoded.append(label)
            continue
        try:
            a_label = idna.alabel(normalize_email(label)).decode("ascii")
        except idna.IDNAError as exc:
            return (f"has a domain label {_shown(label)} that IDNA 2008 does not allow ({exc}); emoji and "
                    "symbols are never valid in a domain")
        if idn == "reject":
            return (f"has an internationalised domain (IDN, non-ASCII: {_non_ascii(domain)}), which is not "
                    f"taken here; its ASCII form would be {ascii_domain(domain)}")
        if len(a_label) > MAX_LABEL_OCTETS:
            return (f"has a domain label {_shown(label, 20)} whose IDNA form is {len(a_label)} characters; "
                    f"RFC 1035 allows at most {MAX_LABEL_OCTETS}")
        encoded.append(a_label if idn == "punycode" else label)
    if labels[-1].isdigit():
        return "has a top-level domain of digits only (RFC 3696 §2)"
    octets = len(".".join(encoded).encode("utf-8"))
    if octets > MAX_DOMAIN_OCTETS:
        return f"has a domain of {octets} octets; RFC 5321 allows at most {MAX_DOMAIN_OCTETS}"
    if local_octets + 1 + octets > MAX_EMAIL_LENGTH:
        return f"is {local_octets + 1 + octets} octets long; RFC 5321 allows at most {MAX_EMAIL_LENGTH}"
    return None


def email_digest(value: str | None) -> str:
    """SHA-256 (hex) of the normalised address: proves which address an audit row is about without
    keeping the address (the erasure audit)."""
    return hashlib.sha256(normalize_email(value).encode("utf-8")).hexdigest()

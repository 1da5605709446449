"""What every provider client refuses in an address (sync/providers/base.py, refuse_bad_address):
none of the five documents allows UTF-8 addresses or shows an IDN, so the cases and reasons are
the same for each; the test_field_validation_<provider>.py modules run them through their client."""

from __future__ import annotations

TURKISH = "Çağrı Şükrü Öztürk"


def mail(local: str, domain: str = "ornek.com.tr") -> str:
    return "@".join((local, domain))


#: (address, the start of the reason after "the e-mail address '...' ").
BAD_ADDRESSES: list[tuple[str, str]] = [
    (mail("ay😀se"), "has non-ASCII characters in its local part ('😀' (U+1F600))"),
    (mail("ayse", "😀.com.tr"), "has a domain label '😀' that IDNA 2008 does not allow"),
    (mail("ayşe", "örnek.com.tr"), "has non-ASCII characters in its local part ('ş' (U+015F))"),
    (mail("ayse", "örnek.com.tr"), "has an internationalised domain (IDN, non-ASCII: 'ö' (U+00F6)), which is not "
                                   "taken here; its ASCII form would be xn--rnek-4qa.com.tr"),
    (mail("a" * 65), "has a local part of 65 octets; RFC 5321 (§4.5.3.1.1) allows at most 64"),
    (mail("ayse", "b" * 64 + ".com.tr"), "has a domain label of 64 characters"),
]

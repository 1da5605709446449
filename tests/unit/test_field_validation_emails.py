"""The strict address check every provider client applies (``sync.emails.address_problem``, issue 24):
RFC 5321/5322 limits, the dot-atom local part, LDH labels, IDNA 2008 for a non-ASCII domain."""

from __future__ import annotations

import pytest

from sync.emails import MAX_EMAIL_LENGTH, address_problem, ascii_domain


def mail(local: str, domain: str = "ornek.com.tr") -> str:
    return "@".join((local, domain))


@pytest.mark.parametrize("address", [
    mail("ayse"), mail("Ayse.CETIN", "gmail.com"), mail("a+etiket"), mail("o'brien"), mail("x_y-z"),
    mail("a" * 64), mail("ayse", "b" * 63 + ".com.tr"), mail("ayse", "xn--rnek-4qa.com.tr"),
    mail("ayse", "ex--ample.com"), mail("!#$%&'*+-/=?^_`{|}~", "ornek.com.tr"),
])
def test_addresses_rfc_5321_and_5322_take_pass(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(("address", "why"), [
    ("ayse.ornek.com.tr", "has no @"),
    (mail(""), "no local part"),
    (mail("ayse", ""), "no domain"),
    (mail("a" * 65), "local part of 65 octets; RFC 5321 (§4.5.3.1.1) allows at most 64"),
    (mail("ş" * 33), "local part of 66 octets"),                  # octets, not characters
    (mail("ş"), "non-ASCII characters in its local part ('ş' (U+015F))"),
    (mail(".ayse"), "starts or ends with a dot"),
    (mail("ayse."), "starts or ends with a dot"),
    (mail("ay..se"), "two dots in a row"),
    (mail("ay se"), "outside RFC 5322's dot-atom"),
    (mail('"ayse"'), "outside RFC 5322's dot-atom"),
    (mail("ay😀se"), "non-ASCII characters in its local part ('😀' (U+1F600))"),
    (mail("ayse", "b" * 64 + ".com.tr"), "domain label of 64 characters"),
    (mail("ayse", "ornek..com.tr"), "empty label"),
    (mail("ayse", "ornek.com.tr."), "empty label"),
    (mail("ayse", "-ornek.com.tr"), "no leading or trailing hyphen"),
    (mail("ayse", "ornek-.com.tr"), "no leading or trailing hyphen"),
    (mail("ayse", "orn_ek.com.tr"), "not letters, digits and inner hyphens"),
    (mail("ayse", "xn--zz.com.tr"), "not a valid punycode"),
    (mail("ayse", "localhost"), "without a dot"),
    (mail("ayse", "ornek.123"), "digits only"),
    (mail("ayse", "😀.com.tr"), "IDNA 2008 does not allow"),
    (mail("ayse", "ornek.😀"), "IDNA 2008 does not allow"),
    (mail("ayse", ".".join(["c" * 63] * 4)), "domain of 255 octets; RFC 5321 allows at most 253"),
    (mail("a" * 64, ".".join(["c" * 63] * 3) + ".tr"), f"259 octets long; RFC 5321 allows at most {MAX_EMAIL_LENGTH}"),
])
def test_what_the_rfcs_refuse_is_refused_with_the_rule(address: str, why: str) -> None:
    problem = address_problem(address)
    assert problem is not None and why in problem


def test_an_idn_domain_is_refused_sent_as_punycode_or_as_it_is_by_the_reading() -> None:
    idn = mail("ayse", "örnek.com.tr")
    refused = address_problem(idn, idn="reject")
    assert refused is not None and "internationalised domain (IDN" in refused and "xn--rnek-4qa.com.tr" in refused
    assert address_problem(idn, idn="punycode") is None and address_problem(idn, idn="as_is") is None
    assert ascii_domain("Örnek.com.tr") == "xn--rnek-4qa.com.tr"


def test_an_emoji_is_never_valid_in_a_domain_whatever_the_reading() -> None:
    for reading in ("reject", "punycode", "as_is"):
        problem = address_problem(mail("ayse", "örnek😀.com.tr"), utf8_local=True, idn=reading)
        assert problem is not None and "IDNA 2008 does not allow" in problem and "emoji" in problem


def test_a_utf8_local_part_only_where_the_reading_allows_it_and_never_a_control_character() -> None:
    assert "non-ASCII" in (address_problem(mail("ayşe")) or "")
    assert address_problem(mail("ayşe"), utf8_local=True) is None
    assert "no address may hold" in (address_problem(mail("ay\u200bse"), utf8_local=True) or "")
    assert "65 octets" not in (address_problem(mail("ş" * 32), utf8_local=True) or "")       # 64 octets: fits
    assert "66 octets" in (address_problem(mail("ş" * 33), utf8_local=True) or "")

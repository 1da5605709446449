"""Postatr's wire contract: what the document says and, marked ASSUMED, what it leaves open.

This is the ONE place where the Postatr client (``sync.providers.postatr.client``) and its sandbox
(``sync.providers.postatr.sandbox``) agree on methods, bodies, answers, limits and error codes, and where the
connection's ``lists`` setting is checked. The document (``shared/esp-docs/postatr.txt``, Turkish)
gives the service address, four methods (Authenticate, ReportCampaign, ReportMembers,
StartProcess), their parameters, the names of the answers' fields, the token's 10 minutes, the
three ProcessTypes and a table of error codes. It shows no full answer but Authenticate's.

What the document does NOT offer, and the daemon therefore cannot do: no list or member delete, no
unsubscribe (a Member has no status field), no read of members, lists or groups, and no pull of
unsubscribes or bounces (the member report knows only Ulaştı / Açtı / Tıkladı, and a recipient's
ErrorCode, stored as that campaign's result, never as a member's state).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sync.emails import IdnReading
from sync.errors import ConfigurationError

#: Documented address ("Bağlantı URL ? http://api.postatr.com/api.asmx"); methods are ``<base>/<Method>``.
DEFAULT_BASE_URL: Final = "http://api.postatr.com/api.asmx/"

# --- methods (documented names; POST with a JSON body as the document's examples) ------------
AUTHENTICATE: Final = "Authenticate"
REPORT_CAMPAIGN: Final = "ReportCampaign"
REPORT_MEMBERS: Final = "ReportMembers"
START_PROCESS: Final = "StartProcess"
METHODS: Final = (AUTHENTICATE, REPORT_CAMPAIGN, REPORT_MEMBERS, START_PROCESS)

# --- Authenticate (documented) -----------------------------------------------------------------
#: Body fields: Username, Password, EncryptedId. The answer is an XML string element holding the
#: token; wrong credentials give the all-zero GUID.
AUTH_FIELDS: Final = ("Username", "Password", "EncryptedId")
ZERO_GUID: Final = "00000000-0000-0000-0000-000000000000"
#: "Edindiğiniz yetki kodu 10 dakika süresince geçerli olacaktır" (the token is valid 10 minutes).
TOKEN_LIFETIME_S: Final = 600.0
#: Our choice: a token is renewed this long before its 10 minutes are over (a request that takes
#: the token at 9:59 must not arrive at 10:01).
TOKEN_RENEW_MARGIN_S: Final = 60.0
#: The document's answer: ASMX's XML ``<string>``; the client reads the element's text with or
#: without a declaration and a namespace (and the other readings of the table below).
TOKEN_ANSWER = re.compile(r"^\s*(?:<\?xml[^>]*\?>\s*)?<string(?:\s[^>]*)?>\s*([0-9A-Za-z-]+)\s*</string>\s*$")


def token_answer(token: str) -> str:
    """Authenticate's answer as the sandbox writes it (the client reads it with TOKEN_ANSWER)."""
    return f'<?xml version="1.0" encoding="utf-8"?>\n<string xmlns="http://tempuri.org/">{token}</string>'


# --- answers: what the document leaves open, the readings accepted, how each is recognised -----
#: The document shows one answer (Authenticate's ``<string>``) and otherwise only NAMES the fields
#: an answer returns. Every other shape is open, so the client (``answers.py``) accepts each
#: reasonable reading, normalises it once, notes which one came (``client.readings``), and fails
#: with one line (UnknownReadingError) on an answer in none of them: never an empty pull, never a
#: default state.
#:
#: Left open by the document -> readings accepted -> how each is recognised:
#:
#: - the envelope of every JSON answer -> bare; ASMX's ``{"d": ...}``; ``{"d": "<JSON text>"}`` (a
#:   method returning a serialised string) -> an object whose only key is ``d`` (any case); a string
#:   in it that parses as JSON. ASMX's ``"__type"`` hints in any object are left out (TYPE_HINT).
#: - Authenticate's answer (shown: ``<string>GUID</string>``) -> XML ``<string>`` with or without a
#:   declaration and a namespace; a JSON string, bare or in ``d``; an object with ``Token`` /
#:   ``AuthenticateResult`` / ``Result``; a bare GUID as text -> TOKEN_ANSWER, JSON, TOKEN_KEYS, TOKEN_TEXT.
#: - refused credentials ("0 döner", shown as the all-zero GUID) -> the all-zero GUID; ``0`` -> ZERO_TOKENS.
#: - where ErrorCode is -> a field of the answer object; a field of each recipient row (ReportMembers);
#:   the one row of an array that names nothing (``[{"Email": null, ..., "ErrorCode": 1}]``, a list
#:   method's error) -> ERROR_CODE, key compared without case; an object naming a recipient (Email
#:   or Memberid not empty) is a row, and its code is the recipient's, not the answer's.
#: - ErrorCode's value -> a number or a numeric string; absent, null or "" = none (ASSUMED) -> int().
#: - ReportCampaign / ReportMembers rows -> a bare array; an array in ``d``; under a key
#:   (CAMPAIGN_ROW_KEYS / MEMBER_ROW_KEYS, else the one list of rows the object has), also nested
#:   once as the document's request nests ``Members.Member`` (``{"Members": {"Member": [...]}}``, one
#:   row object there too); an object keyed by CampId / Memberid; one row object (ReportCampaign by
#:   CampId); ErrorCode alone, or ``null``, = no rows -> in that order; a row is an object with a
#:   documented field (ROW_FIELDS); anything else in the object is an unknown reading (never 0
#:   rows with data left unread).
#: - an account without a campaign -> an empty listing; ReportCampaign without CampId answering 40
#:   ("Kampanya yok": no campaign) -> NO_CAMPAIGN, only for the listing (by CampId it is that
#:   campaign's reject).
#: - a campaign's id in ReportCampaign rows (the document lists none) -> CAMPAIGN_ID_KEYS; the key of
#:   an id-keyed object; the CampId asked -> a listing row without one is an unknown reading.
#: - several rows for one campaign (the listed fields include Email and Memberid) -> grouped by
#:   campaign: its first campaign Status, earliest SentDate, latest LastOpenDate.
#: - key spellings -> any case, ``_`` / ``-`` / spaces ignored (``Memberid``, ``MemberId``,
#:   ``member_id``; ``Reason``, ``reason``) -> answer_key().
#: - status words -> the document's, in any case, with or without Turkish letters (``Tikladi``) -> fold().
#: - a recipient not sent yet -> a campaign status (Kuyrukta, Gönderiliyor, İşleniyor) as its Status
#:   -> stored without a send date; any other unknown Status is an unknown reading.
#: - a failed recipient -> a non-zero ErrorCode on its row, whatever its Status -> stored as
#:   ``bounce_type`` FAILED_RECIPIENT with the code and its meaning, never as sent.
#: - dates -> DATE_READINGS in Turkey's time; ISO 8601 (Turkey's time without an offset); ASP.NET's
#:   ``/Date(ms)/`` (UTC) -> in that order; a non-empty date in none is an unknown reading.
#: - StartProcess's answer -> an object with inserted / updated / ignored / ignored_details / campid
#:   / ErrorCode in any key case (bare, in ``d``, JSON text, an array of one) -> any of them present.
#: - ignored_details -> a list of objects (Memberid, Email, a reason under REASON_KEYS); an object
#:   keyed by Memberid (a reason text or an object); JSON text of either; texts naming the member ->
#:   by Memberid, else by e-mail, else a text naming one member of the request; members counted in
#:   ``ignored`` that no detail names are found by halving the request (an upsert may be resent).
#: - StartProcess's login (parameter list: ``Token``; example: Username, Password, EncryptedId in
#:   MyData) -> Token in MyData first; the example's three fields too once the token is refused
#:   there -> error 1 right after a fresh login (a refusal: nothing was applied).
#: - ReportMembers without Memberids ("Göndermezseniz kampanyadaki tüm alıcıları raporlar") -> every
#:   recipient in one answer (the document pages nothing) -> where that is refused with 93 (too
#:   many at once), our linked member ids in chunks.
#: - the MyColumns names of the CRM's phone and city (the document names no such column) ->
#:   DEFAULT_COLUMNS ("phone", "city"), or the ``columns`` setting's -> sent as text, "" when empty.
#: - an e-mail's case (the document shows lower-case examples only) -> the local part as the CRM wrote
#:   it, the domain folded (RFC 5321: only a domain is case-blind) -> outgoing_email().
ANSWER_ENVELOPE: Final = "d"
#: ASMX's ScriptService writes the .NET type of an object into it as ``"__type"``: left out of every answer.
TYPE_HINT: Final = "__type"
ERROR_CODE: Final = "ErrorCode"
#: ASSUMED: no ErrorCode, null or "" means no error ("Hata kodu varsa": only when there is one).
NO_ERROR: Final = 0
#: Keys an object answer of Authenticate may carry its token under (compared without case).
TOKEN_KEYS: Final = ("Token", "AuthenticateResult", "Result", "d")
TOKEN_TEXT = re.compile(r"^\s*\"?\s*([0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12})"
                        r"\s*\"?\s*$")
#: "Bilgiler yanlış ise 0 döner" (wrong credentials give 0), shown as the all-zero GUID.
ZERO_TOKENS: Final = (ZERO_GUID, "0")
#: Keys rows may come under (compared without case); otherwise the one list of rows an object has.
CAMPAIGN_ROW_KEYS: Final = ("Campaigns", "Campaign", "ReportCampaignResult", "Data", "Result", "Results", "Rows",
                            "Items", "Table", "Report")
MEMBER_ROW_KEYS: Final = ("Members", "Member", "Recipients", "ReportMembersResult", "Data", "Result", "Results",
                          "Rows", "Items", "Table", "Report")
#: The fields the document lists for both reports (a row is an object with at least one of them).
ROW_FIELDS: Final = ("Email", "Status", "SentDate", "OpenCount", "LastOpenDate", "Memberid", "CampId")
#: Where a campaign's id may be (ASSUMED: the document lists no id among ReportCampaign's fields;
#: ``CampId`` is the request's own name for it).
CAMPAIGN_ID_KEYS: Final = ("CampId", "CampaignId", "Id", "KampanyaId", "KampanyaNo")
MEMBER_ID_KEYS: Final = ("Memberid",)
#: Where an ignored member's reason may be (compared without case).
REASON_KEYS: Final = ("Reason", "Message", "Error", "Description", "Detail", "Details", "Aciklama", "Sebep", "Neden")


def answer_key(name: str) -> str:
    """A key as compared: without case, ``_``, ``-`` or spaces (``Member_Id`` == ``memberid``)."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def unwrap_answer(body: Any) -> Any:
    """The answer inside ASP.NET's ``{"d": ...}`` envelope, or the body as it is (the sandbox's own
    reading; the client reads every envelope with ``answers.unwrap``)."""
    if isinstance(body, dict) and set(body) == {ANSWER_ENVELOPE}:
        return body[ANSWER_ENVELOPE]
    return body


# --- StartProcess (documented fields; the ONE request builder is below) ------------------------
#: "DataOnly: ... Üyeleri aktarır, günceller, gruplar ve bilgi döndürür. Kampanya bilgileri
#: girseniz bile kampanya başlatmaz." (imports, updates and groups members; never starts a campaign,
#: even with campaign fields.) ThisOnly and AllDatabase START A CAMPAIGN: this daemon never sends
#: them. The builder below has no parameter for the ProcessType, so no caller can choose another.
DATA_ONLY: Final = "DataOnly"
CAMPAIGN_PROCESS_TYPES: Final = ("ThisOnly", "AllDatabase")
PROCESS_TYPES: Final = (DATA_ONLY, *CAMPAIGN_PROCESS_TYPES)
#: "Bir kriter yazmazsanız hata verir" (without a criterion it is an error: code 7). ASSUMED to hold
#: for every ProcessType; we send the document's own example "1=2", which selects nobody, so even
#: a misread ProcessType would reach no recipient.
SEGMENTATION_NOBODY: Final = "1=2"
#: "MemberGroups ... '0' sıfır geçerek yok sayabilirsiniz" ("0" means no group).
NO_GROUPS: Final = "0"
#: ASSUMED: the token goes into ``MyData.Token``. The parameter list names ``Token`` ("Authenticate
#: metodunu kullanarak almış olduğunuz yetki kodu"); the example instead shows Username, Password and
#: EncryptedId inside MyData. The sandbox takes either; the client sends only the token, so the
#: password travels once per 10 minutes, not with every batch.
TOKEN_FIELD: Final = "Token"
#: ASSUMED: how many members one StartProcess takes. The document gives no limit; ASMX's default
#: request limit is 4 MB (maxRequestLength 4096 KB) and a member is well under 1 KB, so 500 members
#: stay far below it while keeping a failed request small. The sandbox takes up to MAX_MEMBERS_PER_PROCESS
#: and answers 96 ("cannot read the members of this JSON") above it.
MAX_MEMBERS_PER_PROCESS: Final = 500
#: Member fields (documented): Memberid (the member's number "sizde kayıtlı", i.e. our CRM member id),
#: FName, LName, Email, MyColumns.
MEMBER_FIELDS: Final = ("Memberid", "FName", "LName", "Email", "MyColumns")

# --- field contents: what the document allows, and our bounds where it is silent ----------------
#: The document gives NO length for any Member field and says nothing of the characters of an
#: address. What it says: StartProcess answers "ignored: Email adresi veya gerekli başka bir
#: verisi hatalı olan üye sayısı" (members whose e-mail address or another required value is
#: wrong are ignored, with ``ignored_details``); its examples are ASCII (``test1@postatr.com``).
#: The client refuses before sending (``client.build_payload``, reject code "validation"); the
#: sandbox ignores a member with "Email adresi hatalı" for an address of the same reading, and
#: refuses no length (the document states none).
#:
#: The address: ASCII local part (RFC 5322 dot-atom): the document shows no other. Source: "not in
#: the document: chosen because nothing there says a UTF-8 (SMTPUTF8) address is taken".
ADDRESS_UTF8_LOCAL: Final = False
#: A non-ASCII (IDN) domain: refused with a reason saying so. Source: "not in the document: it
#: shows neither a Unicode domain nor its punycode (xn--) form, so neither is sent".
ADDRESS_IDN: Final[IdnReading] = "reject"
ADDRESS_SOURCE: Final = "its document shows ASCII addresses only, neither a UTF-8 nor a punycode (IDN) one"
#: FName and LName: "not in the document: ours, the width of first_name and last_name in the CRM
#: reference schema (sync/crm.py, String(255))". A longer value is refused, never cut.
MAX_NAME_LENGTH: Final = 255
#: A MyColumns value (phone, city, custom fields): "not in the document: ours, 255 as above". The
#: example's own values read "Test Konu max 99 char" and "Test Mesaj max 250 char": the widths of
#: THAT account's columns ("Kendi tanımladığınız veritabanı alanı": each tenant defines its own),
#: not a limit of the service; a tenant's narrower column is Postatr's to refuse.
MAX_COLUMN_LENGTH: Final = 255
LENGTH_SOURCE: Final = "our bound: the document gives no length"


@dataclass(frozen=True)
class PostatrMember:
    """One ``Members.Member[]`` entry. ``my_columns``: the connection's custom fields (``fields``
    setting) and the contract columns Postatr has no Member field for (phone, city: under
    DEFAULT_COLUMNS or the columns the ``columns`` setting names)."""

    member_id: str
    first_name: str
    last_name: str
    email: str
    my_columns: Mapping[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"Memberid": self.member_id, "FName": self.first_name, "LName": self.last_name,
                "Email": self.email, "MyColumns": dict(self.my_columns)}


def build_start_process(token_slot: dict[str, Any], list_id: str, member_groups: str,
                        members: list[PostatrMember]) -> dict[str, Any]:
    """THE StartProcess body this daemon sends: DataOnly, always.

    ``token_slot`` is the dict the token is written into (``MyData`` itself: the authenticator fills
    ``Token`` before every attempt, and the example's Username/Password/EncryptedId where the service
    wants them: the table above). There is deliberately no ProcessType, MailSubject, MailBody,
    StartDate or MailTestAddress parameter: the body cannot express a campaign.
    """
    token_slot.update({
        "ProcessType": DATA_ONLY,
        "SegmentationFilter": SEGMENTATION_NOBODY,
        "ListId": list_id,
        "MemberGroups": member_groups or NO_GROUPS,
        "Members": {"Member": [member.as_json() for member in members]},
    })
    return {"MyData": token_slot}


#: Answer fields (documented): campid (only when a campaign was started), inserted, updated,
#: ignored, ignored_details, ErrorCode.
#: ``ignored_details``: "Hatalı ve işlenmeyen üyelerin detayları" (the details of the members not
#: processed); its shape is open (the table above). The reasons the sandbox gives, in Turkish (ASSUMED),
#: with their English text for the reject; any other reason is kept as it came:
IGNORED_REASONS: Final[Mapping[str, str]] = {
    "Email adresi hatalı": "the e-mail address is invalid",
    "Memberid boş": "the Memberid is empty",
    "Gerekli veri hatalı": "a required value is invalid",
    "Bu email adresi belirtilen işlemi yapamıyor": "this e-mail address cannot do this operation",
}

# --- ReportCampaign / ReportMembers --------------------------------------------------------------
#: ReportCampaign: Token and CampId; "şimdiye kadar gönderdiğiniz tüm kampanyaların genel bilgileri"
#: (general information of every campaign so far): ASSUMED that is the answer without CampId.
#: Returned fields (documented): Email, Status, SentDate, OpenCount, LastOpenDate, Memberid, ErrorCode;
#: their container is open (the table above). The sandbox's "document" dialect answers
#: ``{"d": {"ErrorCode": 0, "Campaigns": [{"CampId", "MailDescription", "MailSubject", "Status",
#: "SentDate", "OpenCount", "LastOpenDate"}]}}``, the same shape (one item) with a CampId.
CAMPAIGNS_FIELD: Final = "Campaigns"
#: Campaign statuses (documented): being processed, being sent, queued, completed.
CAMPAIGN_STATUSES: Final = ("İşleniyor", "Gönderiliyor", "Kuyrukta", "Tamamlandı")
CAMPAIGN_COMPLETED: Final = "Tamamlandı"
#: ASSUMED (our policy): opens keep arriving after "Tamamlandı", so a completed campaign's results
#: are final only this many days after it was sent.
FINAL_AFTER_DAYS: Final = 30
#: ReportMembers: Token, CampId, Memberids (our member ids; "Göndermezseniz kampanyadaki tüm alıcıları
#: raporlar": without them every recipient). The client asks WITHOUT Memberids: one call per campaign
#: (the document pages nothing), whoever the recipients are. Returned fields (documented): Email,
#: Status, SentDate, OpenCount, LastOpenDate, Memberid, ErrorCode (per recipient: "hata kodu varsa");
#: the container is open (the table above). The sandbox's "document" dialect answers ``{"d":
#: {"ErrorCode": 0, "Members": [{"Memberid", "Email", "Status", "SentDate", "OpenCount", "LastOpenDate",
#: "ErrorCode"}]}}``; a member id not in the campaign is absent.
MEMBERS_FIELD: Final = "Members"
#: Recipient statuses (documented): delivered, opened, clicked (a click implies an open).
RECIPIENT_STATUSES: Final = ("Ulaştı", "Açtı", "Tıkladı")
#: ASSUMED: how many member ids ReportMembers takes before it answers 93 ("Çok fazla sayıda üyeyi aynı
#: anda raporlamaya çalışıyorsunuz"). Only used where the service answers 93 to the call without ids
#: (a reading of a large campaign): the client then asks by our linked member ids, starting with
#: REPORT_MEMBERS_CHUNK and halving the chunk whenever 93 still comes; the sandbox's limit is configurable.
REPORT_MEMBERS_LIMIT: Final = 100
REPORT_MEMBERS_CHUNK: Final = 100
#: Our choice: recipients handed to the engine per page (it stores each page in its own transaction).
REPORT_PAGE: Final = 1000
#: What a recipient with a non-zero ErrorCode is stored as (``campaign_results.bounce_type``, 8
#: characters): not sent, and not known to be a hard or a soft bounce.
FAILED_RECIPIENT: Final = "failed"
#: Dates: the document shows "27.01.2018 14:07" (StartDate's stated format) and "2019-04-14 18:59:59"
#: (its example). ASSUMED: answers use either, in Turkey's time; the client also reads .NET's
#: ``DateTime.ToString()`` of a server in another culture ("27/01/2018 14:07:00"; with AM/PM, month
#: first: "1/27/2018 2:07:00 PM"), ISO 8601 and ASP.NET's ``/Date(ms)/`` (the table above).
DATE_READINGS: Final[Mapping[str, str]] = {
    "%d.%m.%Y %H:%M": "dd.MM.yyyy HH:mm[:ss]", "%d.%m.%Y %H:%M:%S": "dd.MM.yyyy HH:mm[:ss]",
    "%Y-%m-%d %H:%M:%S": "yyyy-MM-dd HH:mm[:ss]", "%Y-%m-%d %H:%M": "yyyy-MM-dd HH:mm[:ss]",
    "%d.%m.%Y": "dd.MM.yyyy", "%Y-%m-%d": "yyyy-MM-dd",
    "%d/%m/%Y %H:%M:%S": "dd/MM/yyyy HH:mm[:ss]", "%d/%m/%Y %H:%M": "dd/MM/yyyy HH:mm[:ss]",
    "%m/%d/%Y %I:%M:%S %p": "M/d/yyyy h:mm:ss AM/PM",
}
DATE_FORMATS: Final = tuple(DATE_READINGS)
MS_AJAX_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
SERVICE_TIME_ZONE: Final = "Europe/Istanbul"

# --- error codes: THE table ---------------------------------------------------------------------
#: What a caller does with a code:
#: - relogin: the token is not valid (any more): log in again, send once more;
#: - auth: the credentials/user are refused (the connection stops, a person acts);
#: - fatal: our request is wrong or the account cannot do it; retrying will not help;
#: - retry: the service could not do it now; backed off and tried again;
#: - item: about the one thing the request concerns (a member, a campaign, a chunk of member ids):
#:   that item's reject or a smaller request; never the connection's failure.
Action = Literal["relogin", "auth", "fatal", "retry", "item"]


@dataclass(frozen=True)
class ErrorCode:
    code: int
    turkish: str
    english: str
    action: Action


_ERRORS: Final = (
    ErrorCode(1, "Login veya Token Geçersiz", "login or token invalid", "relogin"),
    ErrorCode(2, "Yetkisiz Kullanıcı", "unauthorised user (is this IP address allowed to use the service?)",
              "auth"),
    ErrorCode(3, "Çıkış linki bulunamadı", "unsubscribe link not found (a campaign error)", "fatal"),
    ErrorCode(4, "Segmentationfilter bu şekilde kullanılamaz", "SegmentationFilter cannot be used like this",
              "fatal"),
    ErrorCode(5, "Kayıtlı filtre bulunamadı", "saved filter not found", "fatal"),
    ErrorCode(7, "Segmentationfilter boş olamaz", "SegmentationFilter cannot be empty", "fatal"),
    ErrorCode(9, "Kampanya başlatılamıyor. Lütfen parametreleri kontrol ediniz.",
              "the campaign cannot be started; check the parameters", "fatal"),
    ErrorCode(18, "İşlemleriniz doğru yapıldı ama kampanya başlatılamadı. Belirttiğiniz kriterde kayıt "
                  "bulunamıyor. SegmentationFilter alanınız sonuç üretmiyor.",
              "processed, but no campaign started: the SegmentationFilter matches no record", "fatal"),
    ErrorCode(19, "Kampanya başlatmak için veriler uygun değil", "the data is not fit to start a campaign",
              "fatal"),
    ErrorCode(40, "Kampanya yok veya henüz işlenmedi", "no such campaign, or not processed yet", "item"),
    ErrorCode(41, "Bu kampanya bilgilerine erişim yetkiniz yok", "no access to this campaign's information",
              "item"),
    ErrorCode(42, "Kampanya detaylarına ulaşılamıyor", "the campaign's details cannot be reached", "retry"),
    ErrorCode(49, "Kampanya bilgileri alınamıyor", "the campaign's information cannot be obtained", "retry"),
    ErrorCode(71, "Mail Subject bulunamadı", "mail subject not found (a campaign error)", "fatal"),
    ErrorCode(72, "Mail Subject çok kısa", "mail subject too short (a campaign error)", "fatal"),
    ErrorCode(80, "Hiç kayıtlı gönderen hesabı yok", "no sender account registered", "fatal"),
    ErrorCode(81, "Gönderen hesapları alınamıyor", "the sender accounts cannot be read", "fatal"),
    ErrorCode(82, "SenderId tamsayı olmalıdır", "SenderId must be a whole number", "fatal"),
    ErrorCode(83, "Bu gönderen hesabını kullanamazsınız", "you cannot use this sender account", "fatal"),
    ErrorCode(91, "Bu kullanıcı belirtilen işlemi yapamıyor", "this user cannot do this operation", "fatal"),
    ErrorCode(92, "Bu email adresi belirtilen işlemi yapamıyor", "this e-mail address cannot do this operation",
              "item"),
    ErrorCode(93, "Çok fazla sayıda üyeyi aynı anda raporlamaya çalışıyorsunuz",
              "too many members reported at once", "item"),
    ErrorCode(95, "Bu JSON dosyayı çözülemiyor. Serileştirme işleminizi kontrol edin.",
              "the JSON cannot be parsed; check the serialisation", "fatal"),
    ErrorCode(96, "Bu JSON dosyayındaki üyeler alınamıyor. Serileştirme işleminizi kontrol edin.",
              "the members of this JSON cannot be read; check the serialisation", "fatal"),
    ErrorCode(97, "Bu JSON dosyayından hiç bir üye eklenmedi & güncellenmedi.",
              "no member of this JSON was added or updated", "item"),
    ErrorCode(101, "ProcessType alanı hatalı veya hiç gönderilmemiş. Gönderilen bilgilerle ne yapılacağı "
                   "anlaşılmıyor.", "ProcessType is wrong or missing", "fatal"),
    ErrorCode(102, "ProcessType alanı gönderilmiş ancak karşılığı tanımsız. \"DataOnly\", \"ThisOnly\", "
                   "\"AllDatabase\" geçmelisiniz.", "ProcessType is not one of DataOnly, ThisOnly, AllDatabase",
              "fatal"),
)
ERROR_CODES: Final[Mapping[int, ErrorCode]] = {error.code: error for error in _ERRORS}
#: Codes the service answers that the document does not list ("Burada olmayan bir hata alıyorsanız
#: lütfen iletişime geçin": contact us): fatal, so a person looks.
UNKNOWN_ERROR_ACTION: Final[Action] = "fatal"
RELOGIN: Final = 1
#: "Kampanya yok veya henüz işlenmedi": to ReportCampaign without CampId, an account without a campaign.
NO_CAMPAIGN: Final = 40
TOO_MANY_TO_REPORT: Final = 93
NOTHING_PROCESSED: Final = 97


def describe_error(code: int) -> str:
    """``Postatr error 93 (too many members reported at once; "Çok fazla ...")``."""
    known = ERROR_CODES.get(code)
    if known is None:
        return f"Postatr error {code} (not in the document's table)"
    return f"Postatr error {code} ({known.english}; \"{known.turkish}\")"


def action_of(code: int) -> Action:
    known = ERROR_CODES.get(code)
    return known.action if known is not None else UNKNOWN_ERROR_ACTION


# --- lists: a ListId per CRM list ---------------------------------------------------------------
#: "Listid: Gönderdiğiniz her dataya bir listid numarası atayın" (give every data you send a listid):
#: the SENDER chooses the ListId, a GUID (the examples). So no list is made in a panel and none is
#: ever read back: each CRM list gets a stable GUID derived from the Postatr account (its user name)
#: and the CRM list id, recorded in the list link; the ``lists`` setting may give a list its own
#: ListId (one the tenant already uses) and its MemberGroups (group numbers made in the panel).
#: ASSUMED: the service keeps one member per Memberid in an account (an e-mail need not be unique:
#: Memberid is the key) and remembers every ListId and group it was sent with (nothing documented
#: takes one away); a member unsubscribed by a recipient stays so through DataOnly updates.
LIST_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "http://api.postatr.com/api.asmx#ListId")


def derived_list_id(account: str, crm_list_id: str) -> str:
    """The stable ListId of a CRM list in one Postatr account."""
    return str(uuid.uuid5(LIST_NAMESPACE, f"{account.strip().lower()}/{crm_list_id}"))


def list_label(list_id: str) -> str:
    """How a ListId is named where a name is shown (Postatr lists have none)."""
    return f"Postatr ListId {list_id}"


_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_GROUPS = re.compile(r"^\s*[1-9][0-9]{0,9}(\s*,\s*[1-9][0-9]{0,9})*\s*$")
LIST_SETTING_KEYS: Final = ("list_id", "member_groups")


def is_guid(value: str) -> bool:
    return bool(_GUID.match(value))


def normalize_groups(value: str) -> str:
    """``"1354, 1359"`` -> ``"1354,1359"``; ``"0"`` or empty -> NO_GROUPS."""
    text = value.strip()
    if text in ("", NO_GROUPS):
        return NO_GROUPS
    return ",".join(part.strip() for part in text.split(","))


def parse_list_settings(key: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """The ``lists`` setting: ``{"<CRM list id>": {"list_id"?: GUID, "member_groups"?: "1354,1359"}}``,
    checked; one line for the first problem. CRM lists absent here get a derived ListId and no group."""
    checked: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for crm_list, entry in value.items():
        if not str(crm_list).strip():
            raise ConfigurationError(f"setting {key}: a CRM list id is empty")
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"setting {key}: list {crm_list!r} must map to an object with "
                                     f"{' and/or '.join(LIST_SETTING_KEYS)}")
        unknown = sorted(set(entry) - set(LIST_SETTING_KEYS))
        if unknown:
            raise ConfigurationError(f"setting {key}: list {crm_list!r}: unknown key(s) {', '.join(unknown)} "
                                     f"(known: {', '.join(LIST_SETTING_KEYS)})")
        item: dict[str, str] = {}
        list_id = entry.get("list_id")
        if list_id is not None:
            if not isinstance(list_id, str) or not is_guid(list_id.strip()):
                raise ConfigurationError(f"setting {key}: list {crm_list!r}: list_id must be a GUID: {list_id!r}")
            item["list_id"] = list_id.strip().lower()
            if item["list_id"] in owners:
                raise ConfigurationError(f"setting {key}: lists {owners[item['list_id']]!r} and {crm_list!r} "
                                         f"both use ListId {item['list_id']}")
            owners[item["list_id"]] = str(crm_list)
        groups = entry.get("member_groups")
        if groups is not None:
            text = str(groups) if isinstance(groups, int) and not isinstance(groups, bool) else groups
            if not isinstance(text, str) or not (text.strip() in ("", NO_GROUPS) or _GROUPS.match(text)):
                raise ConfigurationError(f"setting {key}: list {crm_list!r}: member_groups must be group numbers "
                                         f'separated by commas, e.g. "1354,1359": {groups!r}')
            item["member_groups"] = normalize_groups(text)
        checked[str(crm_list)] = item
    return checked


# --- member columns: what a Member carries ------------------------------------------------------
#: A Member has Memberid, FName, LName, Email and MyColumns (documented); MyColumns holds the
#: account's own database columns ("Kendi tanımladığınız veritabanı alanı": a column you defined),
#: named by the tenant in Postatr. The CRM contract's phone and city have no Member field, so they
#: go in MyColumns: by default under the CRM contract's own names (DEFAULT_COLUMNS), ASSUMED, since
#: the document names no phone or city column; its example's MyColumns keys are lower-case words,
#: English ones among them ("subject", "message"). The ``columns`` setting names the account's own
#: columns instead (``{"phone": "telefon", "city": "sehir"}``), or ``""`` / null to send one not at all.
CONTRACT_COLUMNS: Final = ("phone", "city")
#: Source: the CRM source contract's column names (docs/crm-contract.md, "The CRM source contract").
DEFAULT_COLUMNS: Final[Mapping[str, str]] = {"phone": "phone", "city": "city"}
#: The contract columns a Member carries in its own fields (so neither ``columns`` nor ``fields``).
MEMBER_FIELD_OF: Final[Mapping[str, str]] = {"email": "Email", "first_name": "FName", "last_name": "LName"}
#: A Postatr database column name, as the document's examples show them (``bagissifresi``,
#: ``uyekodu``, ``TestGrup``): letters (Turkish ones too), digits and ``_``. ASSUMED: at most 64.
_COLUMN_NAME = re.compile(r"^[^\W\d]\w{0,63}$")
COLUMNS_HELP: Final = ('optional, {"phone"?: column, "city"?: column}: the Postatr database columns (MyColumns) '
                       'the CRM phone and city are sent in (default: "phone" and "city"; "" = not sent)')


def parse_column_settings(key: str, value: Mapping[str, Any]) -> dict[str, str]:
    """The ``columns`` setting, checked: CRM contract column -> Postatr database column, ``""`` for a
    column not sent; one line for the first problem."""
    checked: dict[str, str] = {}
    for column, target in value.items():
        where = f"setting {key}: {column!r}"
        if column in MEMBER_FIELD_OF:
            raise ConfigurationError(f"{where} is sent in the Member's own field {MEMBER_FIELD_OF[column]} already")
        if column not in CONTRACT_COLUMNS:
            raise ConfigurationError(f"{where}: only {', '.join(CONTRACT_COLUMNS)} are named here (CRM contract "
                                     "columns without a Postatr Member field); extra CRM columns go in the "
                                     "fields setting")
        if target is None or (isinstance(target, str) and not target.strip()):
            checked[str(column)] = ""
            continue
        if not isinstance(target, str) or not _COLUMN_NAME.match(target.strip()):
            raise ConfigurationError(f"{where} must name a Postatr database column (letters, digits and _), "
                                     f"e.g. \"telefon\", or be \"\" to send it not at all: {target!r}")
        if target.strip() in checked.values():
            raise ConfigurationError(f"{where}: column {target.strip()!r} is named twice")
        checked[str(column)] = target.strip()
    return checked


def _field_targets(fields: Mapping[str, Any]) -> set[str]:
    return {str(spec["field"]) if isinstance(spec, Mapping) else str(spec) for spec in fields.values()}


def member_columns(columns: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, str]:
    """The MyColumns the contract columns go in: the ``columns`` setting over DEFAULT_COLUMNS, without
    those set to ``""``; a default column that a custom field (``fields``) sends already is left to
    that field (the tenant named it). ConfigurationError when the ``columns`` setting itself names a
    custom field's column (one CRM value per column)."""
    targets = _field_targets(fields)
    clash = next((target for target in columns.values() if target and target in targets), None)
    if clash is not None:
        raise ConfigurationError(f"Postatr column {clash!r} is named by both the columns and the fields setting: "
                                 "one CRM value per column")
    chosen = {column: columns.get(column, DEFAULT_COLUMNS[column]) for column in CONTRACT_COLUMNS}
    return {column: target for column, target in chosen.items()
            if target and not (column not in columns and target in targets)}


def check_fields(key: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The ``fields`` setting of a Postatr connection: the common check (``sync.fields``), with a
    true line for a contract column: Postatr gets phone and city in MyColumns already (named by the
    ``columns`` setting), and has no field for the consent columns (they decide the member's status
    and are not sent)."""
    from sync.fields import RESERVED, check_field_mapping

    for column in mapping:
        where = f"setting {key}: {column!r}"
        if column in CONTRACT_COLUMNS:
            example = "telefon" if column == "phone" else "sehir"
            raise ConfigurationError(
                f"{where} is a column of the CRM source contract, sent already in MyColumns (as "
                f"\"{DEFAULT_COLUMNS[column]}\" unless the columns setting names another column): to send it under "
                f"another name use --setting 'columns={{\"{column}\": \"{example}\"}}'")
        if column in MEMBER_FIELD_OF:
            raise ConfigurationError(f"{where} is a column of the CRM source contract, sent in the Member's own "
                                     f"field {MEMBER_FIELD_OF[column]} already")
        if column in RESERVED:
            raise ConfigurationError(f"{where} is a column of the CRM source contract that decides the member's "
                                     "status or identity; Postatr has no field for it and it is not a custom field")
    return check_field_mapping(key, mapping)


def outgoing_email(address: str) -> str:
    """An address as Postatr gets it: the local part exactly as the CRM has it (RFC 5321 lets a
    mailbox's local part be case-sensitive), the domain folded (domains are not); trimmed."""
    from sync.emails import normalize_email

    text = unicodedata.normalize("NFC", address.strip())
    local, at, domain = text.rpartition("@")
    return f"{local}@{normalize_email(domain)}" if at else text


_TR_ASCII = str.maketrans({"ş": "s", "ı": "i", "ç": "c", "ğ": "g", "ü": "u", "ö": "o", "â": "a", "î": "i",
                           "û": "u"})


def fold(text: str) -> str:
    """A status word as compared: without case, Turkish letters or surrounding space (``Tikladi``
    == ``Tıkladı``)."""
    folded = unicodedata.normalize("NFC", str(text).strip().replace("İ", "i").replace("I", "ı").casefold())
    return unicodedata.normalize("NFC", folded.translate(_TR_ASCII)).replace("\u0307", "")

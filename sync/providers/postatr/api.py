"""Postatr's wire contract: what the document says and, marked ASSUMED, what it leaves open.

This is the ONE place where the Postatr client (``sync.providers.postatr.client``) and its sandbox
(``sync.providers.postatr.sandbox``) agree on methods, bodies, answers, limits and error codes, and where the
connection's ``lists`` setting is checked. The document (``shared/esp-docs/postatr.txt``, Turkish)
gives the service address, four methods (Authenticate, ReportCampaign, ReportMembers,
StartProcess), their parameters, the names of the answers' fields, the token's 10 minutes, the
three ProcessTypes and a table of error codes. It shows no full answer but Authenticate's.

What the document does NOT offer, and the daemon therefore cannot do: no list or member delete, no
unsubscribe (a Member has no status field), no read of members, lists or groups, and no pull of
unsubscribes or bounces (the member report knows only Ulaştı / Açtı / Tıkladı).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

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
#: ASSUMED: ASMX's default XML answer, ``<string xmlns="http://tempuri.org/">…</string>``, served
#: as ``text/xml``; the client reads the element's text with or without the namespace.
TOKEN_ANSWER = re.compile(r"^\s*(?:<\?xml[^>]*\?>\s*)?<string(?:\s[^>]*)?>\s*([0-9A-Za-z-]+)\s*</string>\s*$")


def token_answer(token: str) -> str:
    """Authenticate's answer as the sandbox writes it (the client reads it with TOKEN_ANSWER)."""
    return f'<?xml version="1.0" encoding="utf-8"?>\n<string xmlns="http://tempuri.org/">{token}</string>'


# --- JSON answers (ASSUMED shapes; the document only names the fields) --------------------------
#: ASSUMED: every JSON answer is ASP.NET's ScriptService envelope ``{"d": {...}}``; the client also
#: reads a bare object (unwrap_answer). "ErrorCode: Hata kodu varsa buradaki değeri okuyun" (read
#: the error code here when there is one): ASSUMED 0 when there is none, and an error answer is an
#: object with a non-zero ErrorCode (and maybe nothing else), still with HTTP 200.
ANSWER_ENVELOPE: Final = "d"
ERROR_CODE: Final = "ErrorCode"
NO_ERROR: Final = 0


def unwrap_answer(body: Any) -> Any:
    """The answer inside ASP.NET's ``{"d": ...}`` envelope, or the body as it is."""
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
#: FName, LName, Email, MyColumns. ASSUMED: at most 128 characters for each text field (no length
#: is documented; the CRM's own ids and names fit); the sandbox ignores a longer one.
MEMBER_FIELDS: Final = ("Memberid", "FName", "LName", "Email", "MyColumns")
MAX_FIELD_LENGTH: Final = 128


@dataclass(frozen=True)
class PostatrMember:
    """One ``Members.Member[]`` entry. ``my_columns``: mapped custom CRM fields (none yet)."""

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
    ``Token`` before every attempt). There is deliberately no ProcessType, MailSubject, MailBody,
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
#: ASSUMED shape of ``ignored_details``: a list of ``{"Memberid", "Email", "Reason"}``, the reason
#: in Turkish; the ones the sandbox gives, with their English text for the reject:
IGNORED_REASONS: Final[Mapping[str, str]] = {
    "Email adresi hatalı": "the e-mail address is invalid",
    "Memberid boş": "the Memberid is empty",
    "Gerekli veri hatalı": "a required value is invalid (a field is too long)",
}

# --- ReportCampaign / ReportMembers --------------------------------------------------------------
#: ReportCampaign: Token and CampId; "şimdiye kadar gönderdiğiniz tüm kampanyaların genel bilgileri"
#: (general information of every campaign so far): ASSUMED that is the answer without CampId.
#: ASSUMED answer: ``{"ErrorCode": 0, "Campaigns": [{"CampId", "MailDescription", "MailSubject",
#: "Status", "SentDate", "OpenCount", "LastOpenDate"}]}``, the same shape (one item) with a CampId.
CAMPAIGNS_FIELD: Final = "Campaigns"
#: Campaign statuses (documented): being processed, being sent, queued, completed.
CAMPAIGN_STATUSES: Final = ("İşleniyor", "Gönderiliyor", "Kuyrukta", "Tamamlandı")
CAMPAIGN_COMPLETED: Final = "Tamamlandı"
#: ASSUMED (our policy): opens keep arriving after "Tamamlandı", so a completed campaign's results
#: are final only this many days after it was sent.
FINAL_AFTER_DAYS: Final = 30
#: ReportMembers: Token, CampId, Memberids (our member ids; "Göndermezseniz kampanyadaki tüm alıcıları
#: raporlar": without them every recipient). ASSUMED answer: ``{"ErrorCode": 0, "Members": [{"Memberid",
#: "Email", "Status", "SentDate", "OpenCount", "LastOpenDate"}]}``; a member id not in the campaign
#: is absent.
MEMBERS_FIELD: Final = "Members"
#: Recipient statuses (documented): delivered, opened, clicked (a click implies an open).
RECIPIENT_STATUSES: Final = ("Ulaştı", "Açtı", "Tıkladı")
#: ASSUMED: how many member ids ReportMembers takes before it answers 93 ("Çok fazla sayıda üyeyi aynı
#: anda raporlamaya çalışıyorsunuz"). The client starts with REPORT_MEMBERS_CHUNK and halves the
#: chunk whenever 93 still comes (the real limit may be lower); the sandbox's limit is configurable.
REPORT_MEMBERS_LIMIT: Final = 100
REPORT_MEMBERS_CHUNK: Final = 100
#: Dates: the document shows "27.01.2018 14:07" (StartDate's stated format) and "2019-04-14 18:59:59"
#: (its example). ASSUMED: answers use the first, in Turkey's time; the client reads both.
DATE_FORMATS: Final = ("%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
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

"""Euromsg Express CRM/ERP gateway's wire contract: what the document says and, marked ASSUMED,
what it does not.

This is the ONE place where the Euromsg client (``sync.providers.euromsg.client``) and the
Euromsg sandbox (``sync.providers.euromsg.sandbox``) agree on paths, shapes, lifetimes and error codes.
The document (``shared/esp-docs/euromsg-express.txt``) gives the host, the token call and its
answer, the identification call, the operations on lists, members and campaigns in prose, the
campaign statuses and the detail-report filters. It gives no other path, no field name, no paging
rule, no date format and no error shape. The choices below are the most plausible reading of an
ASP.NET gateway (the names ``tokens``, ``tokenValue``, ``expireTime`` and ``health-check`` point
there), written down once.

Membership model: **contact** (one member card holding a set of lists). The document says a list
delete keeps its members ("Liste silindiğinde, üyeler kalır", they stay visible under the members
screen), that PATCH updates "the information on the member card" by member id, and that the member
id is learnt by e-mail: a member exists independently of lists, keyed by e-mail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from sync.emails import IdnReading
from sync.errors import ConfigurationError

# --- readings: what the document leaves open -> the readings accepted -> how each is recognised --
#
# The document shows ONE answer (``tokens``, bare). Every other answer, and where the API key goes,
# is left open; the client accepts each reading below, normalises it once at the edge (client.py,
# ``read_answer``, ``read_rows``, ``member_row``) and notes which came in its
# ``readings`` log. An answer in none of them is an ``UnknownReadingError`` naming the endpoint.
# The sandbox serves every reading (``sandbox.DIALECTS``: document, bare, pascal, post-adds).
#
# Each entry: left open by the document -> readings accepted -> how each is recognised.
#
# * The API key of ``identification`` ("PATH VARIABLES apiKey", a URL with no variable)
#   -> a path variable ``apiKey/identification/{key}`` (DEFAULT: the document lists apiKey under
#      PATH VARIABLES); ``{key}/identification`` (the URL's ``apiKey`` segment is Postman's
#      ``:apiKey``); a query parameter ``apiKey/identification?apiKey={key}``
#   -> the connection setting ``api_key_in`` (a run sends the key that way only; a 404/405 of
#      identification is an error naming the setting); ``connection test`` tries the connection's
#      own reading, then the others in this order, while a call is answered 404/405
#      (``EuromsgProvider.request_fallbacks``), says which answered and stores it.
# * The envelope of answers
#   -> ``{isSuccess, errorCode, message, data}``; the bare value (as the documented ``tokens``)
#   -> an ``isSuccess`` key (any case); else bare.
# * ``tokens`` (shown bare)
#   -> bare ``{tokenValue, expireTime, roles}``; the same inside the envelope; no ``expireTime``
#      (TOKEN_LIFETIME_S ASSUMED, a warning)
#   -> ``isSuccess``; ``tokenValue`` is required, else an unknown reading (keys shown, no value).
# * The path of the lists (the document names the section "Email List" only)
#   -> ``emailList`` (DEFAULT, camelCase as ``apiKey``); ``email-list`` (kebab-case as
#      ``campaign-report``)
#   -> the connection setting ``list_path``; ``connection test`` tries the other on 404/405.
# * The name of a list's id in requests and answers (the document says "listid")
#   -> ``listId`` (literal); ``emailListId`` (after "Email List"); the same for a list set
#   -> requests carry both spellings; answers are read in either (KEY_ALIASES).
# * Key spelling
#   -> camelCase (the document's ``tokenValue``); PascalCase (.NET Newtonsoft's default)
#   -> keys of KNOWN_KEYS matched case-insensitively.
# * ``identification`` answer (the document shows none)
#   -> the envelope; an empty body (200/204); any other 2xx body: JSON ``true``, ``null``, a string,
#      a number, an object (``{"accountName": ...}``, ``{"success": true}``), a text (``OK``); an
#      object with ``tokenValue``: a token issued for the tenant, used from then on
#   -> the status says it; a refusal is ``isSuccess: false``, JSON/text ``false`` (or ``fail``,
#      ``error``), an object whose ``success``/``succeeded``/``result``/``identified`` is false, a
#      4xx: a login failure naming the key and the ``api_key_in`` setting, never a member's reject.
# * Errors
#   -> an envelope ``errorCode`` (inside HTTP 200 or with a 4xx); a 4xx without one
#      (ProblemDetails, text)
#   -> the code; else the status for that call (404 on a member = not found, 409 on POST member =
#      exists, 402 = no sending package, 404/405 on identification = the key goes elsewhere).
# * Collections (lists, members of a list, campaigns, report rows)
#   -> a page object ``{items, totalCount, page, pageSize}`` (``items`` an array or an id-keyed
#      object); a bare array; an id-keyed object ``{"<id>": row}`` (the key is the row's id); a
#      server that ignores paging (every row at once)
#   -> an ``items`` key / an array / every key digits with object values.
# * Paging (``page`` from 1 and ``pageSize`` ASSUMED below)
#   -> honoured; honoured with the gateway's own smaller page size; ignored (every row at once)
#   -> the read ends at ``totalCount``, else at an empty page or a short one after full ones; a
#      short first page makes the next pages be asked in its size; more rows than asked, or a
#      page repeating the previous one's first row, means unpaged. A repeated page short of
#      ``totalCount``, or an empty first page with ``totalCount`` > 0 (pages from 0, paging
#      parameters named otherwise) is an unknown reading: never a partial pull.
# * One member by e-mail
#   -> a collection of 0-1 rows (any reading above); the member object itself; ``null`` or 404
#      for none
#   -> an ``email`` key at the top; null; 404.
# * Ids
#   -> a member's ``memberId`` or ``id``; a list's or campaign's ``id`` or its id-keyed key
#   -> the first present.
# * Create answers (list, member)
#   -> the object with its id; the bare id number (document: "bir id numarası döner")
#   -> an object / an int or digits.
# * A member's status
#   -> MEMBER_STATUSES in any letter case
#   -> a missing or unknown status is an unknown reading, never a state.
# * POST member for an e-mail that has a card
#   -> refused (MEMBER_ALREADY_EXISTS / 409), the card untouched; or "POST adds the member to a
#      list": the card joins the list(s) and takes the fields and status sent
#   -> the error; else the answered card (its status and lists). A create never sends Active.
# * The list set of a create
#   -> ``emailListId`` (documented "listid") plus ``emailListIds`` (ASSUMED), or only the first
#   -> the answered card's ``emailListIds``; an answer without them: the card is read.
# * ``health-check``
#   -> text ``Healthy`` (ASP.NET's default writer); JSON ``{"status": "Healthy", ...}``
#      (HealthChecks UI's writer); a JSON string ``"Healthy"``; either inside the envelope
#   -> a JSON ``status`` key, a JSON string, else the text (any case); Degraded counts as healthy
#      (it still serves); a non-2xx status is "not healthy"; any other body is an unknown reading.
# * Dates
#   -> ISO 8601 with an offset; ``YYYY-MM-DD HH:mm:ss`` (no offset: Turkey time)
#   -> parsed; a date that is there but unreadable is an unknown reading.
#
# Not accepted (no server written from this document would answer so): ASMX's ``{"d": ...}`` (the
# gateway is REST, not ASMX), snake_case keys, numeric enum statuses.

#: Documented host. Every path below is relative to it (documented: ``/tokens``, ``/apiKey/identification``).
DEFAULT_BASE_URL: Final = "https://express-crm-gw.relateddigital.com/"

# --- authentication ------------------------------------------------------------------------
#: Documented: POST {"clientName", "password"} -> 200 {"tokenValue", "expireTime", "roles"}.
#: ASSUMED: wrong credentials -> 401. The answer is read bare (documented) or enveloped (table above).
TOKEN_PATH: Final = "tokens"
#: Documented: "AUTHORIZATION Bearer Token".
AUTH_SCHEME: Final = "Bearer"
#: ASSUMED: the sandbox's token lifetime (the real one is only known through ``expireTime``).
TOKEN_LIFETIME_S: Final = 3600
#: Refresh this many seconds before ``expireTime`` (our policy).
TOKEN_REFRESH_MARGIN_S: Final = 60
#: Documented: PUT, "used to define an account to the CRM firm": the integrator "adds its
#: customer's key to its own token". Where the key goes is a connection setting (API_KEY_READINGS
#: below: the document lists ``apiKey`` under "PATH VARIABLES" but its URL shows no variable);
#: from then on every call with that token acts on that tenant's account. ASSUMED: a token is
#: identified with ONE key for its lifetime; identifying it with another key answers 409
#: API_KEY_ALREADY_IDENTIFIED. The client therefore takes one token per connection (per tenant),
#: never shares it, and identifies every new token before its first call.
IDENTIFICATION_PATH: Final = "apiKey/identification"
API_KEY_PARAM: Final = "apiKey"
#: Where the API key goes (connection setting ``api_key_in``), first = the default: the document
#: lists ``apiKey`` under PATH VARIABLES, so a path variable, after the documented URL.
API_KEY_SETTING: Final = "api_key_in"
API_KEY_READINGS: Final = ("path", "segment", "query")
API_KEY_IN_DEFAULT: Final = API_KEY_READINGS[0]
#: Each reading's path ({key} is the URL-quoted API key); "query" adds ``?apiKey={key}``.
IDENTIFICATION_PATHS: Final[Mapping[str, str]] = {
    "path": "apiKey/identification/{key}", "segment": "{key}/identification", "query": IDENTIFICATION_PATH}
API_KEY_READING_TEXT: Final[Mapping[str, str]] = {
    "path": "a path variable (PUT apiKey/identification/{apiKey})",
    "segment": "the first path segment (PUT {apiKey}/identification)",
    "query": "a query parameter (PUT apiKey/identification?apiKey=...)"}
#: Our code for an identification answered 404/405: the gateway takes the key another way.
ERROR_API_KEY_READING: Final = "API_KEY_READING"
#: Our code for a list index answered 404/405: the lists are at another path (``list_path``).
ERROR_LIST_PATH: Final = "LIST_PATH"


def parse_api_key_in(key: str, value: Any) -> str:
    """The ``api_key_in`` setting, checked (one line naming the valid values)."""
    text = str(value).strip().lower()
    if text not in API_KEY_READINGS:
        raise ConfigurationError(f"euromsg: setting {key} must be one of {', '.join(API_KEY_READINGS)} "
                                 f"(where the API key goes in PUT identification), not {value!r}")
    return text

# --- envelope and errors (ASSUMED) ---------------------------------------------------------
#: The envelope reading (the sandbox's "document" dialect; the table above lists the others):
#: {"isSuccess": bool, "errorCode": str | null, "message": str | null, "data": ...}.
#: Business-rule errors (validation, İYS, an existing member, no sending package) come with
#: HTTP 200 and ``isSuccess: false``; a missing resource with 404, a bad token with 401, a token
#: not identified with an API key with 403, all in the same envelope. Without the envelope, the
#: HTTP status tells (400 validation, 402 no package, 404 not found, 409 exists).
ENVELOPE_KEYS: Final = ("isSuccess", "errorCode", "message", "data")
ERROR_VALIDATION: Final = "VALIDATION_ERROR"            # a field of the row is missing or invalid
ERROR_IYS_VALIDATION: Final = "IYS_VALIDATION_ERROR"    # İYS fields missing or invalid (İYS account)
ERROR_MEMBER_EXISTS: Final = "MEMBER_ALREADY_EXISTS"    # POST member: that e-mail has a card already
ERROR_MEMBER_NOT_FOUND: Final = "MEMBER_NOT_FOUND"
ERROR_LIST_NOT_FOUND: Final = "EMAIL_LIST_NOT_FOUND"
ERROR_CAMPAIGN_NOT_FOUND: Final = "CAMPAIGN_NOT_FOUND"
#: Documented condition ("Gönderim hakkı biten ve aktif paketi olmayan kullanıcıların listelerine
#: üye akışı yapılamamaktadır"); ASSUMED code. Member writes are refused while it lasts.
ERROR_NO_PACKAGE: Final = "NO_ACTIVE_PACKAGE"
ERROR_INVALID_TOKEN: Final = "INVALID_TOKEN"            # 401: unknown or expired token
ERROR_INVALID_CREDENTIALS: Final = "INVALID_CREDENTIALS"  # 401 on tokens
ERROR_INVALID_API_KEY: Final = "INVALID_API_KEY"        # 403 on identification: no such key
ERROR_NOT_IDENTIFIED: Final = "API_KEY_NOT_IDENTIFIED"  # 403: the token has no account yet
ERROR_ALREADY_IDENTIFIED: Final = "API_KEY_ALREADY_IDENTIFIED"  # 409: token bound to another key
ERROR_INTERNAL: Final = "INTERNAL_ERROR"                # a transient fault reported inside a 200
#: Error codes a bare 4xx implies (no ``errorCode`` in the answer), whatever the call (402 Payment
#: Required: ASSUMED, the natural status of "no sending package").
ERROR_BY_STATUS: Final[Mapping[int, str]] = {402: ERROR_NO_PACKAGE}

# --- paging (ASSUMED) ----------------------------------------------------------------------
#: Collections take ``page`` (1-based) and ``pageSize`` and answer (envelope reading)
#: data = {"items": [...], "page", "pageSize", "totalCount"}; a page past the end is empty. Other
#: readings (a bare array, an id-keyed object, no paging at all): the table above.
PAGE_PARAM: Final = "page"
PAGE_SIZE_PARAM: Final = "pageSize"
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 500

# --- email lists (documented operations; ASSUMED paths and fields) ------------------------
#: POST {"name"} -> data {"id": int, "name"} or the bare id (documented: "returns an id number for
#: this list");
#: GET (paged) -> items [{"id", "name", "memberCount", "createDate"}], panel-made lists included.
#: ASSUMED: two lists may have the same name (the document sets no rule).
#: The path is the ``list_path`` setting (LIST_PATHS below); these are its default.
EMAIL_LIST_PATH: Final = "emailList"
#: PATCH {"name"} (rename); DELETE (documented: the members stay, only their membership goes).
EMAIL_LIST_ITEM_PATH: Final = "emailList/{id}"
#: Where the lists are (connection setting ``list_path``), first = the default: the document names
#: the section "Email List" only; its known paths are camelCase (``apiKey/identification``) or
#: kebab-case (``campaign-report``, ``health-check``), so ``emailList`` or ``email-list``.
#: ``connection test`` tries the other where the list index is answered 404/405.
LIST_PATH_SETTING: Final = "list_path"
LIST_PATHS: Final = ("emailList", "email-list")
#: The document calls a list's id "listid" ("listid ile birlikte", "listid ... ile sorgulama"):
#: ``listId`` is its literal reading, ``emailListId`` (the entity "Email List") the other. Every
#: request carries both spellings (a gateway binds the one it knows and ignores the other, as
#: ASP.NET's binders do); answers are read in either (KEY_ALIASES). Likewise a list set.
LIST_ID_KEYS: Final = ("emailListId", "listId")
LIST_IDS_KEYS: Final = ("emailListIds", "listIds")
#: Answer keys read as another (any case): the spelling the client uses.
KEY_ALIASES: Final[Mapping[str, str]] = {"listId": "emailListId", "listIds": "emailListIds"}


def parse_list_path(key: str, value: Any) -> str:
    """The ``list_path`` setting, checked (one line naming the valid values)."""
    text = str(value).strip().strip("/")
    if text not in LIST_PATHS:
        raise ConfigurationError(f"euromsg: setting {key} must be one of {', '.join(LIST_PATHS)} "
                                 f"(where the email lists are), not {value!r}")
    return text


# --- members (documented operations; ASSUMED paths and fields) ----------------------------
#: POST {"emailListId" (and "listId", LIST_ID_KEYS), "email", ...fields} -> data = the member
#: (documented: add a member to an existing list, "listid ile birlikte"). ASSUMED:
#: ``emailListIds`` (every list of the member) may ride along, so one request makes a member of
#: several lists. Two readings of an e-mail that already has a card: refused
#: (MEMBER_ALREADY_EXISTS, 409), changing NOTHING; or "POST adds the member to a list": the card
#: joins the list(s) and takes the fields and status sent. So a create NEVER sends
#: ``status: Active`` (a new card is active by default: the document makes only the e-mail
#: mandatory) and cannot revive an unsubscribed card in either reading.
#: GET ?emailListId= (paged, every member of the list) or ?email= (paged, 0 or 1 item): the
#: documented two queries; the answer carries the ``memberId`` updates need (documented).
MEMBER_PATH: Final = "member"
#: PATCH by member id (documented): only the fields given change. ASSUMED: ``emailListIds``
#: REPLACES the member's list set (how a member leaves a list while its card stays).
#: DELETE (documented: hidden from the panel, kept for three years under KVKK, gone from every list):
#: sent for a KVKK erasure only; a member who left our lists is only taken off them (a card may be
#: in lists the tenant made in the panel, and holds the provider's record of an opt-out).
MEMBER_ITEM_PATH: Final = "member/{id}"
#: ASSUMED field names of a member card.
MEMBER_FIELDS: Final = ("email", "firstName", "lastName", "phone", "city", "status")
#: ASSUMED: a member card's ``status``; the integrator may write only the first two, the service
#: sets the others (bounces, spam complaints). "Gönderilen kampanya üzerinden abonelikten ayrılan
#: üyeler, Euormsg Express paneline anında yansır" (documented): an unsubscribe shows at once.
MEMBER_STATUSES: Final = ("Active", "Unsubscribed", "HardBounced", "SoftBounced", "Spam")
WRITABLE_STATUSES: Final = ("Active", "Unsubscribed")
#: Statuses a push must never turn back to Active unless the engine decided so (a CRM consent
#: newer than the suppression). ``SoftBounced`` is the service's, kept as it is.
SUPPRESSED_STATUSES: Final = ("Unsubscribed", "HardBounced", "Spam")
#: ASSUMED: every member row also has "memberId" (int), "statusDate" (when ``status`` last
#: changed), "emailListIds" [int], "createDate", "updateDate" and the İYS fields below.

# --- field contents: what the document allows, and our bounds where it is silent ----------------
#: The document names no member field but the e-mail ("sadece e-posta adresi zorunlu gelmesi
#: gereken bilgidir": only the e-mail address is mandatory) and the İYS ones (below), gives no
#: length and says nothing of the characters of an address. The client refuses before sending
#: (``client.build_payload``, reject code "validation"); the sandbox answers a malformed address
#: VALIDATION_ERROR (ASSUMED code, above) by the same reading, and refuses no length.
#:
#: The address: ASCII local part (RFC 5322 dot-atom). Source: "not in the document: chosen because
#: nothing there says a UTF-8 (SMTPUTF8) address is taken".
ADDRESS_UTF8_LOCAL: Final = False
#: A non-ASCII (IDN) domain: refused with a reason saying so. Source: "not in the document: it
#: shows no address at all, neither a Unicode domain nor its punycode (xn--) form".
ADDRESS_IDN: Final[IdnReading] = "reject"
ADDRESS_SOURCE: Final = "its document shows no UTF-8 or punycode (IDN) address, so only ASCII ones are sent"
#: firstName, lastName (ASSUMED names): "not in the document: ours, the width of first_name and
#: last_name in the CRM reference schema (sync/crm.py, String(255))". Refused above it, never cut.
MAX_NAME_LENGTH: Final = 255
#: phone, city (ASSUMED names): "not in the document: ours, 255 as the names".
MAX_PHONE_LENGTH: Final = 255
MAX_CITY_LENGTH: Final = 255
LENGTH_SOURCE: Final = "our bound: the document gives no length"
#: The text fields and their bounds (payload key -> (CRM column, limit)). The İYS fields take only
#: the values of IYS_* below (checked by ``client.iys_fields``).
TEXT_LIMITS: Final[Mapping[str, tuple[str, int]]] = {
    "firstName": ("first_name", MAX_NAME_LENGTH), "lastName": ("last_name", MAX_NAME_LENGTH),
    "phone": ("phone", MAX_PHONE_LENGTH), "city": ("city", MAX_CITY_LENGTH)}

# --- İYS (documented requirement; ASSUMED field names; rules of the İYS registry) --------
#: Documented: when the tenant made Euromsg its İYS integrator, every member pushed must carry
#: the individual consent date, the individual consent source and the merchant consent status
#: ("bireysel izin tarihi, bireysel izin kaynağı, tacir izin durumu ... zorunludur"): on an İYS
#: account a row without a date or a source is refused locally, TACIR included.
IYS_RECIPIENT_TYPE: Final = "iysRecipientType"   # BIREYSEL | TACIR
IYS_STATUS: Final = "iysConsentStatus"           # ONAY | RET  (tacir izin durumu)
IYS_DATE: Final = "iysConsentDate"               # bireysel izin tarihi
IYS_SOURCE: Final = "iysConsentSource"           # bireysel izin kaynağı
IYS_FIELDS: Final = (IYS_RECIPIENT_TYPE, IYS_STATUS, IYS_DATE, IYS_SOURCE)
IYS_STATUSES: Final = ("ONAY", "RET")
IYS_RECIPIENT_TYPES: Final = ("BIREYSEL", "TACIR")
IYS_SOURCES: Final = ("HS_FIZIKSEL_ORTAM", "HS_ISLAK_IMZA", "HS_WEB", "HS_CAGRI_MERKEZI", "HS_SOSYAL_MEDYA",
                      "HS_EPOSTA", "HS_MESAJ", "HS_MOBIL", "HS_EORTAM", "HS_ETKINLIK", "HS_2015", "HS_ATM",
                      "HS_KARAR")
#: Consents older than the registry are declared as HS_2015, with exactly this date.
IYS_EARLIEST: Final = dt.datetime(2015, 5, 1, 0, 0, 0)
IYS_2015_SOURCE: Final = "HS_2015"

# --- dates (ASSUMED) -----------------------------------------------------------------------
#: İYS dates (``iysConsentDate``) are ``YYYY-MM-DD HH:mm:ss`` in Turkey's time (GMT+3, no daylight
#: saving), as the İYS registry wants them. The service's own timestamps (``expireTime``,
#: ``statusDate``, ``createDate``, ``updateDate``, ``sendDate``, report dates) are what a .NET
#: DateTimeOffset serialises to: ISO 8601 with fractional seconds and the +03:00 offset. Readers
#: accept both forms; a date without an offset is Turkey time; a status dated in whole seconds is
#: taken at the end of its second (a CRM consent of the same second never beats an unsubscribe).
DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
TURKEY: Final = dt.timezone(dt.timedelta(hours=3), "TRT")

# --- campaigns and reports (documented operations and values; ASSUMED paths and fields) ----
#: GET ?campaignId=&status=&name= (documented filters), paged -> items [{"id", "name", "status",
#: "emailListIds", "createDate", "sendDate" | null, "updateDate"}].
CAMPAIGN_PATH: Final = "campaign"
CAMPAIGN_STATUSES: Final = ("Draft", "Pending", "Sent", "OnGoing", "Error")   # documented
#: Results keep arriving after sending (opens, late bounces): a Sent campaign is FINAL only this
#: long after its ``sendDate`` (our policy, ASSUMED settle time); an Error campaign is final at once.
CAMPAIGN_SETTLE_DAYS: Final = 7
CAMPAIGN_WITH_RESULTS: Final = ("Sent", "OnGoing", "Error")
#: GET ?campaignId= -> data [{"emailListId", "total", "sent", "hardBounced", "softBounced",
#: "opened", "clicked", "spam", "unsubscribed"}]: the delivery state of every member of the
#: campaign's lists, per list (documented operation; ASSUMED shape: counts per list).
CAMPAIGN_REPORT_PATH: Final = "campaign-report"
#: GET ?campaignId=&email=&status=&opened=&clicked=&spam= (documented filters), paged -> items
#: [{"email", "memberId", "status", "sendDate", "opened", "openDate", "openCount", "clicked",
#: "clickDate", "clickedUrl", "spam", "spamDate", "unsubscribed", "unsubscribeDate",
#: "bounceReason"}]; ``opened``/``clicked``/``spam`` filters take true/false.
CAMPAIGN_REPORT_DETAIL_PATH: Final = "campaign-report-detail"
DETAIL_STATUSES: Final = ("Sent", "HardBounced", "SoftBounced")               # documented

# --- account and health ------------------------------------------------------------------
#: ASSUMED (the document's "Account" heading has no text): GET -> data {"name", "packageActive",
#: "remainingCredits", "packageEndDate"}.
ACCOUNT_PATH: Final = "account"
#: Documented name. ASSUMED: no auth, ASP.NET health checks' plain-text answer "Healthy".
HEALTH_PATH: Final = "health-check"
HEALTHY: Final = "Healthy"
#: ASP.NET health statuses: Healthy and Degraded answer 200 (serving), Unhealthy 503.
HEALTH_STATUSES: Final[Mapping[str, bool]] = {"healthy": True, "degraded": True, "unhealthy": False}

# --- limits (ASSUMED: the document gives none) --------------------------------------------
#: There is no bulk call: one request per member. A batch is what one ``upsert_members`` call
#: takes; the engine plans and pushes ``PUSH_WINDOW`` members between two checkpoints.
MAX_BATCH: Final = 100
#: Members between two checkpoints (one transaction of answers). With one request per member, a
#: window of 100 spends its last round trips with a few requests in flight and waits for its
#: slowest member (a 429's Retry-After) once per 100 members; windows of 1,000 pushed faster under
#: faults (docs/performance.md), but a stop (SIGTERM) waits for the window in flight: with 1,000
#: the crash suite's SIGTERM cases (2,500 members) could no longer land four stops. So 100, and
#: once the provider answers a Retry-After the engine keeps several windows on the wire
#: (sync/engine/push.py, ``PUSH_DEPTH``): the next windows go out while one waits for its slowest.
PUSH_WINDOW: Final = MAX_BATCH
#: The connection setting ``concurrency``: requests in flight at most, the ceiling of the adaptive
#: limit (sync/http.py: it starts at 2 and climbs while answers come back fast and unrefused,
#: cutting on a 429 or 5xx). ASSUMED: the document gives no limit. 4 in flight at 30 ms is at most
#: about 133 requests a second, 16 about 530 (docs/performance.md). The default was 4 until
#: 2026-12-07: with 16 in flight, a token that ends after a number of calls (the shared suite's
#: fault, ``token_expire_after=15``) ran out while queued requests still carried it, each of their
#: 401s logged in again and replaced the token the others had just got, and a member meeting
#: replaced tokens twice failed the run. Now a 401 on a token already replaced is sent again with
#: the new one, and a request takes the newest token when its slot comes (ProviderHTTP), so 16
#: survives that fault; a gateway that refuses more is met by the adaptive limit's cuts.
CONCURRENCY_SETTING: Final = "concurrency"
CONCURRENCY: Final = 16


# --- keys read, in the spelling the client uses (answers are matched case-insensitively) --------
KNOWN_KEYS: Final = (
    *ENVELOPE_KEYS, "tokenValue", "expireTime", "roles", "items", "page", "pageSize", "totalCount", "id", "memberId",
    "name", "memberCount", "createDate", "updateDate", "statusDate", "emailListId", "emailListIds", *MEMBER_FIELDS,
    *IYS_FIELDS, "accountName", "packageActive", "remainingCredits", "packageEndDate", "iysIntegrator", "sendDate",
    "campaignId", "total", "sent", "hardBounced", "softBounced", "opened", "clicked", "spam", "unsubscribed",
    "openDate", "openCount", "clickDate", "clickedUrl", "spamDate", "unsubscribeDate", "bounceReason",
    "title", "detail", "type")

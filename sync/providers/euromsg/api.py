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
from typing import Final

#: Documented host. Every path below is relative to it (documented: ``/tokens``, ``/apiKey/identification``).
DEFAULT_BASE_URL: Final = "https://express-crm-gw.relateddigital.com/"

# --- authentication ------------------------------------------------------------------------
#: Documented: POST {"clientName", "password"} -> 200 {"tokenValue", "expireTime", "roles"}.
#: ASSUMED: wrong credentials -> 401 (an error envelope, below); the token answer has no envelope.
TOKEN_PATH: Final = "tokens"
#: Documented: "AUTHORIZATION Bearer Token".
AUTH_SCHEME: Final = "Bearer"
#: ASSUMED: the sandbox's token lifetime (the real one is only known through ``expireTime``).
TOKEN_LIFETIME_S: Final = 3600
#: Refresh this many seconds before ``expireTime`` (our policy).
TOKEN_REFRESH_MARGIN_S: Final = 60
#: Documented: PUT, "used to define an account to the CRM firm": the integrator "adds its
#: customer's key to its own token". ASSUMED: the key goes as the query parameter ``apiKey`` (the
#: document lists it under "PATH VARIABLES" but the URL has no variable); from then on every call
#: with that token acts on that tenant's account. ASSUMED: a token is identified with ONE key for
#: its lifetime; identifying it with another key answers 409 API_KEY_ALREADY_IDENTIFIED. The client
#: therefore takes one token per connection (per tenant), never shares it, and identifies every
#: new token before its first call.
IDENTIFICATION_PATH: Final = "apiKey/identification"
API_KEY_PARAM: Final = "apiKey"

# --- envelope and errors (ASSUMED) ---------------------------------------------------------
#: Every answer except ``tokens`` and ``health-check``:
#: {"isSuccess": bool, "errorCode": str | null, "message": str | null, "data": ...}.
#: Business-rule errors (validation, İYS, an existing member, no sending package) come with
#: HTTP 200 and ``isSuccess: false``; a missing resource with 404, a bad token with 401, a token
#: not identified with an API key with 403, all in the same envelope.
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

# --- paging (ASSUMED) ----------------------------------------------------------------------
#: Collections take ``page`` (1-based) and ``pageSize`` and answer
#: data = {"items": [...], "page", "pageSize", "totalCount"}; a page past the end is empty.
PAGE_PARAM: Final = "page"
PAGE_SIZE_PARAM: Final = "pageSize"
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 500

# --- email lists (documented operations; ASSUMED paths and fields) ------------------------
#: POST {"name"} -> data {"id": int, "name"} (documented: "returns an id number for this list");
#: GET (paged) -> items [{"id", "name", "memberCount", "createDate"}], panel-made lists included.
#: ASSUMED: two lists may have the same name (the document sets no rule).
EMAIL_LIST_PATH: Final = "emailList"
#: PATCH {"name"} (rename); DELETE (documented: the members stay, only their membership goes).
EMAIL_LIST_ITEM_PATH: Final = "emailList/{id}"
LIST_NAME_MAX: Final = 255

# --- members (documented operations; ASSUMED paths and fields) ----------------------------
#: POST {"emailListId", "email", ...fields} -> data = the member (documented: add a member to an
#: existing list). ASSUMED: an e-mail that already has a card answers MEMBER_ALREADY_EXISTS and
#: changes NOTHING (not its status, not its lists): a create never touches an existing contact.
#: GET ?emailListId= (paged, every member of the list) or ?email= (paged, 0 or 1 item): the
#: documented two queries; the answer carries the ``memberId`` updates need (documented).
MEMBER_PATH: Final = "member"
#: PATCH by member id (documented): only the fields given change. ASSUMED: ``emailListIds``
#: REPLACES the member's list set (how a member leaves a list while its card stays).
#: DELETE (documented: hidden from the panel, kept for three years under KVKK, gone from every list).
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

# --- İYS (documented requirement; ASSUMED field names; rules of the İYS registry) --------
#: Documented: when the tenant made Euromsg its İYS integrator, every member pushed must carry
#: the individual consent date, the individual consent source and the merchant consent status.
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

# --- limits (ASSUMED: the document gives none) --------------------------------------------
#: There is no bulk call: one request per member. A batch is what one checkpoint covers.
MAX_BATCH: Final = 100
CONCURRENCY: Final = 4

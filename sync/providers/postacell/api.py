"""Postacell's wire contract: what the document says and, marked ASSUMED, what it does not.

This is the ONE place where the Postacell client and the Postacell sandbox
(``sync.providers.postacell.sandbox``) agree on paths, shapes and lifetimes. The document
(``shared/esp-docs/postacell.txt``) covers lists, subscribers, fields, segments,
campaigns and report exports; it says nothing about the token call, the page size,
how to follow a bulk import job, or the columns of the exported CSV files. The choices
below are the most plausible reading of a Django REST Framework + SimpleJWT service,
which is what the documented shapes (``count/next/previous/results``) point to.
"""

from __future__ import annotations

from typing import Final

from sync.emails import IdnReading

#: Documented host and version prefix. Every path below is relative to it.
DEFAULT_BASE_URL: Final = "https://app.postacell.com.tr/api/v1/"

# --- authentication (ASSUMED: the document only says "OAuth token", see the issue) ------
#: POST {"username": ..., "password": ...} (or "email" instead of "username")
#: -> 200 {"access": "<jwt>", "refresh": "<jwt>"}; 401 {"detail": ...} on bad credentials.
TOKEN_PATH: Final = "token"
#: POST {"refresh": "<jwt>"} -> 200 {"access": "<jwt>"}; 401 when the refresh token expired.
TOKEN_REFRESH_PATH: Final = "token/refresh"
#: Access tokens live about five minutes, refresh tokens a day (ASSUMED, SimpleJWT-like).
ACCESS_TOKEN_LIFETIME_S: Final = 300
REFRESH_TOKEN_LIFETIME_S: Final = 24 * 3600
#: Refresh this many seconds before the access token's ``exp`` claim.
TOKEN_REFRESH_MARGIN_S: Final = 30
#: Header: ``Authorization: Bearer <access>``. No header -> 403 (documented);
#: an expired or invalid token -> 401 {"code": "token_not_valid"} (ASSUMED, SimpleJWT).
AUTH_SCHEME: Final = "Bearer"

# --- paging (documented shape, ASSUMED size) ---------------------------------------------
#: Every ``*-filter`` endpoint answers {"count", "next", "previous", "results"} and takes
#: ``page``. The document shows 50 rows a page for transactional lists; we assume 50 everywhere.
PAGE_SIZE: Final = 50

# --- path spelling (documented) ---------------------------------------------------------
#: The document writes the two filter endpoints both with and without a trailing slash
#: (``GET email/list-filter`` and ``GET v1/email/list-filter/?ordering=...``); every other path
#: only without one. The sandbox answers exactly these spellings.
BOTH_SPELLINGS: Final = frozenset({"email/list-filter", "email/subscribers-filter"})

# --- lists (documented) ------------------------------------------------------------------
LIST_FILTER_PATH: Final = "email/list-filter/"     # GET ?ordering=title|-title|create_date&title=
LIST_PATH: Final = "email/list"                    # POST {"title"} -> 201
LIST_ITEM_PATH: Final = "email/list/{id}"          # GET, PATCH {"title"}, DELETE -> 204
LIST_COUNTER_PATH: Final = "email/counter/list/{id}"  # GET -> [{"_id": status, "count": n}]

# --- subscribers (documented) ------------------------------------------------------------
SUBSCRIBERS_FILTER_PATH: Final = "email/subscribers-filter/"  # GET ?email=&status=&lists=&ordering=
SUBSCRIBERS_PATH: Final = "email/subscribers"      # POST upsert: 201 created, 200 updated
SUBSCRIBER_ITEM_PATH: Final = "email/subscribers/{id}"  # GET, PATCH, DELETE -> 204
#: Documented orderings of ``subscribers-filter`` (email and create_date, both directions).
#: Nothing orders by ``update_date``: a status pull therefore reads every suppressed subscriber
#: (a full scan through the documented ``status`` filter), and an unknown ordering is ignored by
#: the service (DRF), so a client must never rely on one.
SUBSCRIBER_ORDERINGS: Final = ("email", "-email", "create_date", "-create_date")
#: Documented filters of ``subscribers-filter``: email (contains), status (=), lists (=).
SUBSCRIBER_FILTERS: Final = ("email", "status", "lists", "ordering", "page")
#: Documented query parameters of ``list-filter`` and ``cmp-filter``; of ``reports-export-filter``
#: (ASSUMED: the export listing is filtered by campaign, newest first).
LIST_FILTERS: Final = ("ordering", "page")
CAMPAIGN_FILTERS: Final = ("ordering", "page")
REPORT_EXPORT_FILTERS: Final = ("cmp_id", "ordering", "page")
#: ASSUMED: PATCH ``lists`` REPLACES the subscriber's list set (that is how one leaves a list);
#: the POST upsert and the bulk import ADD the given lists to the ones the subscriber has.
SUBSCRIBER_STATUSES: Final = ("active", "unsubscribed", "soft_bounce", "hard_bounce", "spam_complaint")

# --- recovery: finding contacts a crashed run sent (documented endpoints, our choice) -----------
#: A provisional link (a request sent, its answer never committed) is looked up, not re-created:
#: ``subscribers-filter`` with ``lists=<id>`` pages through a list (PAGE_SIZE rows a request); its
#: rows carry only id, email, dates, status and verify (documented example), so what a contact holds
#: (names, phone, fields, lists) is read back with ``GET subscribers/<id>``, the one documented
#: answer that has them. The list pages are used when the lists' counters (LIST_COUNTER_PATH) say
#: they take fewer requests than one ``email=<address>`` search per contact; otherwise the searches.
RECOVERY_LOOKUP: Final = ("list pages", "email search")

# --- bulk import (documented: 202 + job id; ASSUMED: how to follow the job) ---------------
BULK_IMPORT_PATH: Final = "email/subscribers/json"  # POST {"lists": [...], "subscribers": [...]}
#: ASSUMED: GET -> {"id", "status": "queued"|"processing"|"done"|"failed", "total",
#: "created", "updated", "failed_count", "results": [{"email", "id"|null,
#: "result": "created"|"updated"|"exists"|"error", "detail"}]}; "results" is complete once "done".
#: "exists" is a row with ``"update": false`` whose e-mail the account already holds: the document
#: says only ``true`` updates an existing record, so such a row changes nothing (not its status,
#: not its lists) and the job says so.
BULK_JOB_PATH: Final = "email/subscribers/json/{id}"
BULK_JOB_FINAL_STATES: Final = ("done", "failed")
#: ASSUMED largest bulk request; the document gives none.
BULK_MAX_SUBSCRIBERS: Final = 1000

# --- fields (documented) -----------------------------------------------------------------
FIELDS_PATH: Final = "email/fields"                # GET -> [...], POST {"title", "type"} -> 201
FIELD_ITEM_PATH: Final = "email/fields/{id}"      # GET, PATCH {"title"}, DELETE -> 204
#: Documented constant field ids (segment note).
BUILTIN_FIELD_IDS: Final = {
    "email": "6006ac8171a4d90b9ed1ee8c",
    "first_name": "6006acc071a4d90b9ed1f2b9",
    "last_name": "6006acc371a4d90b9ed1f2d3",
    "phone": "6006acc671a4d90b9ed1f2fc",
}

# --- campaigns and reports ---------------------------------------------------------------
CAMPAIGN_FILTER_PATH: Final = "email/cmp-filter"   # GET ?ordering=&page= (documented)
#: Documented statuses; ``send`` means sent. Results keep arriving after sending (opens,
#: late bounces), so a sent campaign is FINAL only after this settle time (ASSUMED policy).
CAMPAIGN_STATUSES: Final = ("draft", "prepare", "send", "scheduled", "sending", "pause")
CAMPAIGN_SENT_STATUS: Final = "send"
CAMPAIGN_SETTLE_DAYS: Final = 7
REPORT_EXPORT_PATH: Final = "email/report/export"  # POST {"id": cmp_id, "rule": rule} -> 202
REPORT_EXPORT_FILTER_PATH: Final = "email/reports-export-filter"  # GET ?cmp_id=&ordering=-create_date
REPORT_RULES: Final = ("subscribers", "opened", "clicked", "bounced", "unsubscribed", "complaint")
#: ASSUMED CSV layout of an export file: UTF-8, comma separated, header row, and these
#: columns per rule (the document only says a CSV file is produced).
REPORT_CSV_COLUMNS: Final = {
    "subscribers": ("email", "date"),
    "opened": ("email", "date", "count"),
    "clicked": ("email", "date", "link"),
    "bounced": ("email", "date", "bounce_type", "diagnostic_code"),  # bounce_type SOFTBOUNCE|HARDBOUNCE
    "unsubscribed": ("email", "date"),
    "complaint": ("email", "date"),
}
#: Dates in JSON and CSV are ISO 8601 in UTC, with or without a trailing ``Z`` (documented).
#: ASSUMED: POST subscribers with ``"update": false`` for an existing e-mail leaves it unchanged
#: and answers 200 with its current data.
#: The client creates with ``"update": false`` (a create never touches a contact that already
#: exists, whatever its status) and updates only contacts whose current status it has just read.
#: Documented: ``POST subscribers`` and ``POST subscribers/json`` accept only requests that send
#: ``Accept: application/json`` ("Bu servis sadece Accept: application/json veriyi kabul eder").
JSON_ONLY_PATHS: Final = ("email/subscribers", "email/subscribers/json")
#: Statuses that a push must never turn back to ``active`` unless the engine decided so (a CRM
#: consent newer than the suppression); ``soft_bounce`` is kept as the service set it.
SUPPRESSED_STATUSES: Final = ("unsubscribed", "soft_bounce", "hard_bounce", "spam_complaint")
#: Those that are an opt-out of their own (no mail goes there): our "unsubscribed" leaves them as
#: they are. A soft bounce is a delivery that failed for now, not an opt-out: a member who
#: refused (RET) is unsubscribed over it (as at Euromsg, where SoftBounced is no opt-out either).
OPT_OUT_STATUSES: Final = ("unsubscribed", "hard_bounce", "spam_complaint")
#: Errors are DRF-shaped: 400 {"<field>": ["message", ...]} or {"detail": "message"}.

# --- field contents: what the document allows, and our bounds where it is silent ----------------
#: The document gives NO length for any subscriber field ("first_name – Adı", "last_name –
#: Soyadı", "phone – Telefon numarası", fields "Aboneye özel alanlardır"), says nothing of the
#: characters of an address, and refuses a bad request with "400 Bad Request – json object
#: return" (POST email/subscribers, subscribers/json). The client refuses before sending
#: (``client.build_payload``, reject code "validation"); the sandbox answers a malformed address
#: 400 ``{"email": ["Enter a valid email address."]}`` (a bulk row: its error result) by the same
#: reading, and refuses no length (the document states none).
#:
#: The address: ASCII local part (RFC 5322 dot-atom). Source: "not in the document: chosen because
#: nothing there says a UTF-8 (SMTPUTF8) address is taken" (its examples are masked).
ADDRESS_UTF8_LOCAL: Final = False
#: A non-ASCII (IDN) domain: refused with a reason saying so. Source: "not in the document: it
#: shows neither a Unicode domain nor its punycode (xn--) form, so neither is sent".
ADDRESS_IDN: Final[IdnReading] = "reject"
ADDRESS_SOURCE: Final = "its document shows no UTF-8 or punycode (IDN) address, so only ASCII ones are sent"
#: first_name, last_name: "not in the document: ours, the width of first_name and last_name in the
#: CRM reference schema (sync/crm.py, String(255))". A longer value is refused, never cut.
MAX_NAME_LENGTH: Final = 255
#: phone ("Telefon numarası", free text): "not in the document: ours, 255 as the names (a CRM view
#: may hold any text; the reference schema's phone is 32)".
MAX_PHONE_LENGTH: Final = 255
#: A custom field's value sent as text ("fields – Aboneye özel alanlardır", types text, number,
#: date): "not in the document: ours, 255 as the names".
MAX_FIELD_VALUE_LENGTH: Final = 255
LENGTH_SOURCE: Final = "our bound: the document gives no length"
#: The standard text fields and their bounds (payload key -> limit).
TEXT_LIMITS: Final = {"first_name": MAX_NAME_LENGTH, "last_name": MAX_NAME_LENGTH, "phone": MAX_PHONE_LENGTH}

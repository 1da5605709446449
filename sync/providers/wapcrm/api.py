"""WapCRM's wire contract: what the document says and, marked ASSUMED, what it does not.

This is the ONE place where the WapCRM client (``sync.providers.wapcrm.client``) and its sandbox
(``sync.providers.wapcrm.sandbox``) agree on paths, parameters, answers and shapes. The document
(``shared/esp-docs/wapcrm.txt``, Turkish) gives the base address, the secret header, the
envelope, the paths, the request models and the fields of messages, conversations and call
results. It does not give the fields of users and instances, how a request model travels on a
GET, the casing a .NET server gives the keys, the date and time formats of answers, any
``statusCode`` value, or paging (none is documented: one answer holds everything asked for).
Where it is silent the client accepts every reasonable reading (the table READINGS below) and the
sandbox serves each of them as a dialect.

This daemon only READS WapCRM. Sending a WhatsApp message (``chatoperation``) and saving a call
result (``addconversation``) are documented but are never sent: the client's only request
builder takes a path from :data:`READ_PATHS`, with the method of the connection's request
reading (:data:`REQUEST_READINGS`), and refuses anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from sync.errors import ConfigurationError

#: Documented: "https://cxapi.wapcrm.net/api/users" and so on; every path is relative to it.
DEFAULT_BASE_URL: Final = "https://cxapi.wapcrm.net/api/"

# --- authentication (documented) ------------------------------------------------------------
#: "Her Request(POST ve GET) işleminde “X-CIB-SecretKey” bilgisi Header içinde gönderilir."
#: The provider's help pages also name ``X-WapCrm-SecretKey``: the header is the connection
#: setting ``secret_header`` (default the documented one).
SECRET_HEADER: Final = "X-CIB-SecretKey"
KNOWN_SECRET_HEADERS: Final = ("X-CIB-SecretKey", "X-WapCrm-SecretKey")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")

# --- paths (documented) ---------------------------------------------------------------------
USERS_PATH: Final = "users"
INSTANCES_PATH: Final = "Instances"          # spelled with a capital I in the document
MESSAGES_PATH: Final = "messagelistforphone"
CONVERSATIONS_PATH: Final = "conversations"
CALL_RESULTS_PATH: Final = "callresults"
#: The paths this daemon may ask; "GET veya POST Olabilir" for each (the request reading picks one).
READ_PATHS: Final = frozenset({USERS_PATH, INSTANCES_PATH, MESSAGES_PATH, CONVERSATIONS_PATH, CALL_RESULTS_PATH})
#: Documented writes the daemon never sends (a WhatsApp message; a call result). The sandbox
#: answers them, so a test can prove none arrives.
SEND_MESSAGE_PATH: Final = "chatoperation"
SAVE_CALL_RESULT_PATH: Final = "addconversation"
WRITE_PATHS: Final = frozenset({SEND_MESSAGE_PATH, SAVE_CALL_RESULT_PATH})

# --- requests (documented names) -------------------------------------------------------------
#: The request models' field names, spelled as in the document.
START_DATE_PARAM: Final = "startDate"
END_DATE_PARAM: Final = "enddate"            # lower-case d in the document
PHONE_PARAM: Final = "chatPhoneNumber"
# --- field contents: what the document allows ---------------------------------------------------
#: WapCRM is only read: no member field (no name, no address, no city) is ever sent to it. The one
#: CRM value that goes out is a phone, as ``chatPhoneNumber`` of messagelistforphone. The document
#: (chatoperation, the same field): "Türkiye numaraları için 905******** formatında ve 9 hane ve
#: üzeri olmak zorundadır" (Turkish numbers as 905..., 9 digits or more). The client sends only the
#: normalised ``905XXXXXXXXX`` of ``sync.phones.normalize_phone`` (a number it cannot make is the
#: member's reject, code "phone_invalid"); the sandbox refuses a ``chatPhoneNumber`` that is not
#: digits or has fewer than MIN_PHONE_DIGITS (``status: false``, CODE_BAD_REQUEST) and, the
#: document giving no upper bound, no longer one.
MIN_PHONE_DIGITS: Final = 9
INSTANCE_PARAM: Final = "instanceID"
#: "YIL-AY-GÜN" (documented). ASSUMED: both dates are inclusive; startDate = enddate asks for one day.
DATE_FORMAT: Final = "%Y-%m-%d"

# --- request readings (left open: how a request model travels) ------------------------------
#: The document shows every request model as a JSON object ("Request Model { ... }";
#: ``chatoperation``: "Request işleminde Json bir model gönderilir") and says of every read
#: "Request Tipi GET veya POST Olabilir". It never shows a query string. So the literal reading,
#: and the default, is ``post-json``: POST with the model as the JSON body (``{}`` where a call
#: has no model), which every server honouring "GET or POST" with a JSON model must answer.
#: ``get-query`` (GET, the model's fields as query parameters, the daemon's reading until
#: issue 22) fits a server that reads GET parameters from the query string (and one that refuses
#: POST, against the document's word). Either way only READ_PATHS are ever asked: a POST to
#: ``users`` or ``conversations`` reads, the document says so; writes are refused by path.
#: The connection setting ``request_reading`` picks one; ``connection test`` tries them in this
#: order while a call fails with 404/405 (``WapcrmProvider.request_fallbacks``).
POST_JSON: Final = "post-json"
GET_QUERY: Final = "get-query"
REQUEST_READINGS: Final[Mapping[str, str]] = {POST_JSON: "POST", GET_QUERY: "GET"}
DEFAULT_REQUEST_READING: Final = POST_JSON
REQUEST_READING_SETTING: Final = "request_reading"

# --- the envelope (documented) --------------------------------------------------------------
#: {"data": ..., "status": true|false, "message": "Success", "statusCode": "", "requestID": "..."}
ENVELOPE_KEYS: Final = ("data", "status", "message", "statusCode", "requestID")
#: ASSUMED: the service answers its own errors with HTTP 200 and ``status: false`` ("Tüm
#: işlemlerinde aynı response modeli dönmektedir"), and these ``statusCode`` values (the document
#: names none). What the daemon does with each is decided in ``client.classify``.
CODE_UNAUTHORIZED: Final = "401"             # missing or unknown secret key
CODE_BAD_REQUEST: Final = "400"              # a missing or malformed parameter (a phone, a date)
CODE_TOO_MANY: Final = "429"                 # the account is asking too often
CODE_INTERNAL: Final = "500"                 # the service failed; try again
TRANSIENT_CODES: Final = frozenset({CODE_TOO_MANY, CODE_INTERNAL, "502", "503", "504"})

# --- answers (documented fields; ASSUMED where marked) --------------------------------------
#: Users: "kullanıcı id ve isimlerinin bulunduğu array". ASSUMED field names: ``id``, ``name``
#: (and ``email``, kept in details when present); also read: the request models' own spelling
#: ``userID`` and ``userName``/``fullName`` (USER_ID_KEYS, USER_NAME_KEYS).
USER_ID: Final = "id"
USER_NAME: Final = "name"
USER_ID_KEYS: Final = (USER_ID, "userID")
USER_NAME_KEYS: Final = (USER_NAME, "userName", "fullName")
#: Instances ("Hesap Listesi": the accounts/channels and their phone numbers; no answer shown).
#: ASSUMED field names: ``id`` (the ``instanceID`` of the other calls), ``name``, ``phoneNumber``;
#: also read: ``instanceID``, ``instanceName`` (the conversations' spelling), ``phone``,
#: ``channelnumber`` (the messages' spelling).
INSTANCE_ID: Final = "id"
INSTANCE_NAME: Final = "name"
INSTANCE_PHONE: Final = "phoneNumber"
INSTANCE_ID_KEYS: Final = (INSTANCE_ID, "instanceID")
INSTANCE_NAME_KEYS: Final = (INSTANCE_NAME, "instanceName")
INSTANCE_PHONE_KEYS: Final = (INSTANCE_PHONE, "phone", "channelnumber")
#: Call results (documented): a two-level tree; ``parentID`` 0 is a top result, ``childItem`` is
#: null on a sub-result.
RESULT_ID: Final = "id"
RESULT_PARENT: Final = "parentID"
RESULT_NAME: Final = "name"
RESULT_CHILDREN: Final = "childItem"
RESULT_FIELDS: Final = (RESULT_ID, RESULT_PARENT, RESULT_NAME, RESULT_CHILDREN)
#: Messages (documented fields). No message id is documented: a message is identified by all of
#: its fields (see ``client.message_key``).
MESSAGE_FIELDS: Final = ("channelnumber", "sentdate", "senttime", "customernumber", "message", "messagesource")
#: ``messagesource``: "ME" (Müşteri Temsilcisi, the agent) or "CUSTOMER" (Müşteri). Kept as is.
MESSAGE_SOURCES: Final = ("ME", "CUSTOMER")
#: ASSUMED (the document's sandbox dialect): ``sentdate`` as YYYY-MM-DD and ``senttime`` as
#: HH:MM:SS, Turkey's local time. Other readings: see READINGS.
SENT_DATE_FORMAT: Final = "%Y-%m-%d"
SENT_TIME_FORMAT: Final = "%H:%M:%S"
#: Conversations (documented fields).
CONVERSATION_FIELDS: Final = (
    "id", "createDate", "phoneNumber", "note", "dataListName", "customerFullName", "callResultParent",
    "callResultChild", "userName", "conversationResultDirection", "callGuidId", "ringTime", "callTime",
    "transferredCall", "tuUser", "targetNumber", "pbxPhoneNumber", "pbxQueue", "instanceName")
#: conversationResultDirection (documented): 1 outgoing, 2 incoming, 3 incoming missed,
#: 4 outgoing not reached. Kept as the number; these are its names.
DIRECTIONS: Final[Mapping[int, str]] = {1: "GİDEN ARAMA", 2: "GELEN ARAMA", 3: "GELEN ARAMA KAÇAN ÇAĞRI",
                                        4: "GİDEN ARAMA ULAŞILAMAYAN"}
#: ASSUMED: dates without an offset are Turkey's local time (a .NET DateTime of a Turkish
#: service); ``ringTime`` and ``callTime`` are seconds. Other readings: see READINGS.
SERVICE_TIME_ZONE: Final = "Europe/Istanbul"

# --- READINGS: what the document leaves open -> readings accepted -> how each is recognised ---
#
# | left open                      | readings accepted                         | recognised by                     |
# |--------------------------------|-------------------------------------------|-----------------------------------|
# | how a request model travels    | post-json (DEFAULT, the document's JSON   | the setting request_reading;      |
# |                                | model); get-query                         | connection test falls back on     |
# |                                |                                           | 404/405 (REQUEST_READINGS above)  |
# | the envelope keys' casing      | as documented (data, status, message,     | keys compared case-insensitively; |
# |                                | statusCode, requestID); PascalCase (Data, | no ``status`` key in any casing:  |
# |                                | Status, StatusCode, RequestID); any other | UnknownReadingError               |
# | ``status``                     | JSON true/false; the text "true"/"false"  | type of the value; anything else: |
# |                                |                                           | UnknownReadingError               |
# | an empty ``data``              | [], {}, "" (the document's model shows    | the value; a missing ``data`` key |
# |                                | "data": ""), null                         | is UnknownReadingError            |
# | a list's ``data``              | an array of objects (shown); an object    | JSON type; an object whose values |
# |                                | keyed by id (its values the rows, the key | are not all objects, or a scalar: |
# |                                | the id when a row has none); either one   | UnknownReadingError               |
# |                                | as JSON text (the model shows data as "") |                                   |
# | row keys' casing               | as documented; any casing                 | case-insensitive match            |
# | users/instances fields         | USER_*_KEYS, INSTANCE_*_KEYS (ASSUMED)    | the first key present; no id key  |
# |                                |                                           | in any row: UnknownReadingError   |
# | ``createDate`` (date and time) | ISO 8601 local (fraction, space or T);    | DATE_READINGS' patterns, in order;|
# |                                | ISO 8601 with offset/Z; DD.MM.YYYY        | a non-empty value in none:        |
# |                                | HH:MM[:SS]; Unix seconds or milliseconds  | UnknownReadingError               |
# |                                | (addconversation's time is a seconds      |                                   |
# |                                | timestamp); ASP.NET "/Date(ms±hhmm)/"     |                                   |
# | ``sentdate`` + ``senttime``    | a date in any createDate reading (its time| as above; ``senttime``            |
# |                                | used when senttime is empty); senttime    | HH:MM[:SS[.fraction]]             |
# |                                | HH:MM, HH:MM:SS, .NET TimeSpan fraction   |                                   |
# | ``ringTime``/``callTime``      | seconds (number or digits); HH:MM:SS,     | type and pattern; anything else:  |
# |                                | MM:SS                                     | UnknownReadingError               |
# | conversationResultDirection    | the number (or its digits); its Turkish   | DIRECTIONS; anything else:        |
# |                                | name                                      | UnknownReadingError               |
# | ``transferredCall``            | true/false, "true"/"false", 1/0, evet/    | value; anything else:             |
# |                                | hayır; null = false                       | UnknownReadingError               |
# | ``statusCode``                 | text ("401") or a number (401)            | compared as text                  |
#
# The client notes each reading it meets (``client.readings``, endpoint -> reading): "envelope",
# "<path>" (data's shape, not noted for an empty answer), "<path> fields" (key casing),
# "conversations createDate", "messagelistforphone sentdate"/"senttime", "conversations ringTime".
READING_DOCUMENTED_KEYS: Final = "as documented"
READING_PASCAL_KEYS: Final = "PascalCase"
READING_OTHER_KEYS: Final = "another casing"
READING_ARRAY: Final = "array"
READING_ID_KEYED: Final = "id-keyed object"
READING_TEXT_PREFIX: Final = "JSON text of an "
#: createDate / sentdate readings, in the order they are tried.
DATE_ISO_LOCAL: Final = "ISO 8601 local time"
DATE_ISO_OFFSET: Final = "ISO 8601 with offset"
DATE_TURKISH: Final = "DD.MM.YYYY HH:MM:SS"
DATE_UNIX_SECONDS: Final = "Unix seconds"
DATE_UNIX_MILLISECONDS: Final = "Unix milliseconds"
DATE_ASPNET: Final = "ASP.NET /Date(ms)/"
DATE_READINGS: Final = (DATE_ISO_LOCAL, DATE_ISO_OFFSET, DATE_TURKISH, DATE_UNIX_SECONDS, DATE_UNIX_MILLISECONDS,
                        DATE_ASPNET)
TIME_CLOCK: Final = "HH:MM[:SS[.fraction]]"
DURATION_SECONDS: Final = "seconds"
DURATION_CLOCK: Final = "HH:MM:SS"


def parse_header_name(key: str, value: Any) -> str:
    """The ``secret_header`` setting: an HTTP header name (letters, digits, dashes)."""
    if not isinstance(value, str) or not _HEADER_NAME.match(value.strip()):
        raise ConfigurationError(f"setting {key} must be an HTTP header name such as {SECRET_HEADER} "
                                 f"(known: {', '.join(KNOWN_SECRET_HEADERS)}): {value!r}")
    return value.strip()


def parse_request_reading(key: str, value: Any) -> str:
    """The ``request_reading`` setting: how a request model travels (REQUEST_READINGS)."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in REQUEST_READINGS:
        raise ConfigurationError(f"setting {key} must be one of {', '.join(REQUEST_READINGS)} "
                                 f"({DEFAULT_REQUEST_READING}: POST with the JSON request model, as the document "
                                 f"shows it; {GET_QUERY}: GET with query parameters): {value!r}")
    return str(text)

"""WapCRM's wire contract: what the document says and, marked ASSUMED, what it does not.

This is the ONE place where the WapCRM client (``sync.providers.wapcrm.client``) and its sandbox
(``sync.providers.wapcrm.sandbox``) agree on paths, parameters, answers and shapes. The document
(``shared/esp-docs/wapcrm.txt``, Turkish) gives the base address, the secret header, the
envelope, the paths, the request models and the fields of messages, conversations and call
results. It does not give the fields of users and instances, how a GET carries its request model,
the date and time formats of answers, any ``statusCode`` value, or paging (none is documented:
one answer holds everything asked for).

This daemon only READS WapCRM. Sending a WhatsApp message (``chatoperation``) and saving a call
result (``addconversation``) are documented but are never sent: the client's only request
builder takes a path from :data:`READ_PATHS` and the method GET, and refuses anything else.
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
#: The paths this daemon may ask; "GET veya POST Olabilir" for each: the daemon uses GET only.
READ_PATHS: Final = frozenset({USERS_PATH, INSTANCES_PATH, MESSAGES_PATH, CONVERSATIONS_PATH, CALL_RESULTS_PATH})
#: Documented writes the daemon never sends (a WhatsApp message; a call result). The sandbox
#: answers them, so a test can prove none arrives.
SEND_MESSAGE_PATH: Final = "chatoperation"
SAVE_CALL_RESULT_PATH: Final = "addconversation"
WRITE_PATHS: Final = frozenset({SEND_MESSAGE_PATH, SAVE_CALL_RESULT_PATH})

# --- request parameters (documented names; ASSUMED: a GET carries them as query parameters) ---
#: The document shows each request model as JSON and says GET or POST; a GET has no body, so
#: the request model's fields go into the query string with the same names and spelling.
START_DATE_PARAM: Final = "startDate"
END_DATE_PARAM: Final = "enddate"            # lower-case d in the document
PHONE_PARAM: Final = "chatPhoneNumber"
INSTANCE_PARAM: Final = "instanceID"
#: "YIL-AY-GÜN" (documented). ASSUMED: both dates are inclusive; startDate = enddate asks for one day.
DATE_FORMAT: Final = "%Y-%m-%d"

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
#: (and ``email``, kept in details when present).
USER_ID: Final = "id"
USER_NAME: Final = "name"
#: Instances ("Hesap Listesi": the accounts/channels and their phone numbers). ASSUMED field
#: names: ``id`` (the ``instanceID`` of the other calls), ``name``, ``phoneNumber``.
INSTANCE_ID: Final = "id"
INSTANCE_NAME: Final = "name"
INSTANCE_PHONE: Final = "phoneNumber"
#: Call results (documented): a two-level tree; ``parentID`` 0 is a top result, ``childItem`` is
#: null on a sub-result.
RESULT_ID: Final = "id"
RESULT_PARENT: Final = "parentID"
RESULT_NAME: Final = "name"
RESULT_CHILDREN: Final = "childItem"
#: Messages (documented fields). No message id is documented: a message is identified by all of
#: its fields (see ``client.message_key``).
MESSAGE_FIELDS: Final = ("channelnumber", "sentdate", "senttime", "customernumber", "message", "messagesource")
#: ``messagesource``: "ME" (Müşteri Temsilcisi, the agent) or "CUSTOMER" (Müşteri). Kept as is.
MESSAGE_SOURCES: Final = ("ME", "CUSTOMER")
#: ASSUMED: ``sentdate`` as YYYY-MM-DD and ``senttime`` as HH:MM:SS, Turkey's local time. The
#: client also reads DD.MM.YYYY and HH:MM (a Turkish service may answer either).
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
#: ASSUMED: ``createDate`` is ISO 8601 without an offset (a .NET DateTime), Turkey's local time;
#: ``ringTime`` and ``callTime`` are whole seconds (the client also reads "HH:MM:SS").
SERVICE_TIME_ZONE: Final = "Europe/Istanbul"


def parse_header_name(key: str, value: Any) -> str:
    """The ``secret_header`` setting: an HTTP header name (letters, digits, dashes)."""
    if not isinstance(value, str) or not _HEADER_NAME.match(value.strip()):
        raise ConfigurationError(f"setting {key} must be an HTTP header name such as {SECRET_HEADER} "
                                 f"(known: {', '.join(KNOWN_SECRET_HEADERS)}): {value!r}")
    return value.strip()

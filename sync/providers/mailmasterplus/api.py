"""MailMasterPlus's wire contract: what the document says, what it leaves open, and the readings we accept.

This is the ONE place where the MailMasterPlus client (``sync.providers.mailmasterplus.client``)
and its sandbox (``sync.providers.mailmasterplus.sandbox``) agree on paths, answers and shapes, and where
the shape of a connection's ``lists`` setting is checked. The document
(``shared/esp-docs/mailmasterplus.txt``, Hungarian) gives the paths, HTTP basic auth, UTF-8, the
bare-number answers and the HTTP statuses 200/401/404/405/406. It does not show a record, name a
subscription-state field, say how ``list/<nl_id>`` shapes "every record", or what happens to a
subscribe of an e-mail the list already holds as unsubscribed.

Where it is silent, the client accepts every reasonable reading (table below), normalises it once
at the edge (``client.records_of``, ``client.one_record``, ``client.number_answer``), and notes
the reading it saw in ``client.readings`` (``sync.providers.readings``). An answer in none of them
is ``UnknownReadingError`` naming the endpoint: never a default, never an empty pull, never a
state invented for a member. The sandbox serves every reading, one set per ``dialect``
(``sandbox.DIALECTS``).

PUBLIC CLIENTS quoted as a source below: the C# client github.com/GaborTorma/SalesAutoPilotAPI
(``Models/Subscriber.cs``: the record's field names; ``Request/Lists.cs``: ``list/<nl_id>`` and
``list/<nl_id>/field/../value/..`` read as an array of records) and the PHP client
github.com/GaborTorma/SalesAutopilot-PHP-API (``salesautopilot.php``), both of SalesAutopilot,
the same company's API with the same paths.

What the document leaves open -> the readings accepted -> how each is recognised:

- ``GET list/<nl_id>`` (every record)
  -> an array of records (public C# client); an object keyed by record id (PHP ``json_encode`` of
     an id-keyed array: the document's "asszociatív JSON tömb"); no records: an empty body (the
     document's answer to a query without result), ``[]``, ``{}``
  -> a JSON array; a JSON object whose values are all objects (the key is the id where a record
     has no ``id``); an empty answer. A bare record, an envelope or anything else: unknown reading.
- ``GET list/<nl_id>/record/<id>`` and ``GET list/<nl_id>/field/email/value/<e-mail>`` (one record)
  -> one record as an object (the document); an array of records (the C# client reads
     ``Subscriber[]``); an id-keyed object; no record: an empty body (the document), ``[]``,
     ``false`` (PHP's ``json_encode`` of a failed fetch), ``0`` (getglobalvar's "no result")
  -> as above; of several records, the one with the id asked, or the oldest with the e-mail.
- the subscription state
  -> ``active`` (public C# client) as text ``"1"``/``"0"``, number ``1``/``0``, ``true``/``false``
  -> any other value, or no ``active``: an unknown reading of that endpoint, never "unsubscribed".
- a record's id
  -> ``id`` as text or number; the key of an id-keyed object; the id in the path
  -> a record with none of them: an unknown reading.
- when the state last changed
  -> ``mssys_last_statuschange_date`` (public C# client) as ``YYYY-MM-DD HH:MM:SS`` Budapest
     time, or ISO 8601; absent, empty or MySQL's zero date: no time
  -> no time: the unsubscribe is dated when a pull sees it (never earlier than the truth) and
     flagged undated (``dated=False``) where the engine's ``RemoteStatus`` has that flag, so that
     the engine keeps the time it first saw. Any other text: an unknown reading.
- bare-number answers
  -> text ``5`` (the document), JSON ``5``, JSON string ``"5"``; unsubscribe and delete also
     ``true``/``false``; update: the count of records changed, ``0`` when nothing changed
  -> anything else that is not HTML: an unknown reading; an HTML page: a transient fault.
- the subscribe's "exists"/"malformed" codes
  -> ``1``/``2`` (the document), ``-1``/``-2`` (public clients)
  -> see ``client.resolve_subscribe_answer``.
- the field names of a list
  -> the list's own, mapped per list; defaults ``mssys_firstname``, ``mssys_lastname``,
     ``mssys_mobile`` from the public C# client (``Models/Subscriber.cs``), NOT from the document
  -> ``connection test`` checks each mapped name against the keys of the list's records (the
     document has no call that lists a list's fields).

Lists and forms are made in MMP's panel; the API cannot create, rename or delete a list.

Opt-outs (the decision, docs/providers/mailmasterplus.md): MMP unsubscribes per list and the
client never changes a record's state on its own, but the never-re-subscribe promise is
address-wide for new records: no record is created active while any mapped list holds the
address unsubscribed (or cannot be read), unless the engine re-subscribes it. An unsubscribed
record is deleted only for a KVKK erasure (``ERASURE_REASON``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from sync.emails import IdnReading
from sync.errors import ConfigurationError
from sync.providers import base

#: Documented address ("Az API URL je: http://restapi.emesz.com"). Every path is relative to it.
DEFAULT_BASE_URL: Final = "http://restapi.emesz.com/"

# --- paths (documented) ------------------------------------------------------------------
#: POST, JSON object with ``email`` and any field the list already has.
SUBSCRIBE_PATH: Final = "subscribe/{nl_id}/form/{ns_id}"
#: PUT, JSON object of the fields to change; ``ns_id`` is the list's update (data change) form.
UPDATE_RECORD_PATH: Final = "update/{nl_id}/form/{ns_id}/record/{id}"
#: PUT by a field's value; ``field_value`` is url-encoded (documented).
UPDATE_FIELD_PATH: Final = "update/{nl_id}/form/{ns_id}/field/{field}/value/{value}"
#: GET: every record of the list (no optional parameter), one record by id, one record by a
#: field's url-encoded value ("A metódus egyszerre csak egy feliratkozó adatát adja vissza").
LIST_PATH: Final = "list/{nl_id}"
LIST_RECORD_PATH: Final = "list/{nl_id}/record/{id}"
LIST_FIELD_PATH: Final = "list/{nl_id}/field/{field}/value/{value}"
#: GET (documented as GET although it changes state): by record id or by e-mail.
UNSUBSCRIBE_RECORD_PATH: Final = "unsubscribe/{nl_id}/record/{id}"
UNSUBSCRIBE_EMAIL_PATH: Final = "unsubscribe/{nl_id}/email/{email}"
#: DELETE: "véglegesen és visszavonhatatlanul" (for good, irrevocably).
DELETE_RECORD_PATH: Final = "delete/{nl_id}/record/{id}"

# --- endpoints as the reading log names them (sync.providers.readings) --------------------------
LIST_ENDPOINT: Final = "GET list/<nl_id>"
#: An empty list's answer is noted apart: PHP encodes an empty id-keyed array as ``[]``, so an
#: empty list and a full one may differ without the server changing its reading.
LIST_EMPTY_ENDPOINT: Final = "GET list/<nl_id> (no records)"
RECORD_ENDPOINT: Final = "GET list/<nl_id>/record/<id>"
FIND_ENDPOINT: Final = "GET list/<nl_id>/field/email/value/<email>"
#: Appended to a one-record endpoint for its "no such record" answer (noted apart from the record's shape).
NO_RECORD_SUFFIX: Final = "(no such record)"
ACTIVE_ENDPOINT: Final = "record field active"
STATUS_TIME_ENDPOINT: Final = "record field mssys_last_statuschange_date"
SUBSCRIBE_ENDPOINT: Final = "POST subscribe/<nl_id>/form/<ns_id>"
UPDATE_ENDPOINT: Final = "PUT update/<nl_id>/form/<ns_id>/record/<id>"
UNSUBSCRIBE_ENDPOINT: Final = "GET unsubscribe/<nl_id>/record/<id>"
DELETE_ENDPOINT: Final = "DELETE delete/<nl_id>/record/<id>"

# --- reading names (what ``connection test`` prints and the connection stores) -----------------
READ_ARRAY: Final = "array of records"
READ_ID_KEYED: Final = "object keyed by record id"
READ_OBJECT: Final = "one record as an object"
READ_EMPTY_BODY: Final = "empty body"
#: The answers read as "no record", by their text ("" = an empty body): ``{}`` only for the whole
#: list (an empty id-keyed object); ``false`` and ``0`` only for one record (a failed fetch;
#: getglobalvar's "no result").
LIST_NO_RECORDS: Final = ("", "[]", "{}")
ONE_NO_RECORD: Final = ("", "[]", "false", "0")
READ_BARE_NUMBER: Final = "bare number"
READ_QUOTED_NUMBER: Final = "number as a JSON string"
READ_BOOLEAN: Final = "boolean true/false"
CODES_DOCUMENT: Final = "codes 1/2/0 (the document)"
CODES_NEGATIVE: Final = "codes -1/-2/0 (public clients)"
READ_UNDATED: Final = "absent: dated when first seen"

# --- answers (documented bare numbers) -----------------------------------------------------
#: subscribe: the new record's id (a whole number > 0) on success, else one of these codes.
#: The document: 1 = the list takes each e-mail once and holds this one already, 2 = the e-mail
#: is malformed, 0 = another failure. Second reading: the public clients read -1 (exists) and
#: -2 (malformed). A client must handle both, and 1 and 2 are also real record ids (ids start at
#: 1 within a list): see ``client.resolve_subscribe_answer`` for the rule that settles it.
SUBSCRIBE_EXISTS_CODES: Final = (1, -1)
SUBSCRIBE_MALFORMED_CODES: Final = (2, -2)
SUBSCRIBE_FAILED: Final = 0
#: update: the number of records changed; an empty body on failure (documented). ``0`` after our
#: own read of the record means nothing changed (a MySQL service counts affected rows), not a
#: failure. list (one record): an empty body when there is none (documented).
#: unsubscribe and delete: "1" on success, "0" on failure (documented). A "0" is read back: an
#: unsubscribe of a record that is unsubscribed, or a delete of one that is gone, is done.
SUCCESS: Final = 1
FAILURE: Final = 0
#: ASSUMED: bare numbers come as text (``text/html; charset=UTF-8``, a PHP service's default),
#: records as ``application/json``.
NUMBER_CONTENT_TYPE: Final = "text/html; charset=UTF-8"

# --- statuses (documented) -----------------------------------------------------------------
#: 401 wrong user name or password, 404 unknown resource, 405 invalid method, 406 bad parameters.
#: ASSUMED what gives 406: a list id that is not the account's, a form id that is not that list's
#: form of the right kind (a subscribe form for subscribe, an update form for update), a body
#: that is not a JSON object, a subscribe without ``email``, a field name the list does not have
#: (the document allows only fields "melyet már szerepel az e mail listába").
STATUS_BAD_PARAMETERS: Final = 406

# --- records (names from the public C# client, Models/Subscriber.cs; not in the document) ------
RECORD_ID_FIELD: Final = "id"
#: Documented: the subscribe body's key for the address ("emailkulcsó mező").
EMAIL_FIELD: Final = "email"
#: The subscription state: subscribed / unsubscribed (by the unsubscribe call, a recipient's link
#: or the panel). A record is active once subscribed through the API (no double opt-in).
ACTIVE_FIELD: Final = "active"
#: The accepted values of ``active``, by their reading.
ACTIVE_TEXT: Final[Mapping[str, bool]] = {"1": True, "0": False}
ACTIVE_READINGS: Final = ("text 1/0", "number 1/0", "boolean true/false")
#: When ``active`` last changed; the time of an unsubscribe.
STATUS_CHANGED_FIELD: Final = "mssys_last_statuschange_date"
SUBSCRIBED_AT_FIELD: Final = "subdate"
UPDATED_AT_FIELD: Final = "lastupdate"
#: The opt-in (sign-up confirmation) state of the C# client. It is NOT an unsubscribe: the
#: client reads only ``active`` for the subscription state.
SIGNUP_STATUS_FIELD: Final = "mssys_sub_status"
#: System fields every record may have and no form sets: sending one in a subscribe or update body
#: is a 406 like any other field the list does not have.
SYSTEM_FIELDS: Final = (RECORD_ID_FIELD, ACTIVE_FIELD, STATUS_CHANGED_FIELD, SUBSCRIBED_AT_FIELD,
                        UPDATED_AT_FIELD, SIGNUP_STATUS_FIELD)
#: Dates are "YYYY-MM-DD HH:MM:SS" in the service's local time (a Hungarian service); ISO 8601
#: with an offset is read too.
DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
SERVICE_TIME_ZONE: Final = "Europe/Budapest"

# --- opt-outs (policy; the document has no call that re-activates a record) --------------------
#: Nothing documented turns an unsubscribed record active again: an update changes list fields
#: only (``active`` is not one), and a subscribe of an e-mail a unique list holds answers "exists".
#: When the engine decides to re-subscribe (the CRM holds a consent newer than the unsubscribe),
#: the client deletes the record and subscribes the address anew (a new record id). This and a
#: KVKK erasure are the only deletes of an unsubscribed record (docs/providers/mailmasterplus.md).
RESUBSCRIBE_BY_RECREATE: Final = True
#: ``MemberDelete.reason`` of a KVKK erasure (sync/providers/base.py): the one removal that may
#: delete an unsubscribed record. A list leave or an address change leaves it, unsubscribed.
ERASURE_REASON: Final = "deleted in the CRM"
#: ``PushOutcome.action`` of a removal that found the record unsubscribed and left it so.
LEFT_UNSUBSCRIBED: Final = base.LEFT_UNSUBSCRIBED
#: ``RejectedRow.provider_code`` of a create withheld because another mapped list could not be
#: read (406) to rule out an unsubscribe of the address there (the opt-out is address-wide).
OPT_OUT_UNCHECKED: Final = "opt_out_unchecked"

# --- field mapping (ASSUMED defaults: NOT in the document) -------------------------------------
#: CRM member column -> the MMP list's field name. SOURCE of the defaults: the system field names
#: of the public C# client (GaborTorma/SalesAutoPilotAPI, Models/Subscriber.cs: ``mssys_firstname``,
#: ``mssys_lastname``, ``mssys_mobile``); the document names no field but ``email``. A list whose
#: fields are named otherwise maps them in the connection's ``lists`` setting (``"fields"``), and a
#: column mapped to null is not sent (the checked setting keeps the null); ``connection test``
#: checks each mapped name against the fields the list's records show. ``city`` has no default
#: (the same client's ``mssys_city`` is the geolocated city, not a postal one).
CRM_COLUMNS: Final = ("first_name", "last_name", "phone", "city", "consent_status", "consent_date",
                      "consent_source", "recipient_type")
DEFAULT_FIELDS: Final[Mapping[str, str]] = {
    "first_name": "mssys_firstname",
    "last_name": "mssys_lastname",
    "phone": "mssys_mobile",
}

# --- field contents: what the document allows, and our bounds where it is silent ----------------
#: The document: "Szintaktikailag hibás e mail cím esetén a body értéke: 2" (a syntactically wrong
#: e-mail address: the subscribe answers 2); "Az MMP API minden adatcseréhez UTF 8
#: karakterkódolást használ" (every exchange is UTF-8: the encoding of the data, not a rule that
#: an address may hold non-ASCII letters); no length for any field. The client refuses before
#: sending (``client.build_payload``, reject code "validation"); the sandbox answers the subscribe
#: 2 (an update: an empty body, "Sikertelen adatmódosítás") for an address malformed by the same
#: reading, and refuses no length.
#:
#: The address: ASCII local part (RFC 5322 dot-atom). Source: "not in the document: chosen because
#: it says only 'syntactically wrong', and nothing of a UTF-8 (SMTPUTF8) address".
ADDRESS_UTF8_LOCAL: Final = False
#: A non-ASCII (IDN) domain: refused with a reason saying so. Source: "not in the document: it
#: shows no address, neither a Unicode domain nor its punycode (xn--) form".
ADDRESS_IDN: Final[IdnReading] = "reject"
ADDRESS_SOURCE: Final = ("its document says only that a syntactically wrong address is refused (answer 2) and shows "
                         "no UTF-8 or punycode (IDN) address, so only ASCII ones are sent")
#: A list field's value (the mapped CRM columns: first name, last name, phone, city, consent
#: columns; custom fields): "not in the document: ours, the width of first_name, last_name and city
#: in the CRM reference schema (sync/crm.py, String(255))". Refused above it, never cut.
MAX_FIELD_LENGTH: Final = 255
LENGTH_SOURCE: Final = "our bound: the document gives no length"

# --- limits (ours: the document gives none) -------------------------------------------------
#: No batch endpoint: every record is its own request, so a batch is only a checkpoint: the engine
#: plans and pushes ``PUSH_WINDOW`` records between two checkpoints (a window of 200 spent its last
#: round trips with a few requests in flight, and waited for its slowest record).
MAX_BATCH: Final = 200
#: (1,000 pushed faster under faults; back to 200 for the stop latency and the crash suite's
#: SIGTERM cases, as Euromsg's PUSH_WINDOW says; several windows go out at once once throttled)
PUSH_WINDOW: Final = MAX_BATCH
#: The connection setting ``concurrency``: requests in flight at most, the ceiling of the adaptive
#: limit (sync/http.py: it starts at 2 and climbs while answers come back fast and unrefused,
#: halving on a 429 or 5xx). Ours: the document gives no limit; 16 in flight at 30 ms is up to
#: about 530 requests a second.
CONCURRENCY_SETTING: Final = "concurrency"
CONCURRENCY: Final = 16

# --- the connection's ``lists`` setting -----------------------------------------------------
#: {"<CRM list id>": {"nl_id": 101, "subscribe_form": 201, "update_form": 301,
#:                    "name": "optional label", "fields": {"first_name": "mssys_firstname", ...}}}
LIST_MAPPING_KEYS: Final = ("nl_id", "subscribe_form", "update_form", "name", "fields")
LIST_MAPPING_REQUIRED: Final = ("nl_id", "subscribe_form", "update_form")
_ID = re.compile(r"^[1-9][0-9]{0,18}$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _id_of(key: str, crm_list: str, name: str, value: Any) -> str:
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not _ID.match(text):
        raise ConfigurationError(f"setting {key}: list {crm_list!r}: {name} must be a whole number > 0: {value!r}")
    return text


def parse_list_mapping(key: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """The connection's ``lists`` setting, checked and with ids as text; one line for the first problem.

    Each CRM list id maps to an MMP list (``nl_id``) with its subscribe form and its update form
    (``ns_id`` of each), an optional label and an optional field mapping over ``DEFAULT_FIELDS``.
    Two CRM lists may not share an MMP list: the engine keeps one record per (list, member).
    """
    checked: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for crm_list, entry in value.items():
        if not str(crm_list).strip():
            raise ConfigurationError(f"setting {key}: a CRM list id is empty")
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"setting {key}: list {crm_list!r} must map to an object with "
                                     f"{', '.join(LIST_MAPPING_REQUIRED)}")
        unknown = sorted(set(entry) - set(LIST_MAPPING_KEYS))
        if unknown:
            raise ConfigurationError(f"setting {key}: list {crm_list!r}: unknown key(s) {', '.join(unknown)} "
                                     f"(known: {', '.join(LIST_MAPPING_KEYS)})")
        missing = [name for name in LIST_MAPPING_REQUIRED if entry.get(name) is None]
        if missing:
            raise ConfigurationError(f"setting {key}: list {crm_list!r}: missing {', '.join(missing)}")
        ids = {name: _id_of(key, str(crm_list), name, entry[name]) for name in LIST_MAPPING_REQUIRED}
        if ids["nl_id"] in owners:
            raise ConfigurationError(f"setting {key}: lists {owners[ids['nl_id']]!r} and {crm_list!r} both map to "
                                     f"MMP list {ids['nl_id']}; each CRM list needs its own MMP list")
        owners[ids["nl_id"]] = str(crm_list)
        fields: dict[str, str | None] = dict(DEFAULT_FIELDS)
        given = entry.get("fields") or {}
        if not isinstance(given, Mapping):
            raise ConfigurationError(f"setting {key}: list {crm_list!r}: fields must be an object")
        for column, field_name in given.items():
            if column not in CRM_COLUMNS:
                raise ConfigurationError(f"setting {key}: list {crm_list!r}: unknown CRM column {column!r} "
                                         f"(known: {', '.join(CRM_COLUMNS)})")
            if field_name is None:
                fields[column] = None     # kept as null: a second check must not restore the default
            elif (not isinstance(field_name, str) or not _FIELD_NAME.match(field_name)
                  or field_name in (EMAIL_FIELD, *SYSTEM_FIELDS)):
                raise ConfigurationError(f"setting {key}: list {crm_list!r}: field name for {column} must be "
                                         f"1-64 letters, digits or _ and not a system field: {field_name!r}")
            else:
                fields[column] = field_name
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"setting {key}: list {crm_list!r}: name must be text: {name!r}")
        checked[str(crm_list)] = {**ids, "name": name or f"MMP list {ids['nl_id']}", "fields": fields}
    return checked

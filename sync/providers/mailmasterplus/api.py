"""MailMasterPlus's wire contract: what the document says and, marked ASSUMED, what it does not.

This is the ONE place where the MailMasterPlus client (``sync.providers.mailmasterplus.client``)
and its sandbox (``sync.providers.mailmasterplus.sandbox``) agree on paths, answers and shapes, and where
the shape of a connection's ``lists`` setting is checked. The document
(``shared/esp-docs/mailmasterplus.txt``, Hungarian) gives the paths, HTTP basic auth, UTF-8, the
bare-number answers and the HTTP statuses 200/401/404/405/406. It does not show a record, say
how an unsubscribed record looks, how ``list/<nl_id>`` shapes "every record", or what happens
to a subscribe of an e-mail the list already holds as unsubscribed. The choices below follow
the public clients of the same API (PHP and C# clients of restapi.emesz.com / SalesAutopilot).

Lists and forms are made in MMP's panel; the API cannot create, rename or delete a list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from sync.errors import ConfigurationError

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

# --- answers (documented bare numbers) -----------------------------------------------------
#: subscribe: the new record's id (a whole number > 0) on success, else one of these codes.
#: The document: 1 = the list takes each e-mail once and holds this one already, 2 = the e-mail
#: is malformed, 0 = another failure. ASSUMED second dialect: public clients of the same API
#: read -1 (exists) and -2 (malformed), so the service has answered those too. A client must
#: handle both, and 1 and 2 are also real record ids (ids start at 1 within a list): see
#: ``client.resolve_subscribe_answer`` for the rule that settles it.
SUBSCRIBE_EXISTS_CODES: Final = (1, -1)
SUBSCRIBE_MALFORMED_CODES: Final = (2, -2)
SUBSCRIBE_FAILED: Final = 0
#: The two dialects a sandbox can speak: code -> answer.
DIALECTS: Final[Mapping[str, Mapping[str, int]]] = {
    "document": {"exists": 1, "malformed": 2, "failed": 0},
    "negative": {"exists": -1, "malformed": -2, "failed": 0},
}
#: update: the number of records changed; an empty body on failure (documented). ASSUMED: an
#: update that matched a record counts it even when no value changed (the answer is "1", not "0").
#: list (one record): an empty body when there is none (documented).
#: unsubscribe and delete: "1" on success, "0" on failure (documented). ASSUMED: unsubscribing a
#: record that is unsubscribed already answers "1" (the state asked for holds); deleting a record
#: that is not there answers "0".
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

# --- records (ASSUMED, from the public clients) --------------------------------------------
#: ``GET list/<nl_id>`` answers a JSON array of records (``[]`` for an empty list); one record is
#: a JSON object. Values are strings, as a PHP/MySQL service gives them; the client also takes
#: numbers and booleans.
RECORD_ID_FIELD: Final = "id"
EMAIL_FIELD: Final = "email"
#: "1" subscribed (a record is active once subscribed through the API: no double opt-in),
#: "0" unsubscribed (by the unsubscribe call, a recipient's link or the panel).
ACTIVE_FIELD: Final = "active"
#: When ``active`` last changed; the time of an unsubscribe.
STATUS_CHANGED_FIELD: Final = "mssys_last_statuschange_date"
SUBSCRIBED_AT_FIELD: Final = "subdate"
UPDATED_AT_FIELD: Final = "lastupdate"
#: The opt-in (sign-up confirmation) state of the C# client. It is NOT an unsubscribe: the
#: client reads only ``active`` for the subscription state. The sandbox shows it as "1".
SIGNUP_STATUS_FIELD: Final = "mssys_sub_status"
#: System fields every record has and no form sets: sending one in a subscribe or update body is
#: a 406 like any other field the list does not have.
SYSTEM_FIELDS: Final = (RECORD_ID_FIELD, ACTIVE_FIELD, STATUS_CHANGED_FIELD, SUBSCRIBED_AT_FIELD,
                        UPDATED_AT_FIELD, SIGNUP_STATUS_FIELD)
#: Dates are "YYYY-MM-DD HH:MM:SS" in the service's local time (a Hungarian service).
DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
SERVICE_TIME_ZONE: Final = "Europe/Budapest"

# --- re-subscribing (ASSUMED policy: the document has no call for it) ------------------------
#: Nothing documented turns an unsubscribed record active again: an update changes list fields
#: only (``active`` is not one), and a subscribe of an e-mail a unique list holds answers "exists".
#: When the engine decides to re-subscribe (the CRM holds a consent newer than the unsubscribe),
#: the client deletes the record and subscribes the address anew (a new record id).
RESUBSCRIBE_BY_RECREATE: Final = True

# --- field mapping (ASSUMED defaults) ------------------------------------------------------
#: CRM member column -> the MMP list's field name. These are the system field names the public
#: clients show (``mssys_firstname``, ``mssys_lastname``, ``mssys_mobile``); a list whose fields
#: are named otherwise maps them in the connection's ``lists`` setting (``"fields"``), and a
#: column mapped to null is not sent (the checked setting keeps the null). ``city`` has no
#: default (MMP's ``mssys_city`` is the geolocated city, not a postal one).
CRM_COLUMNS: Final = ("first_name", "last_name", "phone", "city", "consent_status", "consent_date",
                      "consent_source", "recipient_type")
DEFAULT_FIELDS: Final[Mapping[str, str]] = {
    "first_name": "mssys_firstname",
    "last_name": "mssys_lastname",
    "phone": "mssys_mobile",
}

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

"""Postatr's answers, read in every reading ``api.py``'s table accepts and normalised once, here.

The document names the fields of each answer but shows none of them but Authenticate's, so each
reader below accepts the readings of that table (an envelope or none, ASMX's ``{"d": ...}`` with an
array, an object or JSON text inside, rows under a key of any spelling, an id-keyed object, one row
object, keys in any case) and says which one came, for ``client.readings``. An answer in none of
them raises :class:`~sync.errors.UnknownReadingError` in one line (``unknown_reading``): never an
empty pull, never a state made up for a recipient.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from sync.emails import normalize_email
from sync.errors import MalformedAnswerError, UnknownReadingError
from sync.providers.base import RecipientResult
from sync.providers.postatr import api
from sync.providers.readings import unknown_reading

K = api.answer_key
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_ERROR = K(api.ERROR_CODE)
_ENVELOPE = K(api.ANSWER_ENVELOPE)
_ROW_FIELDS = frozenset(K(name) for name in api.ROW_FIELDS)
_CAMPAIGN_IDS = tuple(K(name) for name in api.CAMPAIGN_ID_KEYS)
_MEMBER_ID = K("Memberid")
_EMAIL = K("Email")
_REASONS = tuple(K(name) for name in api.REASON_KEYS)
_TOKEN_KEYS = tuple(K(name) for name in api.TOKEN_KEYS)
_TOKEN_VALUE = re.compile(r"^[0-9A-Za-z-]{1,128}$")
_GUID_LIKE = re.compile(r"[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}")
_RECIPIENT_STATUS = {api.fold(status): status for status in api.RECIPIENT_STATUSES}
_CAMPAIGN_STATUS = {api.fold(status): status for status in api.CAMPAIGN_STATUSES}
_OPENED = {api.fold("Açtı"), api.fold("Tıkladı")}
_CLICKED = api.fold("Tıkladı")
_NAME_KEYS = tuple(K(name) for name in ("MailDescription", "MailSubject", "Description", "Subject", "Name"))

ROWS_EXPECTED = ("a bare array of rows", 'an array in {"d": ...} (or JSON text of one)',
                 "rows under a key (Campaigns, Members, Data, ...; any case; or Members > Member)",
                 "an object keyed by id", "one row object", "ErrorCode alone (no rows)", "null")
TOKEN_EXPECTED = ("<string>GUID</string> (XML)", 'a JSON string, bare or in {"d": ...}',
                  "an object with Token / AuthenticateResult / Result", "a bare GUID as text")
PROCESS_EXPECTED = ("an object with inserted / updated / ignored / ignored_details / campid / ErrorCode "
                    '(bare, in {"d": ...} or as JSON text in it)',)


def keyed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object with its keys as compared (``api.answer_key``); the first of two spellings wins."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.setdefault(K(str(key)), value)
    return out


def _empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def _text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())


def decode(response: httpx.Response, what: str) -> Any:
    """The JSON body of an answer; MalformedAnswerError (retried, then the run's failure) when it
    is not JSON at all: an empty body or an error page of the web server in front of the service."""
    content = response.content
    if not content.strip():
        raise MalformedAnswerError(f"{what}: Postatr answered HTTP {response.status_code} with an empty body",
                                   status_code=response.status_code)
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        kind = "an HTML page" if content.lstrip()[:1] == b"<" else "a body that is not JSON"
        raise MalformedAnswerError(f"{what}: Postatr answered HTTP {response.status_code} with {kind}",
                                   status_code=response.status_code) from None


def _untyped(value: Any) -> Any:
    """``value`` without ASMX's ``__type`` type hints (``api.TYPE_HINT``), at any depth."""
    if isinstance(value, dict):
        return {key: _untyped(item) for key, item in value.items() if key != api.TYPE_HINT}
    if isinstance(value, list):
        return [_untyped(item) for item in value]
    return value


def unwrap(body: Any) -> tuple[Any, str]:
    """The answer inside its envelope, and the envelope's reading: bare, ``{"d": ...}``, JSON text;
    without ASMX's ``__type`` hints."""
    envelope = "bare"
    body = _untyped(body)
    if isinstance(body, dict) and len(body) == 1 and K(str(next(iter(body)))) == _ENVELOPE:
        body, envelope = next(iter(body.values())), '{"d": ...}'
    if isinstance(body, str) and body.strip()[:1] in ("{", "["):
        try:
            body = json.loads(body)
        except ValueError:
            return body, envelope
        body = _untyped(body)
        envelope = '{"d": JSON text}' if envelope != "bare" else "JSON text"
    return body, envelope


def code_of(value: Any, endpoint: str = "answer") -> int:
    """An ErrorCode's value as a number; absent, null or "" is none (``api.NO_ERROR``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return api.NO_ERROR
    if isinstance(value, bool):
        raise unknown_reading(f"{endpoint} ErrorCode", ("a number", "a numeric string", "absent"), value)
    try:
        number = float(str(value).strip())
    except ValueError:
        raise unknown_reading(f"{endpoint} ErrorCode", ("a number", "a numeric string", "absent"), value) from None
    if not number.is_integer():
        raise unknown_reading(f"{endpoint} ErrorCode", ("a whole number",), value)
    return int(number)


def _names_recipient(obj: Mapping[str, Any]) -> bool:
    return bool(_text(obj.get(_EMAIL)) or _text(obj.get(_MEMBER_ID)))


def _error_row(value: Any) -> bool:
    """An object that carries an error and names nothing: a non-zero ErrorCode, no Email, Memberid or
    campaign id (how a list method answers an error with its one row: ``[{"Email": null, ...,
    "OpenCount": 0, "ErrorCode": 1}]``)."""
    if not isinstance(value, dict):
        return False
    obj = keyed(value)
    try:
        code = code_of(obj.get(_ERROR))
    except UnknownReadingError:
        return False
    return code != api.NO_ERROR and not _names_recipient(obj) and not campaign_id_of(obj)


def answer_error(body: Any, endpoint: str = "answer") -> int:
    """The ErrorCode of the ANSWER (not of a recipient row: an object naming a recipient carries its
    own code); an array of one error row is that row's error. NO_ERROR for an array of rows or a
    value without one."""
    inner, _ = unwrap(body)
    if isinstance(inner, list) and len(inner) == 1 and _error_row(inner[0]):
        inner = inner[0]
    if not isinstance(inner, dict):
        return api.NO_ERROR
    obj = keyed(inner)
    if _names_recipient(obj):
        return api.NO_ERROR
    return code_of(obj.get(_ERROR), endpoint)


# --- Authenticate ----------------------------------------------------------------------------------

def _masked(text: str) -> str:
    """An unreadable Authenticate answer, its GUID-shaped parts (maybe a token) hidden."""
    return _GUID_LIKE.sub("<GUID>", text)


def read_token(response: httpx.Response) -> tuple[str, str]:
    """Authenticate's token (maybe one of ``api.ZERO_TOKENS``) and the reading it came in."""
    text = response.text
    match = api.TOKEN_ANSWER.match(text)
    if match is not None:
        return match.group(1), "XML <string>"
    found: Any = None
    reading = ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
        match = api.TOKEN_TEXT.match(text)
        if match is not None or text.strip() == "0":
            found, reading = (match.group(1) if match else "0"), "plain text"
    else:
        inner, envelope = unwrap(body)
        if isinstance(inner, str | int) and not isinstance(inner, bool):
            found, reading = str(inner), ("JSON string" if envelope == "bare" else f"{envelope} string")
        elif isinstance(inner, dict):
            obj = keyed(inner)
            key = next((k for k in _TOKEN_KEYS if isinstance(obj.get(k), str | int) and not isinstance(
                obj.get(k), bool)), None)
            if key is not None:
                found = str(obj[key])
                reading = f"object with {next(k for k in inner if K(str(k)) == key)}" + (
                    "" if envelope == "bare" else f" in {envelope}")
    if found is None or not _TOKEN_VALUE.match(found.strip()):
        raise unknown_reading("Authenticate", TOKEN_EXPECTED, _masked(text))
    return found.strip(), reading


# --- rows of ReportCampaign / ReportMembers ---------------------------------------------------------

def _row_like(value: Any) -> bool:
    return isinstance(value, dict) and any(K(str(key)) in _ROW_FIELDS for key in value)


def _rows_in(value: Any, id_key: str, wrappers: frozenset[str] = frozenset()  # noqa: PLR0911 - one per reading
             ) -> tuple[list[dict[str, Any]], str] | None:
    """Rows held by one value: an array of objects, an id-keyed object, JSON text of either, or one
    of them under a single wrapper key (``{"Member": [...]}``, as the document's own request nests
    ``Members.Member``; one row object there too, as XML-to-JSON writes a single element)."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            parsed = _untyped(json.loads(value))
        except ValueError:
            return None
        found = _rows_in(parsed, id_key, wrappers)
        return None if found is None else (found[0], f"JSON text of {found[1]}")
    if isinstance(value, list):
        if all(isinstance(item, dict) for item in value) and (not value or any(_row_like(i) for i in value)):
            return [keyed(item) for item in value], "an array"
        return None
    if isinstance(value, dict) and len(value) == 1 and K(str(next(iter(value)))) in wrappers:
        key, inner = next(iter(value.items()))
        if _row_like(inner):
            return [keyed(inner)], f"one row under {key!r}"
        found = _rows_in(inner, id_key)
        return None if found is None else (found[0], f"{found[1]} under {key!r}")
    if isinstance(value, dict) and value and all(isinstance(item, dict) for item in value.values()) \
            and any(_row_like(item) for item in value.values()) and not _row_like(value):
        rows = []
        for key, item in value.items():
            row = keyed(item)
            if _empty(row.get(id_key)):
                row[id_key] = str(key)
            rows.append(row)
        return rows, "an object keyed by id"
    return None


@dataclass(frozen=True)
class Rows:
    """The rows of an answer (keys as compared), the answer's own ErrorCode and its reading.
    ``single``: the answer was one row object, whose ErrorCode is in the row."""

    rows: list[dict[str, Any]]
    error: int
    reading: str
    single: bool = False


def _via(found: tuple[list[dict[str, Any]], str]) -> str:
    """`` > 'Member'`` for rows found under a wrapper key, else ""."""
    _, how = found
    return f" > {how.rsplit(' under ', 1)[1]}" if " under " in how else ""


def read_rows(endpoint: str, body: Any, row_keys: Sequence[str], id_key: str) -> Rows:  # noqa: PLR0911 - one per reading
    """Every reading of a report's rows (``api.py``'s table), or UnknownReadingError."""
    inner, envelope = unwrap(body)
    wrappers = frozenset(K(name) for name in row_keys)

    def reading(what: str) -> str:
        return what if envelope == "bare" else f"{what} in {envelope}"

    if inner is None:                                               # null: a list method with nothing
        return Rows([], api.NO_ERROR, reading("null (no rows)"))
    if isinstance(inner, list):
        if len(inner) == 1 and _error_row(inner[0]):                # an error as the array's one row
            return Rows([], code_of(keyed(inner[0]).get(_ERROR), endpoint), reading("array of one ErrorCode row"))
        found = _rows_in(inner, id_key)
        if found is None:
            raise unknown_reading(endpoint, ROWS_EXPECTED, body)
        return Rows(found[0], api.NO_ERROR, reading("array"))
    if not isinstance(inner, dict):
        raise unknown_reading(endpoint, ROWS_EXPECTED, body)
    obj = keyed(inner)
    error = code_of(obj.get(_ERROR), endpoint)
    others = {key: value for key, value in inner.items() if K(str(key)) != _ERROR}
    for name in row_keys:                                           # 1. under a known key
        key = next((k for k in others if K(str(k)) == K(name)), None)
        if key is not None and (found := _rows_in(others[key], id_key, wrappers)) is not None:
            return Rows(found[0], error, reading(f"rows under {key!r}{_via(found)}"))
    if _row_like(inner):                                            # 2. one row object
        if error != api.NO_ERROR and all(_empty(obj.get(k)) for k in _ROW_FIELDS):
            return Rows([], error, reading("ErrorCode with empty row fields"))
        return Rows([obj], api.NO_ERROR, reading("one row object"), single=True)
    holders = {key: found for key, value in others.items()
               if (found := _rows_in(value, id_key, wrappers)) is not None}
    filled = {key: found for key, found in holders.items() if found[0]}
    if len(filled) == 1 or (not filled and len(holders) == 1):     # 3. the one list of rows, any key
        key, found = next(iter((filled or holders).items()))
        return Rows(found[0], error, reading(f"rows under {key!r}{_via(found)}"))
    keyed_rows = _rows_in(others, id_key) if others else None
    if not filled and keyed_rows is not None:                      # 4. an object keyed by id
        return Rows(keyed_rows[0], error, reading("object keyed by id"))
    if not filled and all(_empty(value) for value in others.values()):   # 5. ErrorCode alone
        return Rows([], error, reading("ErrorCode alone (no rows)" if error == api.NO_ERROR else "ErrorCode"))
    raise unknown_reading(endpoint, ROWS_EXPECTED, body)


# --- dates and statuses ---------------------------------------------------------------------------

@dataclass
class Notes:
    """Readings met while reading rows (dates, statuses), for ``client.readings``."""

    seen: dict[str, str] = field(default_factory=dict)

    def note(self, what: str, reading: str) -> None:
        self.seen.setdefault(what, reading)


def read_time(endpoint: str, value: Any, notes: Notes | None = None) -> dt.datetime | None:
    """A Postatr date in UTC: ``api.DATE_FORMATS`` in Turkey's time, ISO 8601, ``/Date(ms)/``;
    None when empty; UnknownReadingError for a date in none of them (never a date made up)."""
    text = _text(value)
    if not text:
        return None
    match = api.MS_AJAX_DATE.match(text)
    if match is not None:
        if notes is not None:
            notes.note("dates", "/Date(ms)/")
        return dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.UTC)
    for pattern in api.DATE_FORMATS:
        try:
            parsed = dt.datetime.strptime(text, pattern)
        except ValueError:
            continue
        if notes is not None:
            notes.note("dates", api.DATE_READINGS[pattern])
        return parsed.replace(tzinfo=_TZ).astimezone(dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise unknown_reading(f"{endpoint} date", (*dict.fromkeys(api.DATE_READINGS.values()), "ISO 8601",
                                                   "/Date(ms)/"), text) from None
    if notes is not None:
        notes.note("dates", "ISO 8601")
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_TZ)).astimezone(dt.UTC)


def _count(endpoint: str, value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(str(value).strip())
    except ValueError:
        raise unknown_reading(endpoint, ("a whole number",), value) from None


def _status_note(notes: Notes | None, raw: str, canonical: str) -> None:
    if notes is not None:
        notes.note("statuses", "as documented" if raw == canonical else "without Turkish letters or case")


# --- campaigns ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CampaignInfo:
    """One campaign as ReportCampaign's rows tell it (several rows of one campaign merged)."""

    camp_id: str
    name: str
    status: str
    sent_at: dt.datetime | None
    last_open: dt.datetime | None
    completed: bool


def campaign_id_of(row: Mapping[str, Any]) -> str:
    return next((_text(row[key]) for key in _CAMPAIGN_IDS if not _empty(row.get(key))), "")


def campaigns(endpoint: str, rows: Iterable[Mapping[str, Any]], asked: str | None,
              notes: Notes | None = None) -> list[CampaignInfo]:
    """Rows grouped by campaign id (the one asked for when a row names none): the first campaign
    Status, the earliest SentDate, the latest LastOpenDate. A listing row without an id is an
    unknown reading (a campaign we cannot name cannot be reported)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        camp_id = campaign_id_of(row) or (asked or "")
        if not camp_id:
            raise unknown_reading(endpoint, [f"rows naming their campaign ({', '.join(api.CAMPAIGN_ID_KEYS)})"],
                                  dict(row))
        if asked is None or camp_id == asked:
            groups.setdefault(camp_id, []).append(row)
    found = []
    for camp_id, group in groups.items():
        status, completed = "", False
        for row in group:
            raw = _text(row.get(K("Status")))
            canonical = _CAMPAIGN_STATUS.get(api.fold(raw))
            if canonical is not None:
                _status_note(notes, raw, canonical)
                status, completed = canonical, canonical == api.CAMPAIGN_COMPLETED
                break
            status = status or raw
        sent = [t for row in group if (t := read_time(endpoint, row.get(K("SentDate")), notes)) is not None]
        opens = [t for row in group if (t := read_time(endpoint, row.get(K("LastOpenDate")), notes)) is not None]
        name = next((_text(row[key]) for row in group for key in _NAME_KEYS if _text(row.get(key))),
                    f"Postatr campaign {camp_id}")
        found.append(CampaignInfo(camp_id, name, status, min(sent, default=None), max(opens, default=None),
                                  completed))
    return found


# --- recipients -----------------------------------------------------------------------------------

def recipient(endpoint: str, row: Mapping[str, Any], notes: Notes | None = None) -> RecipientResult | None:
    """One ReportMembers row (keys as compared); None for a row without an e-mail (it cannot be stored).

    - a non-zero ErrorCode: failed, whatever its Status (``bounce_type`` ``api.FAILED_RECIPIENT``,
      the code and its meaning in ``bounce_reason``), never sent;
    - Ulaştı / Açtı / Tıkladı (delivered, opened, clicked: a click implies an open); ASSUMED: no open
      or click date is documented beyond LastOpenDate, so both are dated by it (by SentDate when empty);
    - a campaign status (Kuyrukta, Gönderiliyor, İşleniyor): not sent yet;
    - any other Status: UnknownReadingError (never a state made up)."""
    email = normalize_email(_text(row.get(_EMAIL)))
    if not email:
        return None
    member_id = _text(row.get(_MEMBER_ID)) or None
    raw = _text(row.get(K("Status")))
    code = code_of(row.get(_ERROR), endpoint)
    open_count = _count(f"{endpoint} OpenCount", row.get(K("OpenCount")))
    if code != api.NO_ERROR:
        if notes is not None:
            notes.note("failed recipients", "ErrorCode on the row")
        return RecipientResult(email=email, crm_member_id=member_id, bounce_type=api.FAILED_RECIPIENT,
                               bounce_reason=f"not sent: {api.describe_error(code)}", open_count=open_count,
                               extra={"status": raw, "error_code": code})
    folded = api.fold(raw)
    if folded in _CAMPAIGN_STATUS and folded not in _RECIPIENT_STATUS:
        _status_note(notes, raw, _CAMPAIGN_STATUS[folded])
        return RecipientResult(email=email, crm_member_id=member_id, extra={"status": raw})
    canonical = _RECIPIENT_STATUS.get(folded)
    if canonical is None:
        raise unknown_reading(f"{endpoint} Status", [*api.RECIPIENT_STATUSES, "a campaign status (not sent yet)",
                                                     "any, with a non-zero ErrorCode (failed)"], dict(row))
    _status_note(notes, raw, canonical)
    sent_at = read_time(endpoint, row.get(K("SentDate")), notes)
    last_open = read_time(endpoint, row.get(K("LastOpenDate")), notes) or sent_at
    opened = folded in _OPENED or open_count > 0
    return RecipientResult(email=email, crm_member_id=member_id, sent_at=sent_at,
                           opened_at=last_open if opened else None, open_count=open_count,
                           clicked_at=last_open if folded == _CLICKED else None, extra={"status": raw})


def recipients(endpoint: str, rows: Sequence[Mapping[str, Any]], notes: Notes | None = None) -> list[RecipientResult]:
    """Every row a recipient; rows without an e-mail are left out, but rows that ALL lack one are an
    unknown reading (the e-mail is how results are stored)."""
    found = [result for row in rows if (result := recipient(endpoint, row, notes)) is not None]
    if rows and not found:
        raise unknown_reading(endpoint, ["recipient rows with an Email"], dict(rows[0]))
    return found


# --- StartProcess ---------------------------------------------------------------------------------

@dataclass
class Ignored:
    """``ignored_details`` read: reasons by Memberid, by e-mail, and those naming no member."""

    by_id: dict[str, str] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)
    #: (the text as it came, to look for a member in; its readable reason) of details naming no member.
    unnamed: list[tuple[str, str]] = field(default_factory=list)
    reading: str | None = None

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_email) + len(self.unnamed)


def readable_reason(turkish: str) -> str:
    """A reason as a reject shows it: the English of a known Turkish reason beside it."""
    text = " ".join(turkish.split())[:200]
    english = api.IGNORED_REASONS.get(text) or next(
        (english for known, english in api.IGNORED_REASONS.items() if known.casefold() in text.casefold()), None)
    return f"{english} (\"{text}\")" if english else f"\"{text}\"" if text else "no reason given"


def _reason_of(obj: Mapping[str, Any]) -> str:
    text = next((_text(obj[key]) for key in _REASONS if _text(obj.get(key))), "")
    if text:
        return readable_reason(text)
    code = code_of(obj.get(_ERROR), "StartProcess ignored_details")
    return api.describe_error(code) if code != api.NO_ERROR else readable_reason("")


def read_ignored(value: Any) -> Ignored:
    """Every reading of ``ignored_details`` (``api.py``'s table)."""
    found = Ignored()
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except ValueError:
            pass
        else:
            inner = read_ignored(value)
            inner.reading = f"JSON text of {inner.reading}" if inner.reading else None
            return inner
    if _empty(value):
        return found
    if isinstance(value, str):
        found.unnamed.append((_text(value), readable_reason(_text(value))))
        found.reading = "a text"
        return found

    def add(obj: Mapping[str, Any], key: str | None = None) -> None:
        member_id, email = _text(obj.get(_MEMBER_ID)) or (key or ""), normalize_email(_text(obj.get(_EMAIL)))
        reason = _reason_of(obj)
        if member_id:
            found.by_id[member_id] = reason
        elif email:
            found.by_email[email] = reason
        else:
            found.unnamed.append(("", reason))

    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                add(keyed(item))
            else:
                found.unnamed.append((_text(item), readable_reason(_text(item))))
        found.reading = "a list of objects" if all(isinstance(i, dict) for i in value) else "a list of texts"
        return found
    if isinstance(value, dict):
        obj = keyed(value)
        if _MEMBER_ID in obj or _EMAIL in obj or any(key in obj for key in _REASONS):
            add(obj)
            found.reading = "one object"
            return found
        for key, item in value.items():
            if isinstance(item, dict):
                add(keyed(item), str(key))
            else:
                found.by_id[str(key)] = readable_reason(_text(item))
        found.reading = "an object keyed by Memberid"
        return found
    raise unknown_reading("StartProcess ignored_details", ("a list of objects", "an object keyed by Memberid",
                                                           "JSON text of either", "a list of texts"), value)


@dataclass(frozen=True)
class ProcessAnswer:
    error: int
    inserted: int
    updated: int
    #: None when the answer has no ``ignored`` count.
    ignored: int | None
    details: Ignored
    campid: str
    reading: str


_PROCESS_KEYS = tuple(K(name) for name in ("inserted", "updated", "ignored", "ignored_details", "campid",
                                           api.ERROR_CODE))


def read_process(endpoint: str, body: Any) -> ProcessAnswer:
    """StartProcess's answer in every reading, or UnknownReadingError."""
    inner, envelope = unwrap(body)
    reading = "object" if envelope == "bare" else f"object in {envelope}"
    if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], dict):
        inner, reading = inner[0], f"array of one {reading}"
    if not isinstance(inner, dict) or not any(K(str(key)) in _PROCESS_KEYS for key in inner):
        raise unknown_reading(endpoint, PROCESS_EXPECTED, body)
    obj = keyed(inner)
    return ProcessAnswer(error=code_of(obj.get(_ERROR), endpoint),
                         inserted=_count(f"{endpoint} inserted", obj.get(K("inserted"))),
                         updated=_count(f"{endpoint} updated", obj.get(K("updated"))),
                         ignored=None if _empty(obj.get(K("ignored"))) else _count(f"{endpoint} ignored",
                                                                                    obj.get(K("ignored"))),
                         details=read_ignored(obj.get(K("ignored_details"))),
                         campid=_text(obj.get(K("campid"))), reading=reading)


__all__ = ["CampaignInfo", "Ignored", "Notes", "ProcessAnswer", "Rows", "answer_error", "campaigns", "code_of",
           "decode", "keyed", "read_ignored", "read_process", "read_rows", "read_time", "read_token",
           "readable_reason", "recipient", "recipients", "unwrap"]

"""Readings: the answers a provider's document leaves open, and which one a server chose.

Where a document does not show an answer (an envelope or a bare value, an array or an id-keyed
object, ASMX's ``{"d": ...}``, a key's spelling), each client accepts every reasonable reading,
normalises it once at the edge, and notes here which reading came. Each provider's ``api.py``
holds its table: what the document leaves open -> the readings accepted -> how each is
recognised. An answer in none of them is :class:`~sync.errors.UnknownReadingError`: one line
naming the endpoint, the readings expected and the first 200 characters that came, never a
default and never an empty pull.

A client keeps one :class:`ReadingLog` (``client.readings``); ``connection test`` prints it and
stores it on the connection, and a run whose answers change reading says so in one line.

What a provider offers, all optional (the engine and ``connection test`` look for each by name,
never for a provider's name):

``readings: ReadingLog``
    Set in ``__init__``. The client calls ``self.readings.note(endpoint, reading)`` on every answer
    it normalises: ``endpoint`` names the call as the document does (``"GET list/{nl_id}"``, not
    one key per list id), ``reading`` names the shape in a few words (``"id-keyed object"``,
    ``"ASMX {d: ...}"``). Note a reading only where the answer tells it: an empty ``[]`` is both
    "array" and "PHP's empty id-keyed array", so noting it would flag a change whenever a list
    empties. ``connection test`` stores :meth:`ReadingLog.as_dict` on the connection
    (``connections.readings``, merged over what was there); a run compares what it saw with what
    is stored and logs one ``provider.reading_changed`` warning per change
    (:func:`reading_changes`), then stores the merge in the transaction that records the run.

``async def connection_probe(self) -> list[str]``
    The read-only calls a run makes, with real parameters (a page of each mapped list, the
    campaign reports, a day of conversations); one human line per call, e.g.
    ``"GET list/101: 3 records (reading: id-keyed object)"``. Never writes. ``connection test``
    runs it after its login and list checks, as the check ``reads`` (one line each).

``request_fallbacks: ClassVar[Mapping[str, Sequence[str]]]``
    Where readings differ in the REQUEST (the API key in the path or in the query; query
    parameters or a JSON body): connection setting -> its values, the document's literal reading
    FIRST. The setting itself is an ordinary connection setting (declared in ``sync.providers.specs``
    with the first value as its default, validated in the provider's settings parsing) that the
    client obeys; values are strings. ``connection test`` tries the connection's current values
    first (each setting's first value where none is set) and, while a check fails with a
    :class:`~sync.errors.ProviderError` whose ``status_code`` is 404 or 405
    (:data:`FALLBACK_STATUSES`), builds the provider again with the next combination
    (:func:`request_variants`) and repeats its checks: every check is read-only, so a fallback
    never writes. It reports which combination answered (check ``request readings``) and stores it
    in the connection's settings when it differs from the current one (where none answered every
    call, the one with the fewest 404/405 is stored if it beat the current one). So a client must
    let a 404/405 of such a call out of ``check_lists``, the login and ``connection_probe`` as
    ``ProviderError(..., status_code=404)`` (or a subclass), never turn it into "not found" data
    or a problem line.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sync.errors import ConfigurationError, UnknownReadingError
from sync.logs import SECRETS

#: How much of an unreadable answer an error shows.
SHOWN_CHARS = 200
#: Statuses that make ``connection test`` try a request setting's next value: the server does
#: not have the call in this shape (404 Not Found, 405 Method Not Allowed).
FALLBACK_STATUSES = frozenset({404, 405})
#: At most this many combinations of request settings are tried by one ``connection test``.
MAX_REQUEST_VARIANTS = 8


def shown(raw: Any) -> str:
    """The first characters of an answer, on one line, with every known secret scrubbed."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "replace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
    text = " ".join(text.split())
    return SECRETS.scrub(text[:SHOWN_CHARS] + ("…" if len(text) > SHOWN_CHARS else ""))


def unknown_reading(endpoint: str, expected: Iterable[str], raw: Any) -> UnknownReadingError:
    """The error for an answer in none of the accepted readings (raise it)."""
    return UnknownReadingError(f"{endpoint}: the answer is in none of the readings we accept "
                               f"({'; '.join(expected)}); it began: {shown(raw) or '(empty)'}")


class ReadingLog:
    """Endpoint -> the reading its answers came in, as this client saw them."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self.changes: list[tuple[str, str, str]] = []   # (endpoint, before, after) within this client

    def note(self, endpoint: str, reading: str) -> None:
        before = self.seen.get(endpoint)
        if before is not None and before != reading:
            self.changes.append((endpoint, before, reading))
        self.seen[endpoint] = reading

    def as_dict(self) -> dict[str, str]:
        return dict(sorted(self.seen.items()))


def changed_readings(stored: Mapping[str, str] | None, now: Mapping[str, str]) -> list[str]:
    """One line per endpoint whose reading differs from the one stored on the connection."""
    stored = stored or {}
    return [f"{endpoint}: answered as {now[endpoint]!r}, was {stored[endpoint]!r}"
            for endpoint in sorted(now) if endpoint in stored and stored[endpoint] != now[endpoint]]


class ReadingChange(NamedTuple):
    """An endpoint whose answers came in another reading than before."""

    endpoint: str
    was: str
    now: str


def readings_of(provider: Any) -> ReadingLog | None:
    """The provider's reading log, or None for a provider that keeps none."""
    log = getattr(provider, "readings", None)
    return log if isinstance(log, ReadingLog) else None


def reading_changes(stored: Mapping[str, str] | None, log: ReadingLog) -> list[ReadingChange]:
    """Every change of reading, in order: from the stored reading to the first one this client
    saw, then each change within the client's own answers (one per change, never two for one)."""
    stored = stored or {}
    first = dict(log.seen)
    for endpoint, before, _after in reversed(log.changes):
        first[endpoint] = before
    changes = [ReadingChange(endpoint, stored[endpoint], first[endpoint])
               for endpoint in sorted(first) if endpoint in stored and stored[endpoint] != first[endpoint]]
    return changes + [ReadingChange(*change) for change in log.changes]


def merged_readings(stored: Mapping[str, str] | None, seen: Mapping[str, str]) -> dict[str, str]:
    """What to store: the stored readings with the ones seen now over them (an endpoint not read
    this time keeps its last known reading)."""
    return dict(sorted({**(stored or {}), **seen}.items()))


def request_fallbacks_of(provider: Any) -> dict[str, tuple[str, ...]]:
    """A provider's (class or instance) ``request_fallbacks``, checked: setting -> values, the
    document's literal reading first; {} for a provider without request readings."""
    declared = getattr(provider, "request_fallbacks", None) or {}
    if not isinstance(declared, Mapping):
        raise ConfigurationError(f"{getattr(provider, 'name', provider)}: request_fallbacks must map a "
                                 "setting to its values")
    found: dict[str, tuple[str, ...]] = {}
    for setting, values in declared.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ConfigurationError(f"{getattr(provider, 'name', provider)}: request_fallbacks[{setting!r}] "
                                     "must be a non-empty sequence of values")
        found[str(setting)] = tuple(str(value) for value in values)
    return found


def request_variants(fallbacks: Mapping[str, Sequence[str]], settings: Mapping[str, Any]) -> list[dict[str, str]]:
    """The request settings to try, in order: the connection's current values first (the
    document's literal reading where none is set), then every other combination, each setting's
    values in the declared order; at most :data:`MAX_REQUEST_VARIANTS`."""
    ordered: list[list[str]] = []
    for setting, values in fallbacks.items():
        current = str(settings.get(setting) or values[0])
        ordered.append([current, *(value for value in values if value != current)])
    variants = [dict(zip(fallbacks, combination, strict=True)) for combination in itertools.product(*ordered)]
    return variants[:MAX_REQUEST_VARIANTS] or [{}]


def variant_text(variant: Mapping[str, str]) -> str:
    """``api_key_in=query, params_in=body`` for people."""
    return ", ".join(f"{setting}={value}" for setting, value in variant.items())

"""The flat holders of a first sync's member ids (issue 26, first-sync memory): ``ChangedMembers``
(sync/crm.py) gives back exactly the times and ids it was given, in order, whatever their
awareness; ``_Concatenation`` (sync/engine/push.py) reads two lists as the one they would make."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from sync.crm import ChangedMembers
from sync.engine.context import chunks
from sync.engine.push import _Concatenation

ISTANBUL = dt.timezone(dt.timedelta(hours=3))


@pytest.mark.parametrize("tz", [None, dt.UTC, ISTANBUL], ids=["naive", "utc", "istanbul"])
def test_times_and_ids_come_back_as_given(tz: dt.tzinfo | None) -> None:
    start = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=tz)
    pairs = [(start + dt.timedelta(seconds=n, microseconds=n * 7), f"m{n:05d}") for n in range(2_500)]
    changed = ChangedMembers(pairs)
    assert len(changed) == 2_500 and bool(changed)
    assert list(changed) == pairs
    assert changed.ids == [member_id for _, member_id in pairs]
    assert changed[0] == pairs[0] and changed[-1] == pairs[-1]
    assert changed[10:13] == pairs[10:13] and changed[2_490:] == pairs[2_490:]
    assert [chunk for chunk in chunks(changed, 1_000)] == [pairs[:1_000], pairs[1_000:2_000], pairs[2_000:]]
    assert all(changed.at(n).tzinfo == tz for n in (0, 1_234, 2_499))
    assert changed.at(1_234) == pairs[1_234][0]


def test_a_naive_time_among_aware_ones_is_utc() -> None:
    aware = dt.datetime(2026, 3, 1, 12, tzinfo=ISTANBUL)
    changed = ChangedMembers([(aware, "a"), (dt.datetime(2026, 3, 1, 10), "b")])
    assert changed.at(1) == dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
    assert changed.at(1).tzinfo == ISTANBUL


def test_empty() -> None:
    assert not ChangedMembers() and len(ChangedMembers()) == 0 and list(ChangedMembers()) == []


@pytest.mark.parametrize("heads, tails", [(0, 0), (0, 7), (7, 0), (1_000, 1), (999, 3), (2_345, 678)])
def test_a_concatenation_reads_as_the_list_it_would_make(heads: int, tails: int) -> None:
    head = [f"h{n}" for n in range(heads)]
    tail = [f"t{n}" for n in range(tails)]
    joined = head + tail
    both = _Concatenation(head, tail)
    assert len(both) == len(joined) and list(both) == joined
    for size in (1, 2, 500, 1_000, 5_000):
        assert list(chunks(both, size)) == list(chunks(joined, size))
    rng = random.Random(heads * 31 + tails)
    for _ in range(200):
        a, b = sorted(rng.randrange(-5, len(joined) + 5) for _ in range(2))
        assert both[a:b] == joined[a:b]
        assert both[a:b:2] == joined[a:b:2]
    if joined:
        assert [both[n] for n in range(-len(joined), len(joined))] == joined + joined

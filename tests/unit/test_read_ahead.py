"""``read_ahead`` gives every page once, in order, raises a page's error where the page would
have been, and leaves no thread behind when its caller stops early."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from sync.engine.ahead import read_ahead


def _pages(count: int, fail_at: int | None = None, log: list[int] | None = None) -> Iterator[list[int]]:
    for index in range(count):
        if index == fail_at:
            raise RuntimeError(f"page {index} failed")
        if log is not None:
            log.append(index)
        time.sleep(0.001)
        yield [index]


def _threads() -> int:
    return sum(thread.name == "test-ahead" for thread in threading.enumerate())


def test_every_page_once_in_order() -> None:
    assert [page[0] for page in read_ahead(_pages(50), name="test-ahead")] == list(range(50))
    assert list(read_ahead(iter([]), name="test-ahead")) == []
    assert _threads() == 0


def test_an_error_is_raised_where_its_page_would_have_been() -> None:
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="page 7 failed"):
        for page in read_ahead(_pages(20, fail_at=7), name="test-ahead"):
            seen.append(page[0])
    assert seen == list(range(7)) and _threads() == 0


def test_stopping_early_stops_the_reader_and_closes_the_pages() -> None:
    read: list[int] = []
    source = _pages(1000, log=read)
    pages = read_ahead(source, name="test-ahead", depth=2)
    assert [next(pages)[0] for _ in range(3)] == [0, 1, 2]
    pages.close()
    assert _threads() == 0
    assert len(read) <= 3 + 2 + 1           # what was taken, the queue, the page being read
    with pytest.raises(StopIteration):
        next(source)                         # closed

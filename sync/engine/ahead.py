"""Reading the next page while this one is worked on.

A backfill alternates between two servers: the CRM computes a page of digests while the daemon
waits, then our database compares it while the CRM waits. With :func:`read_ahead`, a thread asks
for the next page as soon as the caller has taken this one (the driver releases the GIL while it
waits on the server), so the CRM's work overlaps ours.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.05


def read_ahead(pages: Iterator[T], *, name: str, depth: int = 1) -> Iterator[T]:
    """``pages`` in their order, with up to ``depth`` of them read ahead by a thread. An error of
    ``pages`` is raised here, where its page would have been; when the caller stops early, the
    thread stops after the page it is reading and ``pages`` is closed."""
    ahead: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for page in pages:
                if not offer((page, None)):
                    return
        except BaseException as error:      # handed to the caller, raised there
            offer((_DONE, error))
            return
        offer((_DONE, None))

    thread = threading.Thread(target=fill, name=name, daemon=True)
    thread.start()
    try:
        while True:
            page, error = ahead.get()
            if page is _DONE:
                if error is not None:
                    raise error
                return
            yield page      # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
        close = getattr(pages, "close", None)
        if close is not None:
            close()

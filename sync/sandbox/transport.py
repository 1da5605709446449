"""How a sandbox reaches a client: in process through httpx, or served by uvicorn.

A sandbox "drops the connection" by raising ``SandboxDrop`` before it starts a response.
Both ways of running it turn that into what a client sees from a real server that drops
the connection: in process, ``httpx.RemoteProtocolError``; served, a socket closed
without a byte of response (which httpx also reports as ``RemoteProtocolError``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from sync.sandbox.faults import Fault

#: What httpx says when a server closes the connection before answering.
DROP_MESSAGE = "Server disconnected without sending a response."


class SandboxDrop(Exception):
    """Raised by a sandbox app, before any response, to drop the connection unanswered."""


#: A sandbox's front door: (scope, receive, send, the Starlette app behind it).
Front = Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]


async def answer(scope: Scope, receive: Receive, send: Send, app: ASGIApp, fault: Fault | None,
                 fault_response: Callable[[Fault], ASGIApp], request_log: list[tuple[str, str, int]]) -> None:
    """What every sandbox's front door does with one request: serve ``app`` or this call's fault,
    and log (method, path, status) whatever happens (status 0: no answer left).

    A "drop" fault drops the connection unanswered; "apply_then_drop" lets the app apply the
    request and drops its answer (a lost answer to a write); a 429 or 5xx fault is answered by
    ``fault_response``, the provider's own shape of such an answer.
    """
    status = 0

    async def logged_send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        await send(message)

    async def swallow(message: Message) -> None:
        pass

    method, path = scope["method"], scope["path"]
    try:
        if fault is None:
            await app(scope, receive, logged_send)
        elif fault.kind == "drop":
            raise SandboxDrop(f"{method} {path}")
        elif fault.kind == "apply_then_drop":
            await app(scope, receive, swallow)
            raise SandboxDrop(f"{method} {path} (applied)")
        else:
            await fault_response(fault)(scope, receive, logged_send)
    finally:
        request_log.append((method, path, status))


class SandboxApp(Starlette):
    """A Starlette app whose ``front`` sees each request before Starlette's own middleware.

    That is where a sandbox logs requests and injects faults: raised any deeper, a
    ``SandboxDrop`` would be answered 500 by Starlette's ``ServerErrorMiddleware``.
    """

    def __init__(self, routes: Sequence[BaseRoute], front: Front) -> None:
        super().__init__(routes=routes)
        self._front = front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send, super().__call__)


class _DropAwareTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` that reports a sandbox drop as a transport error."""

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except SandboxDrop:
            raise httpx.RemoteProtocolError(DROP_MESSAGE, request=request) from None

    async def aclose(self) -> None:
        await self._inner.aclose()


def sandbox_transport(app: ASGIApp) -> httpx.AsyncBaseTransport:
    """An httpx transport that runs ``app`` in process, drops included."""
    return _DropAwareTransport(app)


class _DroppingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, turning ``SandboxDrop`` into a closed socket.

    uvicorn answers 500 to any exception raised before a response starts, so the app
    cannot drop a connection by raising; only the protocol holds the socket to close.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app

        async def app_with_drops(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await app(scope, receive, send)
            except SandboxDrop:
                self.transport.close()
                # Wait until uvicorn has seen the disconnect, so it neither sends a 500
                # nor logs "returned without starting response".
                while (await receive())["type"] != "http.disconnect":
                    pass

        self.app = app_with_drops


def _config(app: ASGIApp, host: str, port: int, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, http=_DroppingH11Protocol, interface="asgi3",
                          ws="none", lifespan="off", **options)


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` with uvicorn until interrupted (``crm-esp-sync sandbox serve``)."""
    uvicorn.Server(_config(app, host, port)).run()


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` in a background thread; yields its base URL ``http://host:port``.

    ``port=0`` picks a free port. Logging is left unconfigured (``log_config=None``),
    so serving inside a test or the demo does not rewire the process's loggers.
    """
    server = uvicorn.Server(_config(app, host, port, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, name="sandbox-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the sandbox server did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout_s)

"""The client's connection, as the faults need it: read or discard the body, notice the client
leaving, hang up without answering, and tell the access log which of these happened.

Marks go into the request's ASGI scope under private keys: the server transport (so a fault can
close it), and whether we dropped the connection or the client left during an injected delay.
"""

from __future__ import annotations

import asyncio

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

from nen_celery.simulator.errors import ApiError

_TRANSPORT_KEY = "nen_sim.transport"
_DROPPED_KEY = "nen_sim.dropped"
_CLIENT_GONE_KEY = "nen_sim.client_gone"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; ApiError(413) as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def discard_body(request: Request) -> None:
    async for _chunk in request.stream():
        pass


async def until_disconnected(request: Request) -> None:
    """Return once the client is gone (call only after the body was read, or for bodiless requests)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_unless_gone(request: Request, seconds: float, wake: asyncio.Event) -> None:
    """Wait ``seconds``, less if the client hangs up (marked for the access log) or ``wake`` is set."""
    hangup = asyncio.ensure_future(until_disconnected(request))
    waiters = {asyncio.ensure_future(wake.wait()), hangup}
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        if hangup in done:
            request.scope[_CLIENT_GONE_KEY] = True
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def drop_connection(request: Request) -> None:
    """Close the connection without a byte of answer: the client sees the server hang up.

    The transport is the one uvicorn handed the app (see ``TransportApp``). After closing it we
    wait until the server noticed, so it neither answers nor reports a missing response.
    """
    transport = request.scope.get(_TRANSPORT_KEY)
    if transport is None:
        raise RuntimeError("drop_after_accept needs a server that exposes its transport (uvicorn)")
    request.scope[_DROPPED_KEY] = True
    transport.close()
    await until_disconnected(request)


def connection_outcome(scope: Scope, status: int) -> str:
    """What the access log reports: ``dropped``, ``<status> (client gone)`` or the status."""
    if scope.get(_DROPPED_KEY):
        return "dropped"
    if scope.get(_CLIENT_GONE_KEY):
        return f"{status} (client gone)"
    return str(status)


class NoResponse(Response):
    """Sends nothing (the connection was dropped on purpose)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return


class TransportApp(Starlette):
    """Starlette, plus: the server transport of each request goes into its scope.

    uvicorn calls the app with ``send`` bound to its request cycle, which holds the transport; only
    here, before any middleware wraps ``send``, can ``drop_after_accept`` reach it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            # asyncio's transports or uvloop's (which do not subclass asyncio.BaseTransport)
            if all(callable(getattr(transport, name, None)) for name in ("close", "is_closing")):
                scope[_TRANSPORT_KEY] = transport
        await super().__call__(scope, receive, send)

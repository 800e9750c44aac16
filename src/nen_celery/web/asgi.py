"""The ASGI webhook receiver: ``uvicorn nen_celery.web.asgi:app``.

``POST /webhooks/nen`` answers within Nen's 5 s: verify, then the receiver's one plan
(decide.py) on the event loop: apply or queue, reply; the thread pool only from an effect that
has to block, such as a callback's publish (delivery.py). Its body must arrive within
``NEN_WEBHOOK_BODY_TIMEOUT`` (6 s): past it, 408 and the connection is closed.
``GET /healthz``: 200, or 503 with the reason while every webhook would be refused (no secret).
``GET /metrics`` only with ``NEN_RECEIVER_METRICS=true`` (404 otherwise): it shows volumes and
refusal counts, so it is not public unless you say so (or serve it apart: ``nen-celery metrics
serve``). A POST to any other path is logged as a refused webhook (a wrong NEN_WEBHOOK_URL).
``create_app()`` builds a fresh app for mounting (``Mount("/nen", create_app())``): a guest in
your process, it changes no logging and no garbage-collector state (put
``nen_celery.logs.redaction.RedactingFilter`` on your own handlers). Served on its own, it reads
the settings at startup (lifespan; a mounted app's lifespan does not run), so invalid settings
stop it before it listens.

``app`` is the standalone receiver, a process nen runs itself: at startup it also puts the
redaction and the run ids (``runlog``, JSON lines with ``NEN_LOG_FORMAT=json``) on the root and
uvicorn handlers, imports the tasks, makes its direct publisher with NEN_WEBHOOK_DIRECT_PUBLISH
(opt-in; its self-check runs then, direct_publish.py) and freezes what is loaded by then out
of the collector. A mounted receiver makes that publisher on its first webhook, in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from nen_celery.extras import requires_extra

with requires_extra("receiver", __name__):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

from nen_celery import observe
from nen_celery.celery.install import init_celery
from nen_celery.errors import ConfigurationError
from nen_celery.logs import runlog
from nen_celery.logs.redaction import add_redaction
from nen_celery.runtime import app as app_state
from nen_celery.runtime.context import get_context
from nen_celery.settings import get_settings
from nen_celery.web.answers import NOT_CONFIGURED, QUEUED, Answer, body_timeout, too_large
from nen_celery.web.delivery import deliver_async
from nen_celery.web.metrics import receiver_metrics
from nen_celery.web.refusals import refused, shown
from nen_celery.web.resources import direct_publisher, durability
from nen_celery.web.verify import check, readiness, refused_early

log = logging.getLogger("nen_celery.web")


async def _receive_limited(receive: Receive, headers: Headers, limit: int, timeout: float) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (reading stops there); TimeoutError when it
    is not all in within ``timeout`` s. Without that deadline a trickled body held its
    connection and up to ``limit`` bytes of buffer forever (issue 29: 200 such connections,
    +206 MB). One timer per request: ~7 µs, the cheapest bound asyncio has."""
    if _declared_too_large(headers, limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _declared_too_large(headers: Headers, limit: int) -> bool:
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


def _json(answer: Answer) -> JSONResponse:
    if answer is QUEUED:
        return _QUEUED
    # 408: the rest of the body is never read, so the connection cannot be reused: close it
    headers = {"connection": "close"} if answer.status_code == 408 else None
    return JSONResponse(answer.body, answer.status_code, headers=headers)


# the common answer, rendered once (a response holds no per-request state)
_QUEUED = JSONResponse(QUEUED.body, QUEUED.status_code)


async def _answer(
    read: Callable[[int, float], Awaitable[bytes | None]], headers: Headers, query: bytes
) -> Answer:
    """The answer to one webhook delivery; ``read(limit, timeout)`` gives its body, or None if
    too large (TimeoutError if it is not in within ``timeout`` s)."""
    try:
        ctx = get_context()
    except ConfigurationError:
        return refused_early(NOT_CONFIGURED)
    try:
        body = await read(ctx.settings.webhook_max_body, ctx.settings.webhook_body_timeout)
    except TimeoutError:
        return refused_early(body_timeout(ctx.settings.webhook_body_timeout))
    if body is None:
        return refused_early(too_large(ctx.settings.webhook_max_body))
    # check() matches header names case-insensitively (X-Hmac-Signature, x-hmac-signature, ...)
    error, parsed = check(ctx.settings, body, headers)
    if error is not None:
        return error  # pure and fast: no thread hop for a refusal
    # on the loop; the thread pool only from an effect that has to block (delivery.py)
    return await deliver_async(ctx, body, parsed, query, run_in_threadpool)


async def webhook(request: Request) -> JSONResponse:
    """``POST /webhooks/nen`` as a request/response endpoint (the FastAPI router's)."""
    limited = functools.partial(_receive_limited, request.receive, request.headers)
    return _json(await _answer(limited, request.headers, request.scope.get("query_string", b"")))


class WebhookApp:
    """``POST /webhooks/nen`` as a plain ASGI app: the receiver's own route. The same answers as
    ``webhook``, without Starlette's per-request Request object and handler wrapping and with
    the usual answer rendered once: ~57,000 fewer CPU instructions per delivery (callgrind),
    an eighth of what a whole bare Starlette endpoint with its LPUSH costs."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        limited = functools.partial(_receive_limited, receive, headers)
        answer = await _answer(limited, headers, scope.get("query_string", b""))
        await _json(answer)(scope, receive, send)


async def healthz(request: Request) -> JSONResponse:
    """200 ``{"status": "ok"}``, or 503 ``{"status": "not_ready", "reason": ...}`` while every
    webhook would be refused (no NEN_WEBHOOK_SECRET, invalid settings): a load balancer or
    orchestrator sees the misconfiguration before Nen's deliveries do."""
    return _json(readiness())


async def _not_found(request: Request, exc: Exception) -> Response:
    """404 as Starlette answers it; a POST is a webhook sent to a wrong URL: logged and counted."""
    if request.method == "POST":
        path = request.url.path  # never the query: it may carry a run hint's token
        refused("unknown_path", f"POST to {shown(path)}, not a route of the receiver (.../webhooks/nen)")
        observe.webhook_answered(404, "not_found")
    if isinstance(exc, HTTPException):
        return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)
    return PlainTextResponse("Not Found", 404)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    get_settings()  # fail at start, naming the setting, rather than at the first webhook
    yield


_OWN_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


@contextlib.asynccontextmanager
async def _standalone_lifespan(app: Starlette) -> AsyncIterator[None]:
    """The standalone receiver's start: its own process, so its own handlers (uvicorn configured
    them before loading the app) and its own collector."""
    loggers = [logging.getLogger(name) for name in _OWN_LOGGERS]
    # redaction first: a settings error below is logged through these handlers
    add_redaction(*loggers, *([logging.lastResort] if logging.lastResort is not None else []))
    runlog.configure(get_settings().log_format, *loggers)
    _install_named_app()
    # the Celery app and its tasks: built now, not on the first webhook's clock
    app_state.nen_task("ingest_webhook")
    _direct_publisher()
    _durability()

    # Celery, kombu and their modules are ~75,000 objects that live as long as the process: out
    # of the collector's sight, its full passes stop walking them on every few thousand webhooks.
    gc.collect()
    gc.freeze()
    yield


def _direct_publisher() -> None:
    """With NEN_WEBHOOK_DIRECT_PUBLISH, make the ingest_webhook publisher now: its self-check
    (direct_publish.self_check) runs at start-up, not on the first webhook's clock. Invalid
    settings are left to the requests to answer (503 not_configured), as before."""
    if not get_settings().webhook_direct_publish:
        return
    try:
        ctx = get_context()
    except ConfigurationError:
        return
    direct_publisher(ctx)


def _durability() -> None:
    """Probe the durability barrier now (NEN_DURABILITY=auto), so the event loop can wait on it
    from the first webhook; a run store not reachable yet is probed by a webhook's thread."""
    try:
        durability(get_context())
    except Exception as exc:  # settings or Redis: the requests answer for it
        log.warning("durability barrier not probed at start (%s)", type(exc).__name__)


def _install_named_app() -> None:
    """``NEN_CELERY_APP=proj`` (as for ``celery -A``): the standalone receiver publishes through
    your Celery app; without it, through the ready-made one. The app's task modules are imported
    as a worker imports them, so the receiver knows a run's callback task and publishes it
    itself when a terminal webhook ends the run (completion.dispatch_here); a module that fails
    to import is logged, and such callbacks go through complete_run."""
    path = os.environ.get("NEN_CELERY_APP")
    if path and app_state.installed() is None:
        from celery.app.utils import find_app

        app = find_app(path)
        init_celery(app)
        try:
            app.loader.import_default_modules()
        except Exception as exc:  # the user's modules: the receiver serves without them
            log.warning(
                "NEN_CELERY_APP=%s: its task modules not imported (%s: %s)", path, type(exc).__name__, exc
            )


def _build(lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]) -> Starlette:
    return Starlette(
        routes=[
            Route("/webhooks/nen", WebhookApp(), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", receiver_metrics, methods=["GET"]),
        ],
        exception_handlers={404: _not_found},
        lifespan=lifespan,
    )


def create_app() -> Starlette:
    """A fresh receiver to mount or serve; it changes nothing process-wide."""
    return _build(_lifespan)


app = _build(_standalone_lifespan)

"""The ASGI webhook receiver: ``uvicorn nen_celery.web.asgi:app``.

``POST /webhooks/nen`` answers within Nen's 5 s: verify, look up, enqueue, reply. ``GET /healthz``.
``create_app()`` builds a fresh app for mounting (``Mount("/nen", create_app())``); it installs
the log redaction of ``nen_celery.logging_filters`` for the process. Served on its own, the app
reads the settings at startup (lifespan), so invalid settings stop it before it listens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import runlog
from ..config import ConfigurationError, get_settings
from ..context import get_context
from ..logging_filters import install_redaction
from .metrics import metrics_endpoint
from .receiver import (
    HEALTHY,
    NOT_CONFIGURED,
    Answer,
    check,
    deliver_checked,
    deliver_hinted,
    refused_early,
    too_large,
)

log = logging.getLogger("nen_celery.web")


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (stops reading early)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, answer.status_code)


async def webhook(request: Request) -> JSONResponse:
    try:
        ctx = get_context()
    except ConfigurationError:
        return _json(refused_early(NOT_CONFIGURED))
    body = await _read_limited(request, ctx.settings.webhook_max_body)
    if body is None:
        return _json(refused_early(too_large(ctx.settings.webhook_max_body)))
    # check() matches header names case-insensitively (X-Hmac-Signature, x-hmac-signature, ...)
    error, parsed = check(ctx.settings, body, request.headers)
    if error is not None:
        return _json(error)  # pure and fast: no thread hop for a refusal
    query = request.scope.get("query_string", b"")
    answer = await deliver_hinted(ctx, body, parsed, query)  # every run we start: no thread hop
    if answer is None:
        answer = await run_in_threadpool(deliver_checked, ctx, body, parsed, query)
    return _json(answer)


async def healthz(request: Request) -> JSONResponse:
    return _json(HEALTHY)


def _configure_logging() -> None:
    """Run ids on records; JSON lines on the root and uvicorn handlers with NEN_LOG_FORMAT=json."""
    try:
        log_format = get_settings().log_format
    except ConfigurationError:
        log_format = "text"  # reported by the lifespan / first request
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    runlog.configure(log_format, *loggers)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    get_settings()  # fail at start, naming the setting, rather than at the first webhook
    from .. import tasks  # noqa: F401  (the Celery app and its tasks: not on the first webhook's clock)

    yield


def create_app() -> Starlette:
    install_redaction()
    _configure_logging()
    return Starlette(
        routes=[
            Route("/webhooks/nen", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=_lifespan,
    )


app = create_app()

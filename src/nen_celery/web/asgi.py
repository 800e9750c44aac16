"""The ASGI webhook receiver: ``uvicorn nen_celery.web.asgi:app``.

``POST /webhooks/nen`` answers within Nen's 5 s: verify, enqueue, reply. ``GET /healthz``.
``create_app()`` builds a fresh app for mounting (``Mount("/nen", create_app())``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..context import get_context
from .receiver import Answer, check, enqueue


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


async def webhook(request: Request) -> JSONResponse:
    ctx = get_context()
    body = await _read_limited(request, ctx.settings.webhook_max_body)
    if body is None:
        limit = ctx.settings.webhook_max_body
        return JSONResponse({"error": "body_too_large", "message": f"limit is {limit} bytes"}, 413)
    headers = {k.lower(): v for k, v in request.headers.items()}
    error, parsed = check(ctx.settings, body, headers)
    answer: Answer
    if error is not None:
        answer = error
    else:
        answer = await run_in_threadpool(enqueue, ctx.sealer, body, parsed, ctx.settings.publish_timeout)
    return JSONResponse(answer.body, answer.status_code)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/webhooks/nen", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


app = create_app()

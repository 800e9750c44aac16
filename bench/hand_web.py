"""The hand-written pipeline's webhook view (bench/hand.py): a plain Starlette endpoint that
checks the HMAC, enqueues the ingest task with Celery's apply_async and answers 200."""

from __future__ import annotations

import hmac
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.hand import ingest
from nen_celery.domain.signing import webhook_signature

_SECRET = os.environ.get("NEN_WEBHOOK_SECRET", "")


async def webhook(request: Request) -> JSONResponse:
    body = await request.body()
    presented = request.headers.get("x-hmac-signature", "")
    if not hmac.compare_digest(webhook_signature(_SECRET, body), presented):
        return JSONResponse({"error": "bad signature"}, 401)
    query = request.query_params
    ingest.apply_async((body.decode(), query["run"], query["key"]))
    return JSONResponse({"status": "queued"})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route("/webhooks/hand", webhook, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
)

"""The bare Starlette baseline of the receiver benchmark: one Redis LPUSH of the body."""

from __future__ import annotations

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.common import BOOK_URL

_redis = aioredis.Redis.from_url(BOOK_URL)


async def webhook(request: Request) -> JSONResponse:
    await _redis.lpush("bare:webhooks", await request.body())
    return JSONResponse({"status": "queued"})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route("/webhooks/nen", webhook, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
)

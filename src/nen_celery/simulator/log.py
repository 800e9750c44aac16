"""The simulator's logger, one name for all its modules, and its one-line-per-request access log.

The access log replaces uvicorn's, which would print query strings (they may carry tokens).
"""

from __future__ import annotations

import logging
import time

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nen_celery.simulator.connection import connection_outcome

logger = logging.getLogger("nen_celery.simulator")


class AccessLog:
    """One INFO line per request: method, path (never the query string), status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            outcome = connection_outcome(scope, status)
            logger.info("%s %s -> %s (%.1f ms)", scope["method"], scope["path"], outcome, elapsed_ms)

"""The simulated Nen API as a Starlette app.

It is deliberately strict (it rejects what the real API is documented to reject, and a
little more) so that client bugs show up locally, and honest about timing: runs progress on
asyncio timers and webhooks go out over real HTTP, with retries, like Nen's would.

Fault injection (``SimulatorConfig`` fields from ``seed`` on, all off by default) makes it
misbehave on purpose: error bursts, latency, garbled or missing 202s, duplicated, dropped,
reordered, late or missing webhooks, and two optional idempotency features Nen does not document.

This module only assembles the app; the parts live in ``nen_routes`` (the Nen API),
``control_routes`` (``/_sim``), ``state`` (runs and counters), ``faults``, ``webhooks``,
``validation`` and ``connection``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

from nen_celery.simulator.config import SimulatorConfig
from nen_celery.simulator.connection import TransportApp
from nen_celery.simulator.control_routes import ControlApi
from nen_celery.simulator.errors import error_response, reason_code
from nen_celery.simulator.log import AccessLog, logger
from nen_celery.simulator.nen_routes import NenApi
from nen_celery.simulator.state import SimulatorState


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405) in Nen's error shape."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": reason_code(exc.status_code), "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "the simulator failed; see its log")


def _closing(state: SimulatorState) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: on shutdown, cancel pending deliveries and close the HTTP clients."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    return lifespan


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """Build the simulator app; its state is ``get_state(app)``."""
    config = config if config is not None else SimulatorConfig()
    state = SimulatorState(config)
    app = TransportApp(
        routes=[*NenApi(state).routes(), *ControlApi(state).routes()],
        middleware=[Middleware(AccessLog)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=_closing(state),
    )
    app.state.simulator = state
    return app


def get_state(app: Starlette) -> SimulatorState:
    """The SimulatorState behind an app made by ``create_app``."""
    state = app.state.simulator
    if not isinstance(state, SimulatorState):
        raise TypeError("app was not built by nen_celery.simulator.create_app")
    return state

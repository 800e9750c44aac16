"""The simulator's own endpoints under ``/_sim``: stats, the live fault config, reset.

Not part of Nen's API; they let a test or a person steer and observe the simulator over HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

from nen_celery.simulator.config import SimulatorConfig
from nen_celery.simulator.control import InvalidConfig, config_view, parse_config_update
from nen_celery.simulator.errors import ApiError
from nen_celery.simulator.state import SimulatorState
from nen_celery.simulator.validation import parse_json_object


def apply_config_update(config: SimulatorConfig, update: Mapping[str, Any]) -> None:
    """Validate every key first, then apply all of them: a bad update changes nothing."""
    try:
        values = parse_config_update(update)
    except InvalidConfig as exc:
        raise ApiError(400, "invalid_config", str(exc)) from None
    for key, value in values.items():
        setattr(config, key, value)


class ControlApi:
    """The ``/_sim`` handlers over one ``SimulatorState`` and its config."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.config = state.config

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/stats", self.sim_stats, methods=["GET"]),
            Route("/_sim/config", self.sim_config, methods=["GET", "POST"]),
            Route("/_sim/reset", self.sim_reset, methods=["POST"]),
        ]

    async def sim_stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats())

    async def sim_config(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(config_view(self.config))
        try:
            update = parse_json_object(await request.body())
            apply_config_update(self.config, update)
        except ApiError as exc:
            return exc.response()
        if "seed" in update:
            self.state.reseed()
        return JSONResponse(config_view(self.config))

    async def sim_reset(self, request: Request) -> Response:
        await self.state.reset()
        return JSONResponse({"status": "reset"})

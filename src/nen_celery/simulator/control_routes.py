"""The simulator's own endpoints under ``/_sim``: stats, the live fault config, scripted outcomes, reset.

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
from nen_celery.simulator.control import (
    InvalidConfig,
    config_view,
    outcome_to_json,
    parse_config_update,
    parse_outcome,
)
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
            Route("/_sim/outcomes", self.sim_outcomes, methods=["GET", "POST"]),
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

    async def sim_outcomes(self, request: Request) -> Response:
        """GET: every scripted outcome; POST ``{"workflow_id", "status", "result"?, "error"?}``:
        that workflow's next runs end so (until ``/_sim/reset``)."""
        if request.method == "POST":
            try:
                body = parse_json_object(await request.body())
                workflow_id, outcome = parse_outcome(body)
            except InvalidConfig as exc:
                return ApiError(400, "invalid_outcome", str(exc)).response()
            except ApiError as exc:
                return exc.response()
            self.state.set_outcome(workflow_id, outcome)
        shown = [outcome_to_json(wf, outcome) for wf, outcome in sorted(self.state.outcomes().items())]
        return JSONResponse({"outcomes": shown})

    async def sim_reset(self, request: Request) -> Response:
        await self.state.reset()
        return JSONResponse({"status": "reset"})

"""Fault application: which request gets which injected fault, and the answers those faults give.

Decided on the event loop from the live config, which ``POST /_sim/config`` may change between two
requests. Planned faults are consumed as they fire; random ones draw from one seeded RNG, and only
while they are on, so the same seed replays the same faults.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse

from nen_celery.simulator.config import PlannedError, SimulatorConfig
from nen_celery.simulator.errors import error_response, reason_code

#: Body of the 202 that ``bad_accept_body`` sends instead of JSON.
BAD_ACCEPT_BODY = "accepted"


class FaultInjector:
    """Takes the next fault from the config; ``count`` names the stats counter each one bumps."""

    def __init__(self, config: SimulatorConfig, count: Callable[[str], None]) -> None:
        self.config = config
        self._count = count
        self._rng_seed = config.seed
        self._rng = random.Random(config.seed)

    def reseed(self) -> None:
        """Restart the fault RNG from ``config.seed``."""
        self._rng_seed = self.config.seed
        self._rng = random.Random(self._rng_seed)

    def chance(self, probability: float) -> bool:
        """True with ``probability``; draws from the RNG only when the fault is on."""
        if probability <= 0:
            return False
        if self.config.seed != self._rng_seed:  # seed changed by attribute, not via /_sim/config
            self.reseed()
        return self._rng.random() < probability

    def take_post_error(self) -> PlannedError | None:
        """The error this POST gets: the next planned one, else maybe a random one; None: no error."""
        config = self.config
        planned: PlannedError | None = None
        if config.post_errors:
            # Rebind rather than pop: a copy of the config (tests keep one) must not see it shrink.
            planned, config.post_errors = config.post_errors[0], config.post_errors[1:]
        elif self.chance(config.post_error_rate):
            planned = PlannedError(config.post_error_status)
        if planned is not None:
            self._count("errors_injected")
        return planned

    def take_drop(self) -> bool:
        """Whether this accepting POST loses its connection instead of an answer."""
        if self.config.drop_after_accept <= 0:
            return False
        self.config.drop_after_accept -= 1
        self._count("dropped_connections")
        return True

    def take_error_after_accept(self) -> int | None:
        """The gateway error this accepting POST gets instead of its 202, if one is planned."""
        planned = self.config.error_after_accept
        if not planned:
            return None
        # Rebind rather than pop: a copy of the config (tests keep one) must not see it shrink.
        status, self.config.error_after_accept = planned[0], planned[1:]
        self._count("errors_injected")
        return status

    def take_bad_body(self) -> bool:
        """Whether this accepting POST gets a non-JSON 202 body."""
        value = self.config.bad_accept_body
        if isinstance(value, bool):
            hit = value
        elif value > 0:
            self.config.bad_accept_body = value - 1
            hit = True
        else:
            hit = False
        if hit:
            self._count("bad_accept_bodies")
        return hit


def planned_error_response(planned: PlannedError) -> JSONResponse:
    """A planned error in Nen's shape, with its Retry-After header if it has one."""
    response = error_response(
        planned.status,
        planned.error if planned.error is not None else reason_code(planned.status),
        planned.message if planned.message is not None else f"simulated error {planned.status}",
    )
    if planned.retry_after is not None:
        response.headers["Retry-After"] = str(planned.retry_after)
    return response


def gateway_error_response(status: int) -> HTMLResponse:
    """What a proxy in front of Nen answers: an HTML page, not Nen's error shape."""
    return HTMLResponse(f"<html><body><h1>{status} Bad Gateway</h1></body></html>", status)


def bad_accept_response() -> PlainTextResponse:
    return PlainTextResponse(BAD_ACCEPT_BODY, status_code=202)

"""A small, honest local Nen API over real HTTP, for tests, the demo and benchmarks.

>>> with SimulatorServer(SimulatorConfig()) as sim:  # doctest: +SKIP
...     httpx.post(sim.url + "/runs", headers={"x-api-key": sim.config.api_key}, json=...)

The names below load on first use (PEP 562), so that importing the package, which
``python -m nen_celery.simulator`` does before its ``__main__``, needs no extra: without the
``simulator`` extra, the first name used raises ``MissingExtra`` and ``python -m`` says so in one
line.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nen_celery.simulator.app import create_app, get_state
    from nen_celery.simulator.config import PlannedError, SimulatorConfig
    from nen_celery.simulator.server import SimulatorServer, serve
    from nen_celery.simulator.state import SimulatorState

_HOMES = {
    "create_app": "app",
    "get_state": "app",
    "PlannedError": "config",
    "SimulatorConfig": "config",
    "SimulatorServer": "server",
    "serve": "server",
    "SimulatorState": "state",
}

__all__ = [
    "PlannedError",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorState",
    "create_app",
    "get_state",
    "serve",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

"""A small, honest local Nen API over real HTTP, for tests, the demo and benchmarks.

>>> with SimulatorServer(SimulatorConfig()) as sim:  # doctest: +SKIP
...     httpx.post(sim.url + "/runs", headers={"x-api-key": sim.config.api_key}, json=...)
"""

from nen_celery.simulator.app import create_app, get_state
from nen_celery.simulator.config import PlannedError, SimulatorConfig
from nen_celery.simulator.server import SimulatorServer, serve
from nen_celery.simulator.state import SimulatorState

__all__ = [
    "PlannedError",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorState",
    "create_app",
    "get_state",
    "serve",
]

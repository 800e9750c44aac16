"""The standalone receiver with the bench's tasks registered in its Celery app, as
``NEN_CELERY_APP`` loads a project's tasks: it publishes a run's callback (bench.done) itself
when a terminal webhook ends the run. ``uvicorn bench.receiver_app:app``."""

from __future__ import annotations

import bench.tasks  # noqa: F401  (registers bench.done on the ready-made app)
from nen_celery.web.asgi import app

__all__ = ["app"]

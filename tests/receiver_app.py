"""The standalone receiver with the tests' callback tasks registered in its Celery app, as
``NEN_CELERY_APP`` loads a project's: it then publishes a run's callback itself when a terminal
webhook ends the run (completion.dispatch_here). ``uvicorn tests.receiver_app:app``."""

from __future__ import annotations

import tests.callbacks  # noqa: F401  (registers tests.record on the ready-made app)
from nen_celery.web.asgi import app

__all__ = ["app"]

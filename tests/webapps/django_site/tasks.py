from __future__ import annotations

import logging
from typing import Any

from nen_celery.worker import app

log = logging.getLogger(__name__)


@app.task(name="django_example.run_finished")
def run_finished(run: dict[str, Any]) -> None:
    """on_complete / on_failure: runs once on a worker when the run ends (save a model, email, ...)."""
    log.info("run %s ended %s", run["run_id"], run["status"])

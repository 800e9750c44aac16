"""The API's Celery app, with nen-celery installed on it.

celery -A worker worker -l INFO      # the app's tasks and nen-celery's (no -Q needed)
celery -A worker beat -l INFO        # nen-celery's reconcile sweep
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

import nen_celery

celery = Celery(
    "reports",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_ignore_result=True,
)
nen_celery.init_celery(celery)  # nen's tasks and queues on this app; start_run publishes through it

# The API's own data (a database in a bigger app).
REPORTS_REDIS_URL = os.environ.get("REPORTS_REDIS_URL", "redis://127.0.0.1:6379/0")
REPORTS_KEY_PREFIX = os.environ.get("REPORTS_KEY_PREFIX", "reports:")
db = redis.Redis.from_url(REPORTS_REDIS_URL, decode_responses=True)


def report_key(report_id: str) -> str:
    return f"{REPORTS_KEY_PREFIX}report:{report_id}"


@celery.task(name="reports.render_pdf")
def render_pdf(report_id: str) -> None:
    """An ordinary task of the app, nothing to do with Nen."""
    db.hset(report_key(report_id), "pdf", f"/files/{report_id}.pdf")


@celery.task(name="reports.report_finished")
def report_finished(run: dict[str, Any], report_id: str) -> None:
    """on_complete and on_failure: nen-celery calls it once when the report's run ended. ``run``
    is the finished run (run_id, message_id, workflow_id, status, payload)."""
    db.hset(report_key(report_id), "status", run["status"])
    db.hincrby(report_key(report_id), "callbacks", 1)

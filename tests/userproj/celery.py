"""proj/celery.py, as a user writes it: their app, their settings, then nen_celery.init_celery."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_postrun

import nen_celery

app = Celery("proj")
app.conf.update(
    broker_url=os.environ.get("PROJ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    task_default_queue="proj",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    beat_schedule={"proj-nightly": {"task": "proj.send_email", "schedule": 86400.0, "args": ("ops",)}},
)
app.autodiscover_tasks(["tests.userproj"])
nen_celery.init_celery(app)


def _count(sender: object = None, **_: object) -> None:
    """The user's own signal handler: how many times each task ran in this process's worker."""
    from .tasks import record_run

    record_run(getattr(sender, "name", str(sender)))


if os.environ.get("PROJ_COUNT_RUNS"):  # the worker's environment in the test
    task_postrun.connect(_count, weak=False)

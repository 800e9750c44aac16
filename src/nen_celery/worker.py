"""The Celery app: ``celery -A nen_celery.worker worker`` / ``... beat``.

Reliability settings and why each is here:

- ``task_acks_late``: a message is acknowledged after the task ran, so a worker that dies
  mid-task does not lose it.
- ``task_reject_on_worker_lost``: with late acks, a task whose pool process was killed is
  re-queued instead of being marked failed. Every task is idempotent (Lua-guarded state),
  so running again is safe.
- ``worker_prefetch_multiplier=1``: a worker holds at most one unstarted message per process,
  so a dead worker strands little and work spreads across workers.
- ``visibility_timeout`` (Redis broker): an unacked message is redelivered after this; it is
  set in broker_transport_options and result_backend_transport_options alike, and no task
  uses a countdown/ETA near it (timers are <= 60 s).
- JSON only: no pickle on the wire.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_init
from kombu import Queue  # type: ignore[attr-defined]

from .config import Settings, get_settings

SUBMIT_QUEUE = "nen.submit"
INGEST_QUEUE = "nen.ingest"
COMPLETE_QUEUE = "nen.complete"
DEFAULT_QUEUE = "celery"  # user callbacks land here unless they route them elsewhere


def celery_config(settings: Settings) -> dict[str, object]:
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_connect_timeout": settings.publish_timeout,
    }
    return {
        "broker_url": settings.broker,
        "result_backend": settings.result_backend,
        "task_ignore_result": settings.result_backend is None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.publish_timeout,
        "task_default_queue": DEFAULT_QUEUE,
        # A plain worker (no -Q) consumes every queue listed here.
        "task_queues": (
            Queue(DEFAULT_QUEUE),
            Queue(SUBMIT_QUEUE),
            Queue(INGEST_QUEUE),
            Queue(COMPLETE_QUEUE),
        ),
        "task_routes": {
            "nen_celery.submit_run": {"queue": SUBMIT_QUEUE},
            "nen_celery.poll_run": {"queue": SUBMIT_QUEUE},
            "nen_celery.ingest_webhook": {"queue": INGEST_QUEUE},
            "nen_celery.complete_run": {"queue": COMPLETE_QUEUE},
        },
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "enable_utc": True,
        "timezone": "UTC",
    }


app = Celery("nen_celery", include=["nen_celery.tasks"])
app.conf.update(celery_config(get_settings()))


@worker_init.connect
def _check_configuration(**_: object) -> None:
    """Say at start, not at the first run, what the configuration cannot do."""
    from .checks import ERROR, config_problems

    log = logging.getLogger("nen_celery.worker")
    for level, message in config_problems(get_settings()):
        (log.error if level == ERROR else log.warning)("configuration: %s", message)

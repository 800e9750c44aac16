"""The Celery app: ``celery -A nen_celery.worker worker`` / ``... beat`` (exactly one beat).

Reliability settings and why each is here:

- ``task_acks_late``: a message is acknowledged after the task ran, so a worker that dies
  mid-task does not lose it.
- ``task_reject_on_worker_lost``: with late acks, a task whose pool process was killed is
  re-queued instead of being marked failed. Every task is idempotent (Lua-guarded state),
  so running again is safe.
- ``worker_prefetch_multiplier=1``: a worker holds at most one unstarted message per process,
  so a dead worker strands little and work spreads across workers.
- ``visibility_timeout`` (Redis broker): an unacked message is redelivered after this. It is set
  in broker_transport_options and result_backend_transport_options alike, and Settings refuses
  a value shorter than the longest task (submit lease) plus the longest countdown. A worker
  that vanished whole (SIGKILL, lost machine) gets its messages back after this timeout plus
  one ``unacked_restore_interval`` sweep (NEN_RESTORE_INTERVAL).
- ``worker_soft_shutdown_timeout`` + ``worker_enable_soft_shutdown_on_idle``: on a warm
  shutdown running tasks get time to finish and held countdown messages are given back to the
  broker instead of waiting out the visibility timeout.
- JSON only: no pickle on the wire.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from celery import Celery, Task
from celery.signals import worker_init, worker_ready
from kombu import Queue  # type: ignore[attr-defined]

from .config import Settings, get_settings

SUBMIT_QUEUE = "nen.submit"
INGEST_QUEUE = "nen.ingest"
COMPLETE_QUEUE = "nen.complete"
DEFAULT_QUEUE = "celery"  # user callbacks land here unless they route them elsewhere
DISPATCH_HEADER = "nen_dispatch"

log = logging.getLogger("nen_celery.worker")


def celery_config(settings: Settings) -> dict[str, object]:
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_connect_timeout": settings.publish_timeout,
        # Scan for messages whose worker vanished every restore_interval seconds (kombu's
        # default is interval x throttle = 100 s on top of the visibility timeout).
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
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
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
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
            "nen_celery.lookup_run": {"queue": SUBMIT_QUEUE},
            "nen_celery.ingest_webhook": {"queue": INGEST_QUEUE},
            "nen_celery.reconcile_runs": {"queue": INGEST_QUEUE},
            "nen_celery.complete_run": {"queue": COMPLETE_QUEUE},
        },
        "beat_schedule": {
            "nen-reconcile": {
                "task": "nen_celery.reconcile_runs",
                "schedule": settings.reconcile_interval,
                # a sweep nobody picked up in time is dropped, not piled up
                "options": {"expires": settings.reconcile_interval},
            }
        },
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "enable_utc": True,
        "timezone": "UTC",
    }


class NenTask(Task):  # type: ignore[misc]
    """Base class of every task on this app, user callbacks included.

    complete_run stamps each callback message with a dispatch token (run|attempt|nonce). If a
    crash between publishing and recording "sent" makes complete_run publish the callback a
    second time, the two messages carry different tokens and only the first one to start runs
    (claimed in Redis). A redelivery of that same message runs again if it had not reached its
    end (late acks), and is skipped if it had and only its acknowledgement was lost. A callback
    whose message was lost altogether is dispatched again by the sweep after
    NEN_CALLBACK_TIMEOUT. An exception raised by the callback counts as its end: retries of a
    failing callback are the callback's own business (autoretry_for, ...).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.id is None:  # called directly, not by a worker
            return super().__call__(*args, **kwargs)
        token = _dispatch_token(self.request)
        if token is None:
            return self.run(*args, **kwargs)
        from .context import get_context

        store = get_context().store
        verdict = store.claim_dispatch(token)
        if verdict != "run":
            log.warning(
                "callback %s for run %s not run again: %s",
                self.name,
                token.split("|", 1)[0],
                "it already finished" if verdict == "done" else "a duplicate dispatch already ran",
            )
            return None
        try:
            return self.run(*args, **kwargs)
        finally:
            # reached its end (a return or an exception): never dispatched again
            store.finish_dispatch(token)


def _dispatch_token(request: Any) -> str | None:
    headers = getattr(request, "headers", None) or {}
    token = headers.get(DISPATCH_HEADER) if isinstance(headers, dict) else None
    if token is None:
        token = getattr(request, DISPATCH_HEADER, None)
    return str(token) if token else None


app = Celery("nen_celery", include=["nen_celery.tasks"], task_cls=NenTask)
app.conf.update(celery_config(get_settings()))


@worker_init.connect
def _check_configuration(**_: object) -> None:
    """Say at start, not at the first run, what the configuration cannot do."""
    from .checks import ERROR, config_problems
    from .durability import check_durability
    from .logging_filters import install_redaction

    install_redaction()  # before anything else logs: no secret or URL query in any record
    settings = get_settings()
    for level, message in config_problems(settings):
        (log.error if level == ERROR else log.warning)("configuration: %s", message)
    check_durability()


@worker_ready.connect
def _check_clock(**_: object) -> None:
    """Nen refuses signatures more than 5 minutes off: say so at start, not as 401s later.

    Synchronous, with a short timeout, and after the pool started: a thread running while the
    prefork pool forks could leave a child holding a lock forever.
    """
    from .clock import check_clock

    settings = get_settings()
    if settings.api_key is not None:
        with httpx.Client(timeout=min(5.0, settings.connect_timeout + settings.read_timeout)) as http:
            check_clock(settings, http)

"""The ready-made Celery app, for users without one: ``celery -A nen_celery.worker worker`` /
``... beat`` (exactly one beat). Users with an app of their own call ``nen_celery.init_celery``
instead and never import this module; nothing else imports it but ``runtime.app.current()`` in a
process where init_celery did not run. It is created with ``set_as_current=False``: importing it
does not change ``celery.current_app`` (a worker of this app makes it current, as any worker).

Reliability settings of this app and why each is here:

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

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    task_postrun,
    task_prerun,
)
from kombu.entity import Exchange, Queue

from nen_celery import observe
from nen_celery.celery.callback_task import CallbackTask, NenTask
from nen_celery.celery.install import set_ready_made
from nen_celery.errors import ConfigurationError
from nen_celery.logs import runlog
from nen_celery.runtime.app import (
    COMPLETE_QUEUE,
    INGEST_QUEUE,
    SUBMIT_QUEUE,
    hidden_repr,
    is_amqp_url,
    is_redis_url,
    request_header,
)
from nen_celery.settings import Settings, get_settings

__all__ = [
    "COMPLETE_QUEUE",
    "DEFAULT_QUEUE",
    "INGEST_QUEUE",
    "QUEUE_NAMES",
    "SUBMIT_QUEUE",
    "NenTask",
    "app",
    "celery_config",
    "complete_run",
    "hidden_repr",
    "ingest_webhook",
    "lookup_run",
    "poll_run",
    "reconcile_runs",
    "request_header",
    "submit_run",
]

DEFAULT_QUEUE = "celery"  # user callbacks land here unless they route them elsewhere

log = logging.getLogger("nen_celery.worker")


# Nearest a run's end first: with NEN_BROKER_QUEUE_ORDER=priority (Redis broker) a worker takes
# its next message from the first of these that has one.
QUEUE_NAMES = (DEFAULT_QUEUE, COMPLETE_QUEUE, INGEST_QUEUE, SUBMIT_QUEUE)


def redis_transport_options(settings: Settings) -> dict[str, object]:
    """Only a Redis broker/backend has a visibility timeout and an unacked-restore sweep."""
    return {
        "visibility_timeout": settings.visibility_timeout,
        "socket_connect_timeout": settings.publish_timeout,
        # Scan for messages whose worker vanished every restore_interval seconds (kombu's
        # default is interval x throttle = 100 s on top of the visibility timeout).
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
        "max_connections": settings.broker_max_connections,
    }


def broker_options(settings: Settings) -> dict[str, object]:
    """Settings that depend on the broker: Redis (default) or RabbitMQ.

    RabbitMQ: publisher confirms (a publish returns once the broker has the message, so the
    receiver answers Nen 200 only for a webhook RabbitMQ holds), quorum queues (replicated,
    NEN_BROKER_QUEUE_TYPE), topic exchanges (Celery's native delayed delivery needs them for
    countdowns on quorum queues: a countdown then waits in the broker, not in a worker), and
    quorum-aware QoS (global QoS is off, the prefetch count is static). A dead worker's
    unacked messages come back as soon as its connection closes: no visibility timeout.
    """
    broker = settings.broker
    options: dict[str, object] = {}
    if is_redis_url(broker):
        options["broker_transport_options"] = {
            **redis_transport_options(settings),
            "queue_order_strategy": settings.broker_queue_order,
        }
    elif is_amqp_url(broker):
        quorum = settings.broker_queue_type == "quorum"
        options["broker_transport_options"] = {"confirm_publish": True}
        options["task_default_queue_type"] = settings.broker_queue_type
        options["task_create_missing_queue_type"] = settings.broker_queue_type
        options["task_default_exchange_type"] = "topic"
        options["task_create_missing_queue_exchange_type"] = "topic"
        options["worker_detect_quorum_queues"] = True
        options["broker_native_delayed_delivery_queue_type"] = settings.broker_queue_type
        arguments = {"x-queue-type": "quorum"} if quorum else None
        options["task_queues"] = tuple(
            Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments)
            for name in QUEUE_NAMES
        )
    if is_redis_url(settings.result_backend):
        options["result_backend_transport_options"] = redis_transport_options(settings)
    return options


def celery_config(settings: Settings) -> dict[str, object]:
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
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.publish_timeout,
        "task_default_queue": DEFAULT_QUEUE,
        # A plain worker (no -Q) consumes every queue listed here.
        "task_queues": tuple(Queue(name) for name in QUEUE_NAMES),
        "worker_send_task_events": True,
        # No "task-sent" events: each costs a second publish per task (the webhook receiver's
        # enqueue took 2.0 ms with it, 0.9 ms without). Flower shows a task from "received" on.
        "task_send_sent_event": False,
        "task_track_started": True,
        "enable_utc": True,
        "timezone": "UTC",
        **broker_options(settings),
    }


app = Celery("nen_celery", set_as_current=False, task_cls=CallbackTask)
app.conf.update(celery_config(get_settings()))
set_ready_made(app)  # nen's tasks, queues and beat entry, as init_celery adds them
if get_settings().event_batches:
    from nen_celery.fastpath.event_batches import EventBatches

    app.steps["consumer"].add(EventBatches)  # task events in batches of up to 50 ms, every pool


def _ours() -> bool:
    """This process runs a worker or beat of the ready-made app (they make it current)."""
    from celery import current_app

    return current_app._get_current_object() is app


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    """nen's own worker and beat: redaction and run ids on their handlers; NEN_LOG_FORMAT=json
    swaps the formatter. A process of another app is left as it is."""
    if _ours():
        _configure_logging(logger)


@beat_init.connect
def _beat_logging(sender: Any = None, **_: object) -> None:
    if getattr(sender, "app", None) is app:
        _configure_logging(logging.getLogger())


def _configure_logging(logger: logging.Logger) -> None:
    from nen_celery.logs import redaction  # nen's own worker and beat only

    try:
        log_format = get_settings().log_format
    except ConfigurationError:
        log_format = "text"  # the start-up check reports the settings error itself
    redaction.add_redaction(*logger.handlers)
    runlog.configure(log_format, logger)


@task_prerun.connect
def _bind_callback_ids(task: Any = None, args: Any = None, **_: object) -> None:
    """A callback on the ready-made app gets its run's ids on its log lines (nen's own tasks
    bind theirs in NenTask). Only this app's tasks: never another app's."""
    if task is None or task.app is not app or isinstance(task, NenTask):
        return
    runlog.clear()
    first = args[0] if args else None
    if isinstance(first, dict):
        observe.run_ids(**{k: first.get(k) for k in runlog.IDS})


@task_postrun.connect
def _unbind_callback_ids(task: Any = None, **_: object) -> None:
    if task is None or task.app is not app or isinstance(task, NenTask):
        return
    runlog.clear()


def _task(name: str) -> Any:
    """nen's task ``name`` on this app, resolved on first use (the app finalizes lazily)."""
    from celery.local import Proxy

    return Proxy(lambda: app.tasks[f"nen_celery.{name}"])


# nen's tasks on the ready-made app, for code and tests that use this app directly
submit_run = _task("submit_run")
ingest_webhook = _task("ingest_webhook")
complete_run = _task("complete_run")
poll_run = _task("poll_run")
lookup_run = _task("lookup_run")
reconcile_runs = _task("reconcile_runs")

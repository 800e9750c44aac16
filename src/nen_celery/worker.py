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
import math
import os
from typing import Any

import httpx
from celery import Celery, Task
from celery.exceptions import Retry
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from . import redis_transport
from .config import ConfigurationError, Settings, get_settings
from .event_batches import EventBatches

SUBMIT_QUEUE = "nen.submit"
INGEST_QUEUE = "nen.ingest"
COMPLETE_QUEUE = "nen.complete"
DEFAULT_QUEUE = "celery"  # user callbacks land here unless they route them elsewhere
DISPATCH_HEADER = "nen_dispatch"

log = logging.getLogger("nen_celery.worker")


# Nearest a run's end first: with NEN_BROKER_QUEUE_ORDER=priority (Redis broker) a worker takes
# its next message from the first of these that has one.
QUEUE_NAMES = (DEFAULT_QUEUE, COMPLETE_QUEUE, INGEST_QUEUE, SUBMIT_QUEUE)


def is_redis_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("redis", "rediss", "redis+socket", "sentinel")


def is_amqp_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


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
        # No "task-sent" events: each costs a second publish per task (the webhook receiver's
        # enqueue took 2.0 ms with it, 0.9 ms without). Flower shows a task from "received" on.
        "task_send_sent_event": False,
        "task_track_started": True,
        "enable_utc": True,
        "timezone": "UTC",
        **broker_options(settings),
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

    def apply_async(self, *args: Any, countdown: float | None = None, **options: Any) -> Any:
        if countdown and countdown > 0 and countdown != int(countdown) and _native_delays(self.app):
            # Native delayed delivery counts whole seconds and refuses 0 < countdown < 1
            countdown = float(math.ceil(countdown))
        return super().apply_async(*args, countdown=countdown, **options)

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
        finished = True
        try:
            return self.run(*args, **kwargs)
        except Retry:
            # self.retry() / autoretry_for queued this message again, under the same token: that
            # execution must still run (a retry is not the callback's end)
            finished = False
            raise
        finally:
            if finished:  # reached its end (a return or an exception): never dispatched again
                store.finish_dispatch(token)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's retry, keeping what Flower and the logs are shown of the arguments.

        Celery rebuilds a retried message without ``argsrepr``/``kwargsrepr``, so the retry would
        show the raw arguments: a callback's run with its payload (result URLs), Nen's 202 body.
        Kept: the message's own reprs while the arguments are unchanged; new arguments are shown
        by type, numbers and booleans as they are.
        """
        request = self.request
        if "argsrepr" not in options:
            options["argsrepr"] = request.argsrepr if args is None else hidden_repr(tuple(args))
        if "kwargsrepr" not in options:
            unchanged = kwargs is None and request.kwargsrepr is not None
            new = kwargs or request.kwargs or {}
            options["kwargsrepr"] = request.kwargsrepr if unchanged else hidden_repr(new)
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)


def hidden_repr(value: tuple[Any, ...] | dict[str, Any]) -> str:
    """``repr`` of task arguments with every value other than a number, bool or None replaced
    by its type name: safe to show in Flower and the logs."""

    def shown(v: Any) -> Any:
        return v if v is None or isinstance(v, int | float | bool) else f"<{type(v).__name__}>"

    if isinstance(value, dict):
        return repr({k: shown(v) for k, v in value.items()})
    return repr(tuple(shown(v) for v in value))


def request_header(request: Any, name: str) -> str | None:
    """A custom message header of the running task (kept in ``request.headers`` or as attribute)."""
    headers = getattr(request, "headers", None) or {}
    value = headers.get(name) if isinstance(headers, dict) else None
    if value is None:
        value = getattr(request, name, None)
    return str(value) if value else None


def _native_delays(app: Celery) -> bool:
    """Countdowns go through RabbitMQ's delay queues (quorum queues on an AMQP broker)."""
    return is_amqp_url(app.conf.broker_url) and any(
        (q.queue_arguments or {}).get("x-queue-type") == "quorum" for q in app.amqp.queues.values()
    )


def _dispatch_token(request: Any) -> str | None:
    return request_header(request, DISPATCH_HEADER)


app = Celery("nen_celery", include=["nen_celery.tasks"], task_cls=NenTask)
app.conf.update(celery_config(get_settings()))
redis_transport.install()  # workers, receivers and callers alike publish through kombu
app.steps["consumer"].add(EventBatches)  # task events in batches of up to 50 ms, every pool


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


@beat_init.connect
def _beat_redaction(**_: object) -> None:
    from .logging_filters import install_redaction

    install_redaction()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    """Run ids on every record; NEN_LOG_FORMAT=json swaps the handlers' formatter."""
    from . import runlog

    try:
        log_format = get_settings().log_format
    except ConfigurationError:
        log_format = "text"  # the start-up check reports the settings error itself
    runlog.configure(log_format, logger)


@task_prerun.connect
def _bind_run_ids(task: Any = None, args: Any = None, **_: object) -> None:
    """A task's ids on its log lines: our tasks take run_id first, callbacks the run dict."""
    from . import runlog

    runlog.clear()
    first = args[0] if args else None
    if isinstance(first, dict):
        runlog.bind(**{k: first.get(k) for k in runlog.IDS})
    elif isinstance(first, str) and task is not None and task.name in _RUN_ID_TASKS:
        runlog.bind(run_id=first)


@task_postrun.connect
def _unbind_run_ids(**_: object) -> None:
    from . import runlog

    runlog.clear()


@worker_process_shutdown.connect
def _metrics_process_exited(pid: int | None = None, **_: object) -> None:
    from . import metrics

    metrics.process_exited(pid or os.getpid())


_RUN_ID_TASKS = frozenset(
    f"nen_celery.{name}" for name in ("submit_run", "complete_run", "poll_run", "lookup_run")
)


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

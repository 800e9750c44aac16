"""The Celery app nen publishes through in this process, and the names of nen's queues.

Every publish of the project in a process (start_run, the receivers, the workers' callbacks)
goes through ``current()``: the app given to ``init_celery``, else the ready-made
``nen_celery.worker:app`` (imported on first use, never by importing ``nen_celery``).
Installing (registering tasks, worker step, beat entry) is ``nen_celery.celery.install``'s job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery, Task

log = logging.getLogger("nen_celery.celery")

# On every callback message nen dispatches: "<run_id>|<attempt>" (CallbackTask's guard).
CALLBACK_HEADER = "nen_callback"
SUBMIT_QUEUE = "nen.submit"
INGEST_QUEUE = "nen.ingest"
COMPLETE_QUEUE = "nen.complete"
NEN_QUEUES = (COMPLETE_QUEUE, INGEST_QUEUE, SUBMIT_QUEUE)

# Where each task goes unless the caller or the app's task_routes say otherwise.
TASK_QUEUES: Mapping[str, str] = {
    "nen_celery.submit_run": SUBMIT_QUEUE,
    "nen_celery.poll_run": SUBMIT_QUEUE,
    "nen_celery.lookup_run": SUBMIT_QUEUE,
    "nen_celery.ingest_webhook": INGEST_QUEUE,
    "nen_celery.reconcile_runs": INGEST_QUEUE,
    "nen_celery.complete_run": COMPLETE_QUEUE,
}
RECONCILE_ENTRY = "nen-reconcile"  # the sweep's beat_schedule entry
# What the Redis transport uses when broker_transport_options names no visibility timeout.
KOMBU_VISIBILITY_DEFAULT = 3600


LOCK = threading.RLock()  # held while an app is installed (check, register, then record it)
_installed: Celery | None = None  # the app init_celery was given
_ready_made: Celery | None = None  # nen_celery.worker:app, once that module is imported


def installed() -> Celery | None:
    """The app ``init_celery`` was given in this process, if any."""
    return _installed


def set_installed(app: Celery | None) -> None:
    """Record the app init_celery installed (None: forget it; tests install several apps)."""
    global _installed
    with LOCK:
        _installed = app


def current() -> Celery:
    """The app every publish of this process goes through."""
    app = _installed or _ready_made
    if app is None:
        # The one upward import of the layers (an allowed exception in pyproject.toml): the
        # ready-made app is built on first use, never on import.
        from nen_celery import worker  # noqa: F401  (the ready-made app registers itself)

        app = _installed or _ready_made
        assert app is not None
        _warn_if_other_apps(app)
    return app


def nen_task(name: str) -> Task:
    """One of nen's tasks on the current app (``submit_run``, ``ingest_webhook``, ...)."""
    return current().tasks[f"nen_celery.{name}"]


def ready_made() -> Celery | None:
    """``nen_celery.worker:app`` if that module was imported in this process."""
    return _ready_made


def set_ready_made(app: Celery, register: Callable[[Celery], None]) -> None:
    """The fallback app of processes without init_celery, registered by ``register``."""
    global _ready_made
    with LOCK:
        register(app)
        _ready_made = app


def _warn_if_other_apps(fallback: Celery) -> None:
    """A process that built its own Celery app but did not call init_celery publishes nen's
    tasks to NEN_BROKER_URL: almost always a forgotten line, so say it once."""
    try:
        from celery._state import _get_active_apps

        others = [a.main for a in _get_active_apps() if a is not fallback and a.main != "default"]
    except Exception:  # a read of Celery's bookkeeping only: never fail a publish over it
        return
    if others:
        log.warning(
            "nen-celery publishes through its ready-made app (NEN_BROKER_URL) although this "
            "process has the Celery app(s) %s: call nen_celery.init_celery(app) to use yours",
            ", ".join(repr(m) for m in others),
        )


def is_redis_url(url: object) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("redis", "rediss", "redis+socket", "sentinel")


def is_amqp_url(url: object) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def with_default_queue(task: Task, args: Any, kwargs: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with nen's queue for ``task``, unless the caller or the app's task_routes
    chose a destination (a task attribute would outrank task_routes: Celery's precedence)."""
    default = TASK_QUEUES.get(task.name)
    if default is None or any(options.get(k) for k in ("queue", "exchange", "routing_key")):
        return options
    router = task.app.amqp.router
    if router.lookup_route(task.name, args or (), kwargs or {}, options, task) is not None:
        return options
    return {**options, "queue": default}


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


def run_repr(run_id: str, **extra: Any) -> str:
    """The ``argsrepr`` of nen's task messages: the run id and a few plain values, never a
    body (Flower and the logs show it)."""
    parts = [f"run_id={run_id!r}"] + [f"{k}={v!r}" for k, v in extra.items()]
    return "(" + ", ".join(parts) + ")"

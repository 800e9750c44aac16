"""nen-celery inside a Celery app: the user's own (``init_celery``) or the ready-made one.

A guest in the user's app: ``init_celery(app)`` registers nen's tasks with their own options
(late acks, reject on worker lost, JSON), a worker step that makes a plain ``celery worker``
(no ``-Q``) consume nen's queues and checks the set-up at start, and the reconcile entry in
``beat_schedule``. It changes none of the app's global settings and acts on no other task;
a setting that breaks a guarantee is refused with ``ConfigurationError`` naming it.

Every publish of the project in a process (start_run, the receivers, the workers' callbacks)
goes through ``current()``: the app given to ``init_celery``, else the ready-made
``nen_celery.worker:app`` (imported on first use, never by importing ``nen_celery``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import uuid
import weakref
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import redis
from celery import Celery, Task, bootsteps, schedules
from celery.signals import beat_init, worker_process_shutdown, worker_ready

from . import runlog
from .config import ConfigurationError, Settings, get_settings

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
RECONCILE_ENTRY = "nen-reconcile"
_RUN_ID_TASKS = frozenset(
    f"nen_celery.{name}" for name in ("submit_run", "complete_run", "poll_run", "lookup_run")
)
# What the Redis transport uses when broker_transport_options names no visibility timeout.
KOMBU_VISIBILITY_DEFAULT = 3600

_lock = threading.RLock()
_installed: Celery | None = None  # the app init_celery was given
_ready_made: Celery | None = None  # nen_celery.worker:app, once that module is imported
_registered: weakref.WeakSet[Celery] = weakref.WeakSet()


def init_celery(app: Celery) -> Celery:
    """Install nen-celery into ``app``, the process's Celery app; returns it.

    Call it where the app is built, after its configuration is given (``config_from_object``),
    in every process that imports the app: web, workers, beat. Idempotent for the same app; an
    app of the same name built again (an app factory called once per test) takes over.
    Raises TypeError for an object that is not a Celery app, ConfigurationError (changing
    nothing) when an app of another name was installed already or a setting of the app breaks
    a guarantee.
    """
    global _installed
    if not isinstance(app, Celery):
        raise TypeError(f"init_celery expects a celery.Celery app, got {type(app).__name__}")
    with _lock:
        if _installed is app:
            return app
        if _installed is not None and _installed.main != app.main:
            raise ConfigurationError(
                f"init_celery was already called with the Celery app {_installed.main!r} in this "
                f"process; it cannot also install into {app.main!r} (one app per process)"
            )
        problems = config_problems(app, get_settings())
        if problems:
            raise ConfigurationError("; ".join(problems))
        register(app)
        if _installed is not None:
            log.info("nen-celery now publishes through a new Celery app %r (rebuilt)", app.main)
        _installed = app
    return app


def installed() -> Celery | None:
    """The app ``init_celery`` was given in this process, if any."""
    return _installed


def current() -> Celery:
    """The app every publish of this process goes through."""
    app = _installed or _ready_made
    if app is None:
        from . import worker  # noqa: F401  (the ready-made app registers itself)

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


def set_ready_made(app: Celery) -> None:
    """Called once by ``nen_celery.worker``: the fallback app of processes without init_celery."""
    global _ready_made
    with _lock:
        register(app)
        _ready_made = app


def reset_for_tests() -> None:
    """Forget init_celery's app (tests that install several apps one after another)."""
    global _installed
    with _lock:
        _installed = None


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


# -- registration ------------------------------------------------------------------------------


def register(app: Celery) -> None:
    """nen's tasks, worker step and beat entry on ``app`` (once per app)."""
    with _lock:
        if app in _registered:
            return
        from .tasks import DEFINITIONS

        for fun, options in DEFINITIONS:
            app.task(
                fun,
                base=NenTask,
                bind=True,
                shared=False,  # Celery's default would put them on every app the process makes
                acks_late=True,
                reject_on_worker_lost=True,
                serializer="json",
                **options,
            )
        app.steps["worker"].add(NenWorkerStep)
        _add_beat_entry(app)
        beat_init.connect(_check_beat_entry, weak=False, dispatch_uid="nen_celery.check_beat_entry")
        _registered.add(app)


class ReconcileEvery(schedules.schedule):  # type: ignore[misc]
    """The sweep's interval, read from the settings when beat asks, not when init_celery ran
    (Django's ``NEN_CELERY`` is installed after ``proj/celery.py`` was imported)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(timedelta(seconds=1), *args[1:], **kwargs)

    @property
    def run_every(self) -> timedelta:
        try:
            seconds = get_settings().reconcile_interval
        except ConfigurationError:  # reported by the worker's start-up check
            seconds = Settings.model_fields["reconcile_interval"].default
        return timedelta(seconds=seconds)

    @run_every.setter
    def run_every(self, value: Any) -> None:
        pass  # always the setting's


def _add_beat_entry(app: Celery) -> None:
    """The reconcile sweep in ``beat_schedule`` unless the app has an entry of that name (a
    user's own, or django-celery-beat's DatabaseScheduler syncs it from there). Added again
    whenever the app's configuration is (re)loaded; beat says so at start if it is missing."""

    def add(**_: Any) -> None:
        schedule = dict(app.conf.beat_schedule or {})
        if RECONCILE_ENTRY in schedule:
            return
        schedule[RECONCILE_ENTRY] = {
            "task": "nen_celery.reconcile_runs",
            "schedule": ReconcileEvery(),
            # a sweep nobody picked up within a minute (the longest interval) is dropped
            "options": {"expires": 60.0},
        }
        app.conf.beat_schedule = schedule

    app.on_after_configure.connect(add, weak=False)
    if app.configured:
        add()


def _check_beat_entry(sender: Any = None, **_: object) -> None:
    """At beat start: say loudly if the sweep was dropped (``beat_schedule`` replaced after
    init_celery), since runs then never time out or get repaired."""
    app = getattr(sender, "app", None)
    if app is None or app not in _registered:
        return
    if RECONCILE_ENTRY not in (app.conf.beat_schedule or {}):
        log.error(
            "beat_schedule has no %r entry: nen's reconcile sweep will not run. Set beat_schedule "
            "before nen_celery.init_celery(app), or add the entry (task nen_celery.reconcile_runs)",
            RECONCILE_ENTRY,
        )


def config_problems(app: Celery, settings: Settings) -> list[str]:
    """The app's settings that break a guarantee of nen's, each naming the value needed."""
    conf = app.conf
    problems = []
    accept = {str(c).lower() for c in (conf.accept_content or ())}
    if not accept & {"json", "application/json"}:
        problems.append(
            f"accept_content {sorted(accept)} must include 'json': nen's task messages are JSON"
        )
    if accept & {"pickle", "application/x-python-serialize"}:
        problems.append(
            "accept_content must not include 'pickle': a worker that unpickles broker messages "
            "runs whatever code a writer to the broker sends (set accept_content=['json'])"
        )
    if is_redis_url(conf.broker_url):
        options = conf.broker_transport_options or {}
        timeout = float(options.get("visibility_timeout", KOMBU_VISIBILITY_DEFAULT))
        needed = settings.submit_lease + settings.reschedule_delay
        if timeout <= needed:
            problems.append(
                f"broker_transport_options['visibility_timeout'] is {timeout:.0f}s; it must exceed "
                f"{needed:.0f}s (nen's longest task: NEN_SUBMIT_DEADLINE + HTTP timeouts + 10 s + "
                "NEN_RESCHEDULE_DELAY), or the Redis broker redelivers submits still running"
            )
    return problems


def is_redis_url(url: object) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("redis", "rediss", "redis+socket", "sentinel")


def is_amqp_url(url: object) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


# -- nen's tasks -------------------------------------------------------------------------------


def with_default_queue(
    task: Task, args: Any, kwargs: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """``options`` with nen's queue for ``task``, unless the caller or the app's task_routes
    chose a destination (a task attribute would outrank task_routes: Celery's precedence)."""
    default = TASK_QUEUES.get(task.name)
    if default is None or any(options.get(k) for k in ("queue", "exchange", "routing_key")):
        return options
    router = task.app.amqp.router
    if router.lookup_route(task.name, args or (), kwargs or {}, options, task) is not None:
        return options
    return {**options, "queue": default}


class CallbackTask(Task):  # type: ignore[misc]
    """An optional base class for your callbacks (``@app.task(base=CallbackTask)``); the
    ready-made app uses it for every task. It adds, to callback messages nen dispatched (their
    ``nen_callback`` header names the run and attempt), run in a worker:

    - one execution at a time per run and attempt: a lease in Redis (``NEN_CALLBACK_LEASE``,
      renewed by a heartbeat thread while the callback runs). A copy of the message (a broker
      redelivery while the callback still runs) waits (retries every half lease) and then runs
      only if the first died before the end, or is skipped once the callback completed;
    - retries that keep the argument reprs nen gave the callback message (the run's payload
      holds presigned URLs).

    Plain tasks are dispatched once per attempt as well; only the concurrency guard needs it.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.id is None or request.is_eager:  # called directly, or eagerly: as before
            return super().__call__(*args, **kwargs)
        mark = request_header(request, CALLBACK_HEADER)
        if mark is None:  # not a callback message of nen's
            return self.run(*args, **kwargs)
        return _run_once(self, mark, args, kwargs)

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
        show the raw arguments (a run's payload, Nen's 202 body). Kept: the message's own reprs while the
        arguments are unchanged; new arguments are shown by type, numbers and booleans as they are.
        """
        request = self.request
        if "argsrepr" not in options:
            options["argsrepr"] = request.argsrepr if args is None else hidden_repr(tuple(args))
        if "kwargsrepr" not in options:
            unchanged = kwargs is None and request.kwargsrepr is not None
            new = kwargs or request.kwargs or {}
            options["kwargsrepr"] = request.kwargsrepr if unchanged else hidden_repr(new)
        mark = request_header(request, CALLBACK_HEADER)
        if mark is not None and "headers" not in options:  # the retry stays guarded
            options["headers"] = {**(request.headers or {}), CALLBACK_HEADER: mark}
        held = getattr(request, "nen_lease", None)
        if held is not None:  # free the lease before the retried message can be taken
            store, run_id, attempt, holder = held
            with contextlib.suppress(redis.RedisError):
                store.release_callback(run_id, attempt, holder)
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)


def _run_once(task: CallbackTask, mark: str, args: Any, kwargs: Any) -> Any:
    """Run the callback of the ``<run_id>|<attempt>`` in ``mark`` unless another execution
    holds it (wait: retry) or one completed it (skip)."""
    from celery.exceptions import Reject, Retry

    from .context import get_context

    run_id, _, attempt = mark.rpartition("|")
    store = get_context().store
    lease = store.settings.callback_lease
    holder = f"{task.request.id}/{uuid.uuid4().hex}"  # this execution, not the message
    try:
        verdict = store.claim_callback(run_id, attempt, holder, lease)
    except redis.RedisError as exc:
        log.warning("callback %s of run %s: lease not claimed (%r); retrying", task.name, run_id, exc)
        raise task.retry(exc=exc, countdown=lease / 2, max_retries=None) from exc
    if verdict == "done":
        log.info(
            "callback %s[%s]: run %s attempt %s already completed its callback; skipped",
            task.name, task.request.id, run_id, attempt,
        )
        return None
    if verdict != "claimed":  # busy: a live execution runs it; come back after half a lease
        log.info(
            "callback %s[%s]: run %s attempt %s is running in another execution; waiting",
            task.name, task.request.id, run_id, attempt,
        )
        raise task.retry(countdown=lease / 2, max_retries=None)
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(store, run_id, attempt, holder, lease, stop), daemon=True,
        name=f"nen-callback-lease-{run_id}",
    )
    beat.start()
    end = True
    task.request.nen_lease = (store, run_id, attempt, holder)  # for the callback's own retry
    try:
        return task.run(*args, **kwargs)
    except Retry:
        end = False  # the callback asked for a retry: that execution must run it
        raise
    except Reject as exc:
        end = not exc.requeue
        raise
    except Exception:
        raise  # its end, as Celery does not retry it either
    except BaseException:
        end = False  # the worker is going away mid-callback: a redelivered copy may run it
        raise
    finally:
        stop.set()
        beat.join()
        try:
            if end:
                store.finish_callback(run_id, attempt, holder)
            else:
                store.release_callback(run_id, attempt, holder)
        except redis.RedisError as exc:  # the lease lapses on its own; done is not recorded
            log.error("callback %s of run %s: lease not %s (%r)", task.name, run_id,
                      "finished" if end else "released", exc)


def _heartbeat(
    store: Any, run_id: str, attempt: str, holder: str, lease: float, stop: threading.Event
) -> None:
    """Renew the execution's lease every third of it until ``stop``."""
    while not stop.wait(lease / 3):
        try:
            if not store.renew_callback(run_id, attempt, holder, lease):
                log.warning("callback of run %s attempt %s: its lease lapsed while it ran", run_id, attempt)
        except Exception as exc:  # Redis away for a moment: the next beat tries again
            log.warning("callback of run %s: lease not renewed (%r)", run_id, exc)


class NenTask(CallbackTask):
    """Base class of nen's own tasks, never of the app's other tasks.

    Adds nen's default queue (``with_default_queue``), whole-second countdowns where RabbitMQ's
    native delays need them and the run id on the task's log records (runlog).
    """

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        options = with_default_queue(self, args, kwargs, options)
        countdown = options.get("countdown")
        if countdown and countdown > 0 and countdown != int(countdown) and _native_delays(self.app):
            # Native delayed delivery counts whole seconds and refuses 0 < countdown < 1
            options["countdown"] = float(math.ceil(countdown))
        return super().apply_async(args, kwargs, task_id, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.id is None:  # called directly, not by a worker
            return super().__call__(*args, **kwargs)
        runlog.clear()  # a pool thread never lends one task's ids to the next
        if args and isinstance(args[0], str) and self.name in _RUN_ID_TASKS:
            runlog.bind(run_id=args[0])
        try:
            return self.run(*args, **kwargs)
        finally:
            runlog.clear()


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


# -- the worker --------------------------------------------------------------------------------


class NenWorkerStep(bootsteps.Step):  # type: ignore[misc]
    """At a worker's start, before it consumes: refuse a set-up that breaks a guarantee (the
    worker exits naming it), consume nen's queues on a plain worker, report the configuration."""

    name = "nen_celery.worker_step"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        app = worker.app
        settings = get_settings()  # invalid settings stop the worker here, named
        problems = [] if app is _ready_made else config_problems(app, settings)
        if problems:
            raise ConfigurationError("; ".join(problems))
        consume_nen_queues(app)
        _report_configuration(settings, app)
        if settings.patch_kombu_redis:
            from . import redis_transport

            redis_transport.install()
        worker_ready.connect(_check_clock, weak=False, dispatch_uid="nen_celery.check_clock")
        worker_process_shutdown.connect(
            _metrics_process_exited, weak=False, dispatch_uid="nen_celery.metrics_exit"
        )


def consume_nen_queues(app: Celery) -> list[str]:
    """On a worker without ``-Q``/``-X``, also consume the nen queues its tasks are routed to
    by default (a queue the app routes nen's tasks to instead is the user's choice)."""
    queues = app.amqp.queues
    if getattr(queues, "_consume_from", None) is not None:  # -Q / -X chose the queues
        return []
    router = app.amqp.router
    added = []
    for name, default in TASK_QUEUES.items():
        task = app.tasks.get(name)
        if task is None or router.lookup_route(name, (), {}, {}, task) is not None:
            continue
        if default not in queues.consume_from:
            try:
                queue: Any = queues[default]  # as publishing creates it (queue type, exchange)
            except KeyError:  # task_create_missing_queues off
                queue = default
            queues.select_add(queue)
            added.append(default)
    return added


def _report_configuration(settings: Settings, app: Celery) -> None:
    """Say at start, not at the first run, what the configuration cannot do."""
    from .checks import ERROR, config_problems, kombu_problems
    from .durability import check_durability
    from .fastpath import installed_version

    redis_broker = is_redis_url(app.conf.broker_write_url or app.conf.broker_url)
    found = config_problems(settings) + kombu_problems(installed_version("kombu"), redis_broker)
    for level, message in found:
        (log.error if level == ERROR else log.warning)("configuration: %s", message)
    check_durability(allow_eviction=settings.allow_eviction)  # an evicting Redis: refused


def _check_clock(sender: Any = None, **_: object) -> None:
    """Nen refuses signatures more than 5 minutes off: say so at start, not as 401s later.

    Synchronous, with a short timeout, and after the pool started: a thread running while the
    prefork pool forks could leave a child holding a lock forever.
    """
    if getattr(sender, "app", None) not in _registered:
        return
    import httpx

    from .clock import check_clock

    settings = get_settings()
    if settings.api_key is not None:
        with httpx.Client(timeout=min(5.0, settings.connect_timeout + settings.read_timeout)) as http:
            check_clock(settings, http)


def _metrics_process_exited(pid: int | None = None, **_: object) -> None:
    import os

    from . import metrics

    metrics.process_exited(pid or os.getpid())

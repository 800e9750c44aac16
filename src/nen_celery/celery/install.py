"""nen-celery inside a Celery app: the user's own (``init_celery``) or the ready-made one.

A guest in the user's app: ``init_celery(app)`` registers nen's tasks with their own options
(late acks, reject on worker lost, JSON), a worker step that makes a plain ``celery worker``
(no ``-Q``) consume nen's queues and checks the set-up at start, and the reconcile entry in
``beat_schedule``. It changes none of the app's global settings and acts on no other task;
a setting that breaks a guarantee is refused with ``ConfigurationError`` naming it.

Which app the process publishes through is ``nen_celery.runtime.app``'s.
"""

from __future__ import annotations

import logging
import weakref
from datetime import timedelta
from typing import Any

from celery import Celery, bootsteps, schedules
from celery.signals import beat_init, worker_process_shutdown, worker_ready

from nen_celery.celery.callback_task import NenTask
from nen_celery.errors import ConfigurationError
from nen_celery.runtime import app as app_state
from nen_celery.runtime.app import (
    KOMBU_VISIBILITY_DEFAULT,
    RECONCILE_ENTRY,
    SUBMIT_QUEUE,
    TASK_QUEUES,
    is_amqp_url,
    is_redis_url,
)
from nen_celery.settings import Settings, get_settings

log = logging.getLogger("nen_celery.celery")

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
    if not isinstance(app, Celery):
        raise TypeError(f"init_celery expects a celery.Celery app, got {type(app).__name__}")
    from nen_celery.checks.django_settings import register_django_check

    register_django_check()  # under manage.py: NEN_CELERY without nen's AppConfig fails `check`
    with app_state.LOCK:
        installed = app_state.installed()
        if installed is app:
            return app
        if installed is not None and installed.main != app.main:
            raise ConfigurationError(
                f"init_celery was already called with the Celery app {installed.main!r} in this "
                f"process; it cannot also install into {app.main!r} (one app per process)"
            )
        problems = config_problems(app, get_settings())
        if problems:
            raise ConfigurationError("; ".join(problems))
        register(app)
        if installed is not None:
            log.info("nen-celery now publishes through a new Celery app %r (rebuilt)", app.main)
        app_state.set_installed(app)
    return app


def set_ready_made(app: Celery) -> None:
    """Called once by ``nen_celery.worker``: the fallback app of processes without init_celery."""
    app_state.set_ready_made(app, register)


def register(app: Celery) -> None:
    """nen's tasks, worker step and beat entry on ``app`` (once per app)."""
    with app_state.LOCK:
        if app in _registered:
            return
        from nen_celery.celery.tasks import DEFINITIONS

        for fun, options in DEFINITIONS:
            app.task(
                fun,
                base=NenTask,
                bind=True,
                shared=False,  # Celery's default would put them on every app the process makes
                acks_late=True,
                reject_on_worker_lost=True,
                serializer="json",
                # a guest's tasks leave nothing in the user's result backend: every outcome is in
                # the run store (RunHandle.wait and get_run read it), nobody reads these results
                ignore_result=True,
                **options,
            )
        app.steps["worker"].add(NenWorkerStep)
        _add_beat_entry(app)
        beat_init.connect(_check_beat_entry, weak=False, dispatch_uid="nen_celery.check_beat_entry")
        _registered.add(app)


class ReconcileEvery(schedules.schedule):
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
        problems.append(f"accept_content {sorted(accept)} must include 'json': nen's task messages are JSON")
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


class NenWorkerStep(bootsteps.Step):
    """At a worker's start, before it consumes: refuse a set-up that breaks a guarantee (the
    worker exits naming it), consume nen's queues on a plain worker, report the configuration."""

    name = "nen_celery.worker_step"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        app = worker.app
        settings = get_settings()  # invalid settings stop the worker here, named
        problems = [] if app is app_state.ready_made() else config_problems(app, settings)
        consume_nen_queues(app)
        problems += fatal_problems(app, settings)
        if problems:
            raise ConfigurationError("; ".join(problems))
        if is_amqp_url(app.conf.broker_write_url or app.conf.broker_url):
            from nen_celery.checks.amqp_declarations import declaration_conflicts

            # the ready-made app's queue names: Celery's default one too, which it declares alike
            conflict = declaration_conflicts(app, {*TASK_QUEUES.values(), "celery"})
            if conflict:
                raise ConfigurationError(conflict)
        _report_configuration(settings, app)
        if settings.patch_kombu_redis:
            from nen_celery.fastpath import kombu_redis as redis_transport

            redis_transport.install()
        worker_ready.connect(_check_clock, weak=False, dispatch_uid="nen_celery.check_clock")
        worker_process_shutdown.connect(
            _process_exited, weak=False, dispatch_uid="nen_celery.metrics_exit"
        )


def fatal_problems(app: Celery, settings: Settings) -> list[str]:
    """What would make every run this worker handles fail, so it must not start: Django's
    ``NEN_CELERY`` ignored (nen's AppConfig not installed: every process would use the defaults),
    and, on a worker that consumes ``nen.submit``, no ``NEN_API_KEY`` (every POST /runs would be
    refused). Invalid settings (an empty secret among them) and an evicting run store are refused
    elsewhere at start; the rest of ``checks.config`` is logged (runs still end, if slower)."""
    from nen_celery.checks.django_settings import django_settings_problem

    problems = [message for message in [django_settings_problem()] if message]
    if settings.api_key is None and SUBMIT_QUEUE in app.amqp.queues.consume_from:
        problems.append(
            f"NEN_API_KEY is not set and this worker consumes {SUBMIT_QUEUE!r}: every POST /runs "
            "would be refused by Nen (set NEN_API_KEY, or leave that queue to workers that have it)"
        )
    return problems


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
    from nen_celery.checks.config import ERROR, config_problems, kombu_problems
    from nen_celery.checks.durability import check_durability
    from nen_celery.fastpath.gate import installed_version

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

    from nen_celery.checks.clock import check_clock

    settings = get_settings()
    if settings.api_key is not None:
        with httpx.Client(timeout=min(5.0, settings.connect_timeout + settings.read_timeout)) as http:
            check_clock(settings, http)


def _process_exited(pid: int | None = None, **_: object) -> None:
    import os

    from nen_celery import observe

    observe.process_exited(pid or os.getpid())

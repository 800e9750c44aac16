"""init_celery: what it adds to the user's app, what it leaves alone, and the set-ups it refuses.

In-process and without workers: the worker-side behaviour (a plain worker consuming nen's
queues, beat, callbacks on the user's worker) is in tests/test_user_app.py with real processes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import nen_celery
from nen_celery.celery.callback_task import NenTask
from nen_celery.celery.install import consume_nen_queues, register
from nen_celery.errors import ConfigurationError
from nen_celery.runtime import app as app_state
from nen_celery.runtime.app import INGEST_QUEUE, SUBMIT_QUEUE, with_default_queue
from tests.helpers import ROOT

NEN_TASKS = {
    "nen_celery.submit_run",
    "nen_celery.ingest_webhook",
    "nen_celery.complete_run",
    "nen_celery.poll_run",
    "nen_celery.lookup_run",
    "nen_celery.reconcile_runs",
}


@pytest.fixture
def fresh() -> Iterator[None]:
    """init_celery's one-app-per-process slot, emptied before and after."""
    app_state.set_installed(None)
    yield
    app_state.set_installed(None)


def user_app(**conf: Any) -> Celery:
    app = Celery("proj", set_as_current=False)
    app.conf.update({"broker_url": "amqp://guest:guest@127.0.0.1:5672//", **conf})
    return app


def test_registers_nen_tasks_with_their_own_options_and_nothing_global(fresh: None) -> None:
    app = user_app(task_acks_late=False, beat_schedule={"mine": {"task": "proj.x", "schedule": 60}})

    @app.task(name="proj.send_email", shared=False)  # on this app only, as the test's own
    def send_email(to: str) -> None:  # pragma: no cover - never run
        pass

    before = {key: app.conf[key] for key in app.conf if key != "beat_schedule"}
    assert nen_celery.init_celery(app) is app
    assert nen_celery.init_celery(app) is app  # idempotent for the same app
    assert set(app.tasks) >= NEN_TASKS
    for name in NEN_TASKS:
        task = app.tasks[name]
        assert isinstance(task, NenTask) and task.acks_late and task.reject_on_worker_lost
        assert task.serializer == "json"
    user_task = app.tasks["proj.send_email"]
    assert not isinstance(user_task, NenTask) and not user_task.acks_late  # the user's, untouched
    # the user's settings as they were; only the beat entry added beside theirs
    assert {key: app.conf[key] for key in app.conf if key != "beat_schedule"} == before
    assert set(app.conf.beat_schedule) == {"mine", "nen-reconcile"}
    assert app.conf.beat_schedule["nen-reconcile"]["task"] == "nen_celery.reconcile_runs"
    assert app_state.current() is app


def test_a_beat_entry_of_the_users_own_is_kept(fresh: None) -> None:
    entry = {"task": "nen_celery.reconcile_runs", "schedule": 30.0}
    app = user_app(beat_schedule={"nen-reconcile": entry})
    nen_celery.init_celery(app)
    assert app.conf.beat_schedule == {"nen-reconcile": entry}


def test_the_beat_entry_waits_for_a_lazily_configured_app(fresh: None) -> None:
    app = Celery("proj", set_as_current=False)
    app.config_from_object({"broker_url": "amqp://localhost//", "beat_schedule": {"a": {}}})
    assert not app.configured
    nen_celery.init_celery(app)  # reads the configuration: it is loaded now, from the object
    assert set(app.conf.beat_schedule) == {"a", "nen-reconcile"}


def test_nen_tasks_go_to_nen_queues_unless_the_app_routes_them(fresh: None) -> None:
    app = user_app(task_routes={"nen_celery.ingest_webhook": {"queue": "theirs"}})
    nen_celery.init_celery(app)
    submit, ingest = app.tasks["nen_celery.submit_run"], app.tasks["nen_celery.ingest_webhook"]
    assert with_default_queue(submit, (), {}, {}) == {"queue": SUBMIT_QUEUE}
    assert with_default_queue(ingest, (), {}, {}) == {}  # the user's route wins
    assert with_default_queue(submit, (), {}, {"queue": "x"}) == {"queue": "x"}  # the caller's too
    assert app.amqp.router.route(with_default_queue(ingest, (), {}, {}), ingest.name)["queue"].name == (
        "theirs"
    )


def test_a_plain_worker_consumes_nen_queues_a_selective_one_does_not(fresh: None) -> None:
    theirs = {"queue": "theirs"}
    plain = user_app(task_routes={"nen_celery.ingest_webhook": theirs, "nen_celery.reconcile_runs": theirs})
    register(plain)
    added = consume_nen_queues(plain)
    assert set(added) == {"nen.submit", "nen.complete"}  # nen.ingest: the user routed its tasks away
    assert {"celery", "nen.submit", "nen.complete"} <= set(plain.amqp.queues.consume_from)
    assert INGEST_QUEUE not in plain.amqp.queues.consume_from

    selective = user_app()
    register(selective)
    selective.amqp.queues.select(["celery"])  # what `celery worker -Q celery` does
    assert consume_nen_queues(selective) == []
    assert set(selective.amqp.queues.consume_from) == {"celery"}


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"accept_content": ["pickle"]}, "accept_content"),
        ({"accept_content": ["json", "pickle"]}, "pickle"),
        ({"accept_content": ["application/x-python-serialize", "json"]}, "pickle"),
        (
            {
                "broker_url": "redis://127.0.0.1:6379/0",
                "broker_transport_options": {"visibility_timeout": 20},
            },
            "visibility_timeout",
        ),
    ],
)
def test_a_setting_that_breaks_a_guarantee_is_refused_naming_it(
    fresh: None, conf: dict[str, Any], named: str
) -> None:
    app = user_app(**conf)
    with pytest.raises(ConfigurationError, match=named):
        nen_celery.init_celery(app)
    assert "nen_celery.submit_run" not in app.tasks  # refused: nothing installed
    assert "nen-reconcile" not in (app.conf.beat_schedule or {})
    assert app_state.installed() is None


def test_the_visibility_timeout_error_says_the_value_needed(fresh: None) -> None:
    app = user_app(broker_url="redis://127.0.0.1:6379/0", broker_transport_options={"visibility_timeout": 20})
    with pytest.raises(ConfigurationError, match=r"is 20s; it must exceed \d+s"):
        nen_celery.init_celery(app)
    # kombu's default (3600 s, no option set) covers the default settings
    nen_celery.init_celery(user_app(broker_url="redis://127.0.0.1:6379/0"))


def test_an_app_rebuilt_under_the_same_name_takes_over(fresh: None) -> None:
    """An app factory (Flask's recipe) called once per test builds a new Celery app each time."""
    first, again = user_app(), user_app()
    nen_celery.init_celery(first)
    assert nen_celery.init_celery(again) is again
    assert app_state.current() is again and set(again.tasks) >= NEN_TASKS


def test_the_sweep_comes_back_when_the_configuration_is_loaded_again(fresh: None) -> None:
    app = user_app()
    nen_celery.init_celery(app)
    app.config_from_object({"broker_url": "memory://", "beat_schedule": {"mine": {"task": "x"}}})
    assert set(app.conf.beat_schedule) == {"mine", "nen-reconcile"}


def test_the_sweep_interval_is_the_setting_when_beat_reads_it(fresh: None) -> None:
    """Django installs NEN_CELERY after proj/celery.py ran init_celery: the interval is read late."""
    from tests.conftest import env

    app = user_app()
    nen_celery.init_celery(app)
    every = app.conf.beat_schedule["nen-reconcile"]["schedule"]
    with env(NEN_RECONCILE_INTERVAL="7"):
        assert every.run_every.total_seconds() == 7
    with env(NEN_RECONCILE_INTERVAL="3"):
        assert every.run_every.total_seconds() == 3


def test_a_second_app_and_a_non_celery_object_are_refused(fresh: None) -> None:
    first = user_app()
    nen_celery.init_celery(first)
    with pytest.raises(ConfigurationError, match=r"already called with the Celery app 'proj'.*'other'"):
        nen_celery.init_celery(Celery("other", set_as_current=False))
    with pytest.raises(TypeError, match=r"expects a celery\.Celery app, got dict"):
        nen_celery.init_celery({"broker_url": "redis://"})  # type: ignore[arg-type]
    assert app_state.current() is first


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_importing_the_package_creates_no_celery_app_and_patches_nothing() -> None:
    """A fresh interpreter: the user's app stays current, their shared_task stays on it."""
    out = run_python(
        """
        import kombu.transport.redis as kr, httpx, logging
        from celery import Celery, shared_task, current_app
        from celery._state import _get_active_apps
        before = (kr.Channel.conn_or_acquire, kr.MultiChannelPoller.get, kr.QoS.ack,
                  httpx.Client.send, httpx.HTTPTransport.handle_request, logging.getLogRecordFactory())
        proj = Celery("proj", broker="amqp://guest:guest@127.0.0.1:5672//")

        @shared_task(name="proj.send_email")
        def send_email(to):
            pass

        import nen_celery, nen_celery.celery.tasks, nen_celery.lifecycle.api
        import nen_celery.nen.client, nen_celery.store.runs
        import nen_celery.web.receiver
        assert [a.main for a in _get_active_apps()] == ["proj"], [a.main for a in _get_active_apps()]
        nen_celery.init_celery(proj)
        after = (kr.Channel.conn_or_acquire, kr.MultiChannelPoller.get, kr.QoS.ack,
                 httpx.Client.send, httpx.HTTPTransport.handle_request, logging.getLogRecordFactory())
        assert before == after
        assert current_app.main == "proj" and send_email.app.main == "proj"
        assert send_email.app.conf.broker_url.startswith("amqp://")
        from nen_celery.celery.callback_task import CallbackTask, NenTask
        assert not send_email.acks_late
        assert not isinstance(send_email._get_current_object(), (CallbackTask, NenTask))
        # (reading current_app makes Celery create its fallback "default" app: Celery's own doing)
        assert "nen_celery" not in [a.main for a in _get_active_apps()]
        print("ok")
        """
    )
    assert out == "ok"


def test_without_init_celery_the_ready_made_app_is_used_and_current_app_is_untouched() -> None:
    out = run_python(
        """
        import logging
        from celery import Celery, current_app
        proj = Celery("proj", broker="amqp://guest:guest@127.0.0.1:5672//")
        from nen_celery.runtime import app as app_state
        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())
        logging.getLogger("nen_celery.celery").addHandler(Keep())
        app = app_state.current()
        assert app.main == "nen_celery", app.main
        assert current_app.main == "proj", current_app.main
        assert any("init_celery" in m and "'proj'" in m for m in seen), seen
        print("ok")
        """
    )
    assert out == "ok"


def test_installing_the_package_chooses_no_event_loop_or_http_parser_for_the_users_server() -> None:
    """uvicorn picks uvloop and httptools whenever they are installed: they are the [fast]
    extra, never a core dependency."""
    from importlib.metadata import requires

    core = [r.split(";")[0] for r in requires("nen-celery") or [] if "extra ==" not in r]
    names = {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower() for r in core}
    assert "celery" in names and "httpx" in names
    assert not names & {"uvloop", "httptools"}


def test_the_web_process_is_unchanged_by_init_celery_the_integrations_and_a_start_run() -> None:
    """kombu, httpx and logging objects are the same before and after: import, init_celery, the
    Flask and Django integrations, the ASGI receiver and a real start_run (Redis run state, the
    user's Redis broker)."""
    from tests.conftest import TEST_REDIS_URL

    base, _ = TEST_REDIS_URL.rsplit("/", 1)
    broker = f"{base}/9"
    import redis

    redis.Redis.from_url(broker).flushdb()
    try:
        out = run_python(
            f"""
            import gc, logging, sys
            import kombu.transport.redis as kr, kombu.messaging, httpx
            from celery import Celery, shared_task, current_app
            logging.basicConfig(level=logging.INFO)

            def objects():
                return {{
                    "kombu": (kr.Channel.conn_or_acquire, kr.MultiChannelPoller.get, kr.QoS.ack,
                              kr.QoS.reject, kombu.messaging.Producer.publish),
                    "httpx": (httpx.Client.send, httpx.AsyncClient.send, httpx.HTTPTransport.handle_request,
                              httpx.AsyncHTTPTransport.handle_async_request),
                    "logging": (logging.getLogRecordFactory(), tuple(logging.root.handlers),
                                tuple(tuple(h.filters) for h in logging.root.handlers),
                                tuple(h.formatter for h in logging.root.handlers), logging.root.level),
                    "gc": (gc.isenabled(), gc.get_freeze_count()),
                }}

            proj = Celery("proj", broker={broker!r})

            @shared_task(name="proj.done")
            def done(run):
                pass

            before = objects()
            import nen_celery
            nen_celery.init_celery(proj)
            import flask
            from nen_celery.web.flask import NenCelery
            NenCelery(flask.Flask("guest"))
            import django
            from django.conf import settings
            settings.configure(INSTALLED_APPS=["nen_celery.web.django.NenCeleryConfig"], NEN_CELERY={{}})
            django.setup()
            from nen_celery.web.asgi import create_app
            from starlette.testclient import TestClient
            with TestClient(create_app()) as client:
                assert client.get("/healthz").status_code == 200
            handle = nen_celery.start_run("12345678-1234-1234-1234-123456789abc", {{"A": "1"}},
                                          on_complete=done.s())
            after = objects()
            for part in before:
                assert before[part] == after[part], part
            assert current_app.main == "proj"
            print(handle.run_id)
            """
        )
        assert redis.Redis.from_url(broker).llen("nen.submit") == 1  # the user's broker has it
        from nen_celery.runtime.context import get_context

        get_context().store.delete(out.splitlines()[-1])
    finally:
        redis.Redis.from_url(broker).flushdb()

"""examples/flask_app as a Flask user runs it: the app factory builds its Celery app with Flask's
own recipe (``celery_init_app``, ``FlaskTask``) and calls ``nen_celery.init_celery`` on it;
`flask --app flask_example run` serves the app and Nen's webhooks; a plain
`celery -A make_celery worker` runs everything, on the app's Redis broker.

The app's broker is the suite's Redis DB with a ``global_keyprefix`` of its own (a transport
option of the user's), so its queues are not the suite's. The order view is driven by Flask's
test client in a process of the app. nen's own broker (NEN_BROKER_URL) is a closed port in every
process: the run completes only if start_run, the webhook route and the worker used the app's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from nen_celery.simulator import SimulatorServer
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.example_support import (
    BIN,
    EXAMPLES,
    NEN_QUEUES,
    ExampleProcs,
    example_env,
    namespace,
    redis_messages,
    running,
    sim_run,
    tasks_received,
    unique,
    worker_idle,
    worker_queues,
)
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.integration
__all__ = ["namespace"]  # the fixture, imported for pytest

FOLDER = EXAMPLES / "flask_app"
PYTHON = str(BIN / "python")

# In a process of the app (as a WSGI server would build it): order through the view.
ORDER = """
from flask_example import create_app
from flask_example.tasks import send_receipt

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
client = flask_app.test_client()
ok = client.post("/orders", data={"name": "Jane Doe", "dob": "1990-01-15", "email": "jane@example.com"})
bad = client.post("/orders", data={"name": "Joe", "dob": "15/01/1990", "email": "joe@example.com"})
_result({
    "ok": [ok.status_code, ok.get_json()],
    "bad": [bad.status_code, bad.get_json()],
    "send_receipt_app_is_the_apps": send_receipt.app is celery_app,
    "broker": celery_app.conf.broker_url,
    "transport_options": celery_app.conf.broker_transport_options,
    "beat_schedule": {k: v["task"] for k, v in celery_app.conf.beat_schedule.items()},
    **_diagnose(),
})
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config(webhook_duplicates=1)) as server:  # every webhook twice
        yield server


@pytest.fixture
def keyprefix(namespace: Any) -> str:
    """The app's keys (broker queues, its orders) and nen's run state under one namespace."""
    return str(namespace("flaskex")) + ":"


def app_env(sim: SimulatorServer, keyprefix: str, port: int) -> dict[str, str]:
    """The app's configuration, as FLASK_* variables (``app.config.from_prefixed_env()``)."""
    return example_env(
        FOLDER,
        sim.url,
        keyprefix + "nen",
        FLASK_CELERY__broker_url=TEST_REDIS_URL,
        FLASK_CELERY__broker_transport_options=json.dumps({"global_keyprefix": keyprefix}),
        FLASK_NEN_WEBHOOK_URL=f"http://127.0.0.1:{port}/nen/webhooks/nen",  # a NEN_* key of app.config
        FLASK_ORDERS_REDIS_URL=TEST_REDIS_URL,
        FLASK_ORDERS_KEY_PREFIX=keyprefix + "shop:",
    )


def test_flask_factory_runs_nen_on_its_own_celery_app(
    tmp_path: Path, sim: SimulatorServer, keyprefix: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    env = app_env(sim, keyprefix, port)
    procs = ExampleProcs(tmp_path, FOLDER, env)

    def order(order_id: int) -> dict[str, str]:
        return redis_client.hgetall(f"{keyprefix}shop:order:{order_id}")

    with running(procs):
        procs.spawn("web", [str(BIN / "flask"), "--app", "flask_example", "run", "--port", str(port)])
        web = procs.script(ORDER)

        assert web["ok"][0] == 201, web
        order_id, run_id = web["ok"][1]["order"], web["ok"][1]["run_id"]
        assert (web["bad"][0], list(web["bad"][1]["fields"])) == (400, ["params.DATE_OF_BIRTH"])
        assert web["current_app"] == web["apps"][0] == "flask_example" and len(web["apps"]) == 1
        assert web["ready_made_imported"] is False
        assert web["send_receipt_app_is_the_apps"] is True
        assert web["broker"] == TEST_REDIS_URL
        assert web["transport_options"] == {"global_keyprefix": keyprefix}  # the user's, untouched
        assert web["beat_schedule"] == {"nen-reconcile": "nen_celery.reconcile_runs"}
        # both messages wait in the app's own queues (no worker yet); the refused order sent none
        assert [h["task"] for h in redis_messages(redis_client, keyprefix + "nen.submit")] == [
            "nen_celery.submit_run"
        ]
        assert [h["task"] for h in redis_messages(redis_client, keyprefix + "celery")] == [
            "flask_example.tasks.send_receipt"
        ]
        assert order(order_id)["run_id"] == run_id

        procs.wait_http("web", f"http://127.0.0.1:{port}/nen/healthz")
        procs.worker("make_celery", f"{unique('flaskex')}@%h")  # `celery -A make_celery worker`: no -Q
        assert worker_queues(procs.log("worker")) >= {"celery", *NEN_QUEUES}

        wait_for(lambda: order(order_id).get("status") == "success", 30, "the order's run to succeed")
        wait_for(
            lambda: (
                (found := sim_run(sim.stats(), run_id)) and found[1] == ["processing"] * 2 + ["success"] * 2
            ),
            20,
            "every webhook delivered",
        )
        queues = [keyprefix + q for q in ("celery", *NEN_QUEUES)]
        wait_for(
            lambda: (
                sum(redis_client.llen(q) for q in queues) == 0
                and redis_client.hlen(keyprefix + "unacked") == 0
                and worker_idle(procs.log("worker"))
            ),
            20,
            "the worker to finish everything it received",
        )
        assert order(order_id)["callbacks"] == "1"  # order_done ran once, duplicates or not
        received = Counter(tasks_received(procs.log("worker")))
        assert received["flask_example.tasks.order_done"] == 1
        assert received["flask_example.tasks.order_failed"] == 0
        # the unrelated task from the web process ran on the same worker, inside the app context
        assert received["flask_example.tasks.send_receipt"] == 1
        outbox = [json.loads(m) for m in redis_client.lrange(keyprefix + "shop:outbox", 0, -1)]
        assert outbox == [{"to": "jane@example.com", "subject": f"Order {order_id} received"}]


TWICE = """
from flask_example import create_app

first = create_app()
second = create_app()  # a test suite's app fixture: one app per test, one process
form = {"name": "Jane", "dob": "1990-01-15", "email": "j@example.com"}
ok = second.test_client().post("/orders", data=form)
_result({"ok": [ok.status_code, ok.get_json()], **_diagnose()})
"""


def test_the_factory_can_build_the_app_twice_in_one_process(
    tmp_path: Path, sim: SimulatorServer, keyprefix: str, redis_client: redis.Redis
) -> None:
    """Flask's testing guide builds the app in a fixture, once per test, in one process: the
    rebuilt Celery app (same name) takes over, and runs publish through the newest one."""
    procs = ExampleProcs(tmp_path, FOLDER, app_env(sim, keyprefix, free_port()))
    with running(procs):
        web = procs.script(TWICE)
    assert web["ok"][0] == 201, web
    assert [h["task"] for h in redis_messages(redis_client, keyprefix + "nen.submit")] == [
        "nen_celery.submit_run"
    ]

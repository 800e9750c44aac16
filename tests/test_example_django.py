"""examples/django_app as a Django user runs it: `proj/celery.py` builds the project's Celery app
and calls ``nen_celery.init_celery(app)``; `python manage.py runserver` serves the shop and Nen's
webhooks; a plain `celery -A proj worker` and `celery -A proj beat` on the project's RabbitMQ.

The order view is driven by Django's test client in a `manage.py shell -c` process (a web
process of the project). nen's own broker (NEN_BROKER_URL) is a closed port in every process:
the run completes only if start_run, the webhook view and the worker all used the project's app.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nen_celery.simulator import SimulatorServer
from tests.cluster import amqp_ready_messages, rabbitmq_unavailable, rabbitmq_vhost
from tests.conftest import sim_config
from tests.example_support import (
    BIN,
    EXAMPLES,
    NEN_QUEUES,
    ExampleProcs,
    amqp_messages,
    example_env,
    namespace,
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

FOLDER = EXAMPLES / "django_app"
PYTHON = str(BIN / "python")
SHELL = [PYTHON, "manage.py", "shell", "-c"]
NEN_TASKS = tuple(
    f"nen_celery.{name}"
    for name in ("submit_run", "ingest_webhook", "complete_run", "poll_run", "lookup_run", "reconcile_runs")
)

# In a web process of the project: order through the view, then what the process's Celery is.
ORDER = """
from django.test import Client
from proj.celery import app
from shop.tasks import send_email

client = Client()
ok = client.post("/orders/", {"name": "Jane Doe", "dob": "1990-01-15", "email": "jane@example.com"})
bad = client.post("/orders/", {"name": "", "dob": "15/01/1990", "email": "joe@example.com"})
_result({
    "ok": [ok.status_code, ok.json()],
    "bad": [bad.status_code, bad.json()],
    "send_email_app": send_email.app.main,
    "send_email_broker": send_email.app.conf.broker_url,
    "app_is_current": _celery.current_app._get_current_object() is app,
    "beat_schedule": {k: v["task"] for k, v in app.conf.beat_schedule.items()},
    "nen_tasks": sorted(t for t in app.tasks if t.startswith("nen_celery.")),
    **_diagnose(),
})
"""

RUN = """
import nen_celery, sys
_result(nen_celery.get_run(sys.argv[-1]).to_dict())
"""


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    reason = rabbitmq_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with rabbitmq_vhost() as url:  # the project's own broker, private to this module
        yield url


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config(webhook_duplicates=1)) as server:  # every webhook twice
        yield server


def order_row(db: Path, order_id: int) -> dict[str, object]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM shop_order WHERE id = ?", (order_id,)).fetchone()
    return dict(row) if row else {}


def emails(folder: Path) -> list[str]:
    return sorted(p.read_text() for p in folder.glob("*.log")) if folder.exists() else []


def test_django_project_runs_nen_on_its_own_celery_app(
    tmp_path: Path, sim: SimulatorServer, amqp_url: str, namespace: Any
) -> None:
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    db, mail = tmp_path / "db.sqlite3", tmp_path / "mail"
    env = example_env(
        FOLDER,
        sim.url,
        namespace("djex"),  # nen's run state: removed after
        DJANGO_SETTINGS_MODULE="proj.settings",
        CELERY_BROKER_URL=amqp_url,
        SITE_URL=site,  # settings.NEN_CELERY derives the webhook URL from it
        DJANGO_DB_PATH=str(db),
        DJANGO_EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        DJANGO_EMAIL_FILE_PATH=str(mail),
    )
    procs = ExampleProcs(tmp_path, FOLDER, env)
    with running(procs):
        procs.run([PYTHON, "manage.py", "migrate", "-v", "0"])
        procs.spawn("web", [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"])
        web = procs.script(ORDER, SHELL)

        # the web process: the project's app is the one Celery and nen use, and the only one
        assert web["ok"][0] == 201, web
        order_id, run_id = web["ok"][1]["order"], web["ok"][1]["run_id"]
        assert web["bad"][0] == 400
        assert set(web["bad"][1]["fields"]) == {"params.PATIENT_NAME", "params.DATE_OF_BIRTH"}
        assert (web["current_app"], web["apps"], web["app_is_current"]) == ("proj", ["proj"], True)
        assert web["ready_made_imported"] is False
        assert (web["send_email_app"], web["send_email_broker"]) == ("proj", amqp_url)
        assert web["beat_schedule"] == {
            "purge-abandoned-orders": "shop.tasks.purge_abandoned_orders",  # the project's own
            "nen-reconcile": "nen_celery.reconcile_runs",
        }
        assert web["nen_tasks"] == sorted(NEN_TASKS)
        # both messages wait in the project's RabbitMQ (no worker yet); the refused order sent none
        assert [h["task"] for h in amqp_messages(amqp_url, "nen.submit")] == ["nen_celery.submit_run"]
        assert [h["task"] for h in amqp_messages(amqp_url, "celery")] == ["shop.tasks.send_email"]
        assert order_row(db, order_id)["run_id"] == run_id

        procs.wait_http("web", site + "/nen/healthz")
        procs.worker("proj", f"{unique('djex')}@%h")  # `celery -A proj worker`: no -Q
        assert worker_queues(procs.log("worker")) >= {"celery", *NEN_QUEUES}

        wait_for(lambda: order_row(db, order_id)["status"] == "success", 30, "the order's run to succeed")
        # Nen's webhooks (each sent twice) reached the project's view over HTTP
        wait_for(
            lambda: (
                (found := sim_run(sim.stats(), run_id)) and found[1] == ["processing"] * 2 + ["success"] * 2
            ),
            20,
            "every webhook delivered",
        )
        wait_for(lambda: len(emails(mail)) == 2, 20, "the two emails")
        wait_for(
            lambda: amqp_ready_messages(amqp_url) == 0 and worker_idle(procs.log("worker")),
            20,
            "the worker to finish everything it received",
        )
        assert order_row(db, order_id)["callbacks"] == 1  # order_done ran once, duplicates or not
        received = Counter(tasks_received(procs.log("worker")))
        assert received["shop.tasks.order_done"] == 1 and received["shop.tasks.order_failed"] == 0
        # the unrelated task, from the web process and from the callback: on the same worker
        assert received["shop.tasks.send_email"] == 2
        sent = "".join(emails(mail))
        assert f"Subject: Order {order_id} received" in sent
        assert f"Subject: Order {order_id} is confirmed" in sent

        run = procs.script(RUN, args=[run_id])  # any process of the project
        assert run["status"] == "success" and run["completion"] == "sent"
        assert run["history"][-1]["source"] == "webhook"  # ended by Nen's webhook, not a poll

        # `celery -A proj beat`: nen's sweep from the project's schedule, run by the same worker
        procs.celery("beat", "proj", "beat", "-l", "INFO", "-s", str(tmp_path / "schedule"))
        procs.wait_log("beat", "Sending due task nen-reconcile (nen_celery.reconcile_runs)", 20)
        wait_for(
            lambda: "nen_celery.reconcile_runs" in tasks_received(procs.log("worker")), 20, "a sweep run"
        )

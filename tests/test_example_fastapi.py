"""examples/fastapi_app as a FastAPI user runs it: `worker.py` builds the API's Celery app and
calls ``nen_celery.init_celery(celery)``; `uvicorn main:app` serves the API with nen's router
mounted; a plain `celery -A worker worker` on the API's RabbitMQ runs everything.

The API is first built in a script (FastAPI's TestClient): the router is there, and a report
started through it leaves its messages in the API's own broker. nen's own broker
(NEN_BROKER_URL) is a closed port in every process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from nen_celery.simulator import SimulatorServer
from tests.cluster import amqp_ready_messages, rabbitmq_unavailable, rabbitmq_vhost
from tests.conftest import TEST_REDIS_URL, sim_config
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

FOLDER = EXAMPLES / "fastapi_app"

BUILD = """
from fastapi.testclient import TestClient
from main import app
from worker import celery, render_pdf

with TestClient(app) as client:
    health = client.get("/nen/healthz")
    unsigned = client.post("/nen/webhooks/nen", json={"message_id": "m", "status": "success"})
    ok = client.post("/reports", json={"name": "Jane Doe", "dob": "1990-01-15"})
    bad = client.post("/reports", json={"name": "", "dob": "1990-01-15"})
    shown = client.get(ok.json()["url"])
_result({
    "health": [health.status_code, health.json()],
    "unsigned": [unsigned.status_code, unsigned.json()["error"]],
    "ok": [ok.status_code, ok.json()],
    "bad": [bad.status_code, bad.json()],
    "shown": shown.json(),
    "render_pdf_app_is_the_apis": render_pdf.app is celery,
    "broker": celery.conf.broker_url,
    **_diagnose(),
})
"""


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    reason = rabbitmq_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with rabbitmq_vhost() as url:  # the API's own broker, private to this module
        yield url


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config(webhook_duplicates=1)) as server:  # every webhook twice
        yield server


def test_fastapi_app_runs_nen_on_its_own_celery_app(
    tmp_path: Path, sim: SimulatorServer, amqp_url: str, namespace: Any, redis_client: redis.Redis
) -> None:
    reports_prefix = namespace("fastapiex") + ":"  # the API's data and nen's run state: removed after
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = example_env(
        FOLDER,
        sim.url,
        reports_prefix + "nen",
        CELERY_BROKER_URL=amqp_url,
        NEN_WEBHOOK_URL=base + "/nen/webhooks/nen",
        REPORTS_REDIS_URL=TEST_REDIS_URL,
        REPORTS_KEY_PREFIX=reports_prefix,
    )
    procs = ExampleProcs(tmp_path, FOLDER, env)
    with running(procs):
        procs.spawn("web", [str(BIN / "uvicorn"), "main:app", "--port", str(port), "--log-level", "info"])
        api = procs.script(BUILD)

        # nen's router is mounted under /nen
        assert api["health"] == [200, {"status": "ok"}]
        assert api["unsigned"] == [401, "invalid_signature"]
        assert api["ok"][0] == 202, api
        report_id, run_id = api["ok"][1]["report_id"], api["ok"][1]["run_id"]
        assert api["bad"][0] == 400 and list(api["bad"][1]["detail"]["fields"]) == ["params.PATIENT_NAME"]
        assert api["shown"]["run_status"] == "queued"
        assert (api["current_app"], api["apps"], api["ready_made_imported"]) == (
            "reports",
            ["reports"],
            False,
        )
        assert api["render_pdf_app_is_the_apis"] is True and api["broker"] == amqp_url
        # start_run published through the API's app: the message waits in its RabbitMQ (no worker yet)
        assert [h["task"] for h in amqp_messages(amqp_url, "nen.submit")] == ["nen_celery.submit_run"]
        assert [h["task"] for h in amqp_messages(amqp_url, "celery")] == ["reports.render_pdf"]

        # one run end to end: the webhooks come in through uvicorn, a plain worker runs it all
        procs.wait_http("web", base + "/nen/healthz")
        procs.worker("worker", f"{unique('fastapiex')}@%h")  # `celery -A worker worker`: no -Q
        assert worker_queues(procs.log("worker")) >= {"celery", *NEN_QUEUES}

        def report() -> dict[str, object]:
            return httpx.get(f"{base}/reports/{report_id}", timeout=5).json()

        wait_for(lambda: report()["status"] == "success", 30, "the report's run to succeed")
        wait_for(
            lambda: (
                (found := sim_run(sim.stats(), run_id)) and found[1] == ["processing"] * 2 + ["success"] * 2
            ),
            20,
            "every webhook delivered",
        )
        wait_for(
            lambda: amqp_ready_messages(amqp_url) == 0 and worker_idle(procs.log("worker")),
            20,
            "the worker to finish everything it received",
        )
        final = report()
        assert (final["run_status"], final["callbacks"]) == ("success", 1)  # report_finished ran once
        received = Counter(tasks_received(procs.log("worker")))
        assert received["reports.report_finished"] == 1 and received["reports.render_pdf"] == 1
        assert redis_client.hget(f"{reports_prefix}report:{report_id}", "pdf") == f"/files/{report_id}.pdf"

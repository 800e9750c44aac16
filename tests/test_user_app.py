"""nen-celery in the user's own Celery app (tests/userproj), with real processes: the user's
broker is RabbitMQ, the run state Redis; a plain `celery -A tests.userproj worker` (no -Q),
`celery -A tests.userproj beat` and a receiver built with create_app() in a process where
init_celery ran. The web side (start_run, the user's .delay()) runs in this test process.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu.transport.redis as kombu_redis
import pytest
import redis
from celery import Celery

from nen_celery import start_run
from nen_celery.lifecycle.completion import callback_task_id
from nen_celery.runtime import app as app_state
from nen_celery.simulator import SimulatorServer
from tests.cluster import healthy, rabbitmq_vhost_or_skip
from tests.conftest import COUNTER, TEST_REDIS_URL, env, sim_config
from tests.helpers import CHILD_PYTHONPATH, free_port, spawn_logged, stop_group, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
WF = "12345678-1234-1234-1234-123456789abc"
FAIL_WF = "87654321-4321-4321-4321-cba987654321"
NODE = f"proj1-{os.getpid()}@localhost"

RECEIVER = """
import sys, uvicorn
import tests.userproj  # proj/celery.py: the user's app, with init_celery
from nen_celery.web.asgi import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


amqp_url = pytest.fixture(scope="module", name="amqp_url")(rabbitmq_vhost_or_skip)


@pytest.fixture
def project(amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The user's processes around a simulator; this process is their web process."""
    from celery import _state

    record_prefix = f"proj{uuid.uuid4().hex[:8]}"
    nen_prefix = f"nenuser{uuid.uuid4().hex[:6]}"
    port = free_port()
    proj_env = {
        "PROJ_BROKER_URL": amqp_url,
        "PROJ_RECORD_URL": TEST_REDIS_URL,
        "PROJ_RECORD_PREFIX": record_prefix,
    }
    for name, value in proj_env.items():
        monkeypatch.setenv(name, value)
    previous_current = _state.get_current_app()
    procs = []
    with SimulatorServer(sim_config(fail_workflows={FAIL_WF})) as sim:
        nen_env = {
            "NEN_API_URL": sim.url,
            "NEN_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhooks/nen",
            "NEN_KEY_PREFIX": nen_prefix,
            "NEN_RECONCILE_INTERVAL": "0.5",
            "NEN_CALLBACK_TIMEOUT": "0.5",  # re-dispatched every 0.5 s before the fix
        }
        child_env = {**os.environ, **nen_env, "PYTHONPATH": CHILD_PYTHONPATH, "PROJ_COUNT_RUNS": "1"}
        try:
            procs.append(
                spawn_logged(
                    [sys.executable, "-c", RECEIVER, str(port)], tmp_path / "receiver.log", child_env
                )
            )
            procs.append(
                spawn_logged(
                    [
                        str(BIN / "celery"),
                        "-A",
                        "tests.userproj",
                        "worker",
                        "-P",
                        "threads",
                        "-c",
                        "4",
                        "-n",
                        NODE,
                        "--without-mingle",
                        "--without-gossip",
                        "-l",
                        "INFO",
                    ],
                    tmp_path / "worker.log",
                    child_env,
                )
            )
            procs.append(
                spawn_logged(
                    [
                        str(BIN / "celery"),
                        "-A",
                        "tests.userproj",
                        "beat",
                        "-s",
                        str(tmp_path / "schedule"),
                        "--max-interval",
                        "1",
                        "-l",
                        "INFO",
                    ],
                    tmp_path / "beat.log",
                    child_env,
                )
            )
            with env(**nen_env), COUNTER.elsewhere():
                import tests.userproj

                app: Celery = tests.userproj.app
                wait_for(lambda: healthy(f"http://127.0.0.1:{port}/healthz"), 30, "the receiver")
                wait_for(lambda: bool(app.control.ping(timeout=0.5)), 60, "the user's worker")
                yield {"app": app, "sim": sim, "tmp": tmp_path, "prefix": record_prefix}
        except BaseException:
            for name in ("receiver", "worker", "beat"):
                log = tmp_path / f"{name}.log"
                if log.exists():
                    print(f"--- {name} ---\n{log.read_text()[-6000:]}")
            raise
        finally:
            for proc in procs:
                stop_group(proc, timeout=20)
            app_state.set_installed(None)
            previous_current.set_current()


def test_nen_runs_in_the_users_app_and_leaves_everything_else_as_it_was(project: dict[str, Any]) -> None:
    from celery import current_app

    from tests.userproj.tasks import key, order_done, send_email

    app: Celery = project["app"]
    r = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    conn_or_acquire = kombu_redis.Channel.conn_or_acquire

    handles = [
        start_run(WF, {}, on_complete=order_done.s(order=f"o{i}"), on_failure=order_done.s(order=f"f{i}"))
        for i in range(5)
    ]
    failing = start_run(
        FAIL_WF, {}, on_complete=order_done.s(order="x"), on_failure=order_done.s(order="fail")
    )
    send_email.delay("someone@example.com")

    # the web process: the user's app is still the current one, their task still theirs
    assert app_state.current() is app
    assert current_app.main == "proj"
    assert send_email.app is app and not send_email.acks_late
    assert str(send_email.app.conf.broker_url).startswith("amqp://")
    assert kombu_redis.Channel.conn_or_acquire is conn_or_acquire

    def callbacks() -> list[dict[str, Any]]:
        return [json.loads(x) for x in r.lrange(key("callbacks"), 0, -1)]

    wait_for(lambda: len(callbacks()) >= 6 and r.llen(key("emails")) == 1, 60, "six callbacks and the email")
    # beat sweeps on: a callback that ran must never be dispatched again
    sweeps = int(r.hget(key("ran"), "nen_celery.reconcile_runs") or 0)
    wait_for(
        lambda: int(r.hget(key("ran"), "nen_celery.reconcile_runs") or 0) >= sweeps + 4,
        30,
        "four more reconcile sweeps on the user's worker",
    )

    got = callbacks()
    by_run = {c["run_id"]: c for c in got}
    assert len(got) == 6 and len(by_run) == 6  # one callback per run
    for i, handle in enumerate(handles):
        call = by_run[handle.run_id]
        assert (call["order"], call["status"]) == (f"o{i}", "success")
        assert call["task_id"] == callback_task_id(handle.run_id, "success")
    assert (by_run[failing.run_id]["order"], by_run[failing.run_id]["status"]) == ("fail", "failed")
    assert {c["hostname"] for c in got} == {NODE} and {c["app"] for c in got} == {"proj"}

    (email,) = [json.loads(x) for x in r.lrange(key("emails"), 0, -1)]
    assert email["app"] == email["current_app"] == "proj"
    assert email["broker"].startswith("127.0.0.1:5672/")  # the user's RabbitMQ vhost
    assert email["acks_late"] is False and email["queue"] == "proj" and email["hostname"] == NODE

    ran = {name: int(n) for name, n in r.hgetall(key("ran")).items()}
    # nen's tasks ran on the user's plain worker, from nen's queues on the user's broker
    assert ran["nen_celery.submit_run"] == 6
    # the receiver, in the user's process (it knows proj.order_done), applied every webhook and
    # published the callbacks through the user's app (checked above): no ingest_webhook ran
    assert "nen_celery.ingest_webhook" not in ran
    assert ran["proj.order_done"] == 6 and ran["proj.send_email"] == 1
    assert project["sim"].stats()["posts"] == 6
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in ("nen.submit", "nen.ingest", "nen.complete", "proj"):
            channel.queue_declare(queue=queue, passive=True)  # declared on the user's broker

"""Moving a deployment between the ready-made app and the user's own app on one RabbitMQ vhost.

The ready-made app declares nen's queues on topic exchanges as quorum queues; an app given to
init_celery declares them with its own defaults (direct exchanges, classic queues). RabbitMQ
refuses the second declaration; the worker must then stop with one line that says what differs
and how to move, and following that line must work, in both directions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import rabbitmq_queue_types, rabbitmq_vhost_or_skip
from tests.conftest import TEST_REDIS_URL
from tests.helpers import CHILD_PYTHONPATH, spawn_logged, stop_group, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NEN_QUEUES = ("nen.complete", "nen.ingest", "nen.submit")

amqp_url = pytest.fixture(scope="module", name="amqp_url")(rabbitmq_vhost_or_skip)


def _worker(app: str, amqp_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": CHILD_PYTHONPATH,
        "NEN_BROKER_URL": amqp_url,  # the ready-made app's broker
        "PROJ_BROKER_URL": amqp_url,  # the user's (tests/userproj)
        "NEN_REDIS_URL": TEST_REDIS_URL,
    }
    argv = [str(BIN / "celery"), "-A", app, "worker", "-P", "solo", "--without-mingle", "--without-gossip"]
    return spawn_logged([*argv, "-n", f"move-{os.getpid()}@%h", "-l", "INFO"], log, env)


def _starts(app: str, amqp_url: str, log: Path) -> None:
    """Start a worker that must come up and consume (it declares its queues), then stop it."""
    proc = _worker(app, amqp_url, log)
    try:
        wait_for(lambda: _consuming(log) or proc.poll() is not None, 60, f"{app}'s worker")
        assert proc.poll() is None, log.read_text()
    finally:
        stop_group(proc, timeout=20)


def _consuming(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text()


def _refused(app: str, amqp_url: str, log: Path) -> str:
    """Start a worker that must stop at start: its exit code and the lines naming the conflict."""
    proc = _worker(app, amqp_url, log)
    try:
        wait_for(lambda: proc.poll() is not None, 60, f"{app}'s worker to stop")
    finally:
        stop_group(proc, timeout=20)
    text = log.read_text()
    assert proc.returncode != 0, text
    assert " ready." not in text
    lines = [line for line in text.splitlines() if "RabbitMQ already has nen's" in line]
    assert lines, text
    return lines[0]


def _delete_nen_declarations(amqp_url: str) -> None:
    """What the line says to do once the old app's queues are drained."""
    from kombu import Connection

    with Connection(amqp_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in (*NEN_QUEUES, "celery"):
            channel.queue_delete(name)
            channel.exchange_delete(name)


def test_moving_between_the_ready_made_app_and_init_celery_says_how_and_then_works(
    amqp_url: str, tmp_path: Path
) -> None:
    # 1. the ready-made app declares nen's queues its way
    _starts("nen_celery.worker", amqp_url, tmp_path / "ready1.log")
    types = rabbitmq_queue_types(amqp_url)
    assert {name: types.get(name) for name in NEN_QUEUES} == dict.fromkeys(NEN_QUEUES, "quorum")

    # 2. the user's app on the same vhost: one line saying what differs and how to move
    line = _refused("tests.userproj", amqp_url, tmp_path / "user1.log")
    assert "with type 'topic', and this app declares 'direct'" in line or "x-queue-type" in line, line
    assert "stop that app's workers, let its queues drain, delete the queues and exchanges" in line
    assert "delete the queues and exchanges nen.complete, nen.ingest, nen.submit (" in line
    assert line.count("RabbitMQ already has nen's") == 3, line  # each of nen's three queues
    assert "Traceback" not in line

    # 3. following it, the user's app starts and declares nen's queues its own way
    _delete_nen_declarations(amqp_url)
    _starts("tests.userproj", amqp_url, tmp_path / "user2.log")
    types = rabbitmq_queue_types(amqp_url)
    assert {name: types.get(name) for name in NEN_QUEUES} == dict.fromkeys(NEN_QUEUES, "classic")

    # 4. and back: the ready-made app now says the same of the user's declarations
    line = _refused("nen_celery.worker", amqp_url, tmp_path / "ready2.log")
    assert "this app declares" in line and "nen.submit" in line
    _delete_nen_declarations(amqp_url)
    _starts("nen_celery.worker", amqp_url, tmp_path / "ready3.log")

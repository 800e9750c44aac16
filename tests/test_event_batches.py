"""Task events arrive in batches from every pool, gevent included (fastpath/event_batches.py, opt-in:
NEN_EVENT_BATCHES; its gate and the stepping aside are in tests/test_fastpath.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.events.event import get_exchange
from kombu import Consumer, Queue

from nen_celery.simulator import SimulatorServer
from tests.cluster import Cluster, db_url, logs_on_failure
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


@pytest.mark.parametrize("pool", ["gevent", "threads", "prefork"])
def test_a_worker_sends_every_task_event_in_batches(tmp_path: Path, sim: SimulatorServer, pool: str) -> None:
    url = db_url(TEST_REDIS_URL, 5)
    r = redis.Redis.from_url(url)
    r.flushdb()
    with logs_on_failure(Cluster(tmp_path, url, sim, NEN_EVENT_BATCHES="true")) as c:
        c.receiver()
        _, node = c.worker(concurrency=10 if pool != "prefork" else 2, pool=pool, loglevel="WARNING")
        bodies: list[Any] = []
        stop = threading.Event()

        def listen() -> None:
            """Events are published, not queued: listen from before the first run."""
            with c.sender.connection_for_read() as conn:
                name = f"nen-test-events-{node}"
                queue = Queue(name, get_exchange(conn), routing_key="#", auto_delete=True)
                keep = [lambda body, _: bodies.append(body)]
                with Consumer(conn, [queue], callbacks=keep, accept=["json"], no_ack=True):  # as Flower
                    while not stop.is_set():
                        try:
                            conn.drain_events(timeout=0.5)
                        except socket.timeout:  # noqa: UP041 (what kombu raises)
                            continue

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        try:
            wait_for(lambda: bool(r.pubsub_channels("*celeryev*") or r.pubsub_numpat()), 20, "the listener")

            def events() -> list[dict[str, Any]]:
                return [e for b in list(bodies) for e in (b if isinstance(b, list) else [b])]

            def succeeded() -> set[str]:
                return {e["uuid"] for e in events() if e.get("type") == "task-succeeded"}

            run_ids = [c.start() for _ in range(20)]
            c.settle(run_ids)
            # each run's tasks: submit_run, complete_run (the receiver applies both webhooks and,
            # not knowing tests.record, hands the callback to complete_run) and the callback
            wait_for(lambda: len(succeeded()) >= 60, 30, "a task-succeeded event per task")
        finally:
            stop.set()
            listener.join(10)
        kinds: dict[str, set[str]] = {}
        for event in events():
            if "uuid" in event:
                kinds.setdefault(event["uuid"], set()).add(event["type"])
        assert all({"task-received", "task-started", "task-succeeded"} <= k for k in kinds.values())
        names = [e["name"] for e in events() if e["type"] == "task-received"]
        assert sorted(set(names)) == ["nen_celery.complete_run", "nen_celery.submit_run", "tests.record"]
        batches = [b for b in bodies if isinstance(b, list)]
        assert batches and max(len(b) for b in batches) > 1  # several events to a message
        assert not [b for b in bodies if isinstance(b, dict) and b.get("type", "").startswith("task-")]
        assert "steps aside" not in c.logs()  # the gate (fastpath/gate.py) let it in

"""Horizontal workers: three `celery worker` processes with distinct node names, split by queue
the way docs/operations.md's sample deployment does (a thread pool on nen.submit, prefork on the rest),
every webhook delivered three times. Each run is POSTed once and completed once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nen_celery.simulator import SimulatorServer
from tests.cluster import Cluster, db_url, logs_on_failure
from tests.conftest import TEST_REDIS_URL, sim_config

pytestmark = [pytest.mark.integration]

SUBMIT = "nen.submit"
REST = "nen.ingest,nen.complete,celery"
# Timeouts for a busy machine (the fault suite's are tight on purpose): a slow answer from the
# simulator must not turn a run `unknown`, nor the sweep poll runs whose webhooks are queued.
PATIENT_ENV = {
    "NEN_READ_TIMEOUT": "30",
    "NEN_CONNECT_TIMEOUT": "5",
    "NEN_VISIBILITY_TIMEOUT": "300",
    "NEN_WEBHOOK_DEADLINE": "60",
    "NEN_QUEUED_GRACE": "120",
    "NEN_UNKNOWN_TIMEOUT": "600",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    # Nen's retry policy is undocumented; ten tries ride out a receiver busy with 3x duplicates
    with SimulatorServer(sim_config(delivery_attempts=10)) as server:
        yield server


def run_many(
    tmp: Path,
    sim: SimulatorServer,
    runs: int,
    timeout: float,
    submit_pool: tuple[str, int] = ("threads", 8),
    **env: str,
) -> None:
    url = db_url(TEST_REDIS_URL, 6)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    with logs_on_failure(Cluster(tmp, url, sim, **PATIENT_ENV, **env)) as c:
        sim.state.config.webhook_duplicates = 2  # each webhook three times, concurrently
        c.receiver()
        c.beat()  # one beat: the sweep polls Nen for any webhook that never got through
        pool, concurrency = submit_pool
        _, submitter = c.worker(concurrency=concurrency, pool=pool, queues=SUBMIT, loglevel="WARNING")
        _, rest1 = c.worker(concurrency=2, queues=REST, loglevel="WARNING")
        _, rest2 = c.worker(concurrency=2, queues=REST, loglevel="WARNING")
        run_ids = [c.start() for _ in range(runs)]
        c.settle(run_ids, timeout=timeout)

        posts = sim.stats()["posts_by_idempotency_key"]
        assert sorted(posts.get(r, 0) for r in run_ids) == [1] * runs  # submitted once each
        calls = {r: [x["tag"] for x in c.calls(r)] for r in run_ids}
        assert [r for r, tags in calls.items() if tags != ["complete"]] == []  # completed once each
        deliveries = sim.stats()["deliveries"]
        assert max(len(v) for v in deliveries.values()) >= 3  # the copies really were delivered

        done = c.sender.control.inspect(destination=[submitter, rest1, rest2], timeout=5).stats() or {}
        totals = {node: done[node]["total"] for node in done}
        submit_tasks = {"nen_celery.submit_run", "nen_celery.poll_run", "nen_celery.lookup_run"}
        assert "nen_celery.submit_run" in totals[submitter]
        assert set(totals[submitter]) <= submit_tasks  # routing: the submit pool does HTTP only
        for node in (rest1, rest2):
            assert "nen_celery.submit_run" not in totals[node]
            assert totals[node].get("nen_celery.complete_run", 0) > 0  # both share the work
        completed = sum(totals[n].get("nen_celery.complete_run", 0) for n in (rest1, rest2))
        # the receiver applies every copy of every webhook; the first terminal one of each run
        # claims its completion and, the callback's task not registered there (tests.callbacks),
        # hands it to complete_run: one task per run at least, the copies add none
        terminal = sum(len([s for s in sent if s != "processing"]) for sent in deliveries.values())
        assert terminal >= 3 * runs and completed >= runs


@pytest.mark.timeout(300)
def test_three_workers_150_runs_with_duplicated_webhooks(tmp_path: Path, sim: SimulatorServer) -> None:
    run_many(tmp_path, sim, 150, timeout=240)


@pytest.mark.timeout(300)
def test_a_gevent_submit_pool_whose_window_fills(tmp_path: Path, sim: SimulatorServer) -> None:
    """-P gevent, 4 greenlets, Nen answering in 100 ms: the prefetch window is full most of the
    time, so the consumer waits for acks (fastpath/kombu_redis.py, opted in) without losing or
    repeating one."""
    sim.state.config.post_latency = 0.1
    try:
        run_many(tmp_path, sim, 60, timeout=240, submit_pool=("gevent", 4), NEN_PATCH_KOMBU_REDIS="true")
    finally:
        sim.state.config.post_latency = 0.0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_three_workers_1000_runs_with_duplicated_webhooks(tmp_path: Path, sim: SimulatorServer) -> None:
    run_many(tmp_path, sim, 1000, timeout=1100)

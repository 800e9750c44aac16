"""NEN_BROKER_QUEUE_ORDER (Redis broker): a worker takes its next message from the queue nearest a
run's end (callbacks, complete, ingest, then submit), so runs in flight finish before new ones
start; round_robin (kombu's default) takes each queue in turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nen_celery.simulator import SimulatorServer
from nen_celery.worker import COMPLETE_QUEUE, DEFAULT_QUEUE, INGEST_QUEUE, QUEUE_NAMES, SUBMIT_QUEUE
from tests.cluster import Cluster, db_url, logs_on_failure
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.helpers import OTHER_PROCESS_HEADER, wait_for

pytestmark = [pytest.mark.integration]

URL = db_url(TEST_REDIS_URL, 9)
RUN = "queue-order"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


def test_the_queues_nearest_a_runs_end_come_first() -> None:
    assert QUEUE_NAMES == (DEFAULT_QUEUE, COMPLETE_QUEUE, INGEST_QUEUE, SUBMIT_QUEUE)


def _order_of_execution(tmp: Path, sim: SimulatorServer, order: str) -> list[str]:
    """Three messages in each of nen.submit, nen.ingest and celery (queued in that order, before
    any worker runs), then one worker process with one slot: the order the tasks ran in."""
    tmp.mkdir()
    redis.Redis.from_url(URL).flushdb()
    with logs_on_failure(Cluster(tmp, URL, sim, NEN_BROKER_QUEUE_ORDER=order)) as c:
        for queue in (SUBMIT_QUEUE, INGEST_QUEUE, DEFAULT_QUEUE):
            for i in range(3):
                c.sender.send_task(
                    "tests.record",
                    args=({"run_id": RUN},),
                    kwargs={"tag": f"{queue}:{i}"},
                    queue=queue,
                    headers={OTHER_PROCESS_HEADER: "1"},
                )
        c.worker(concurrency=1, loglevel="WARNING")
        wait_for(lambda: len(c.calls(RUN)) == 9, 60, "the nine tasks to run")
        return [call["tag"] for call in c.calls(RUN)]


@pytest.mark.timeout(180)
def test_a_worker_finishes_runs_in_flight_before_it_starts_new_ones(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    ran = _order_of_execution(tmp_path / "priority", sim, "priority")
    assert ran == [f"{q}:{i}" for q in (DEFAULT_QUEUE, INGEST_QUEUE, SUBMIT_QUEUE) for i in range(3)]

    ran = _order_of_execution(tmp_path / "round_robin", sim, "round_robin")
    assert sorted(ran) == sorted(
        f"{q}:{i}" for q in (DEFAULT_QUEUE, INGEST_QUEUE, SUBMIT_QUEUE) for i in range(3)
    )
    assert [tag.split(":")[0] for tag in ran[:3]] != [DEFAULT_QUEUE] * 3  # each queue in turn

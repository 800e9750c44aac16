"""RabbitMQ as the broker (run state stays on Redis): the core lifecycle and the worker-kill
faults, with real `celery worker` processes on a private vhost of the local RabbitMQ.

Quorum queues with Celery's native delayed delivery: a countdown (re-schedule, retry) waits in
RabbitMQ's delay queues, not in a worker; a dead worker's unacked messages come back as soon
as its connection closes, with no visibility timeout.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nen_celery.simulator import SimulatorServer
from nen_celery.simulator.config import PlannedError
from tests.cluster import (
    QUEUES,
    Cluster,
    amqp_ready_messages,
    db_url,
    logs_on_failure,
    rabbitmq_queue_types,
    rabbitmq_restart,
    rabbitmq_vhost_or_skip,
)
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.helpers import wait_for
from tests.test_faults import killed_at_point as pool_process_killed
from tests.test_faults import race_duplicated_webhooks as racing_workers

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAIL_WF = "87654321-4321-4321-4321-cba987654321"


amqp_url = pytest.fixture(scope="module", name="amqp_url")(rabbitmq_vhost_or_skip)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config(fail_workflows={FAIL_WF})) as server:
        yield server


def make_cluster(tmp: Path, sim: SimulatorServer, amqp_url: str, **env: str) -> Cluster:
    url = db_url(TEST_REDIS_URL, 4)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    return Cluster(tmp, url, sim, broker_url=amqp_url, **env)


@pytest.fixture
def cluster(tmp_path: Path, sim: SimulatorServer, amqp_url: str) -> Iterator[Cluster]:
    # A visibility timeout far beyond the waits below: nothing here may depend on it.
    with logs_on_failure(make_cluster(tmp_path, sim, amqp_url, NEN_VISIBILITY_TIMEOUT="3600")) as c:
        c.receiver()
        yield c


def delayed_delivery_ready(amqp_url: str) -> None:
    """Celery's native delayed delivery set up: a worker declares celery_delayed_27 down to _0
    as it starts."""
    wait_for(
        lambda: rabbitmq_queue_types(amqp_url).get("celery_delayed_0") == "quorum",
        60,
        "the worker's delayed-delivery queues",
    )


def test_lifecycle_on_quorum_queues_with_publisher_confirms(cluster: Cluster, amqp_url: str) -> None:
    cluster.worker()
    ok = [cluster.start() for _ in range(3)]
    failed = cluster.start(FAIL_WF)
    cluster.settle([*ok, failed])
    for run_id in ok:
        assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
        history = [h["status"] for h in json.loads(cluster.store.raw(run_id)["history"])]
        assert history == ["queued", "submitted", "processing", "success"]
        assert cluster.posts(run_id) == 1
    assert [c["tag"] for c in cluster.calls(failed)] == ["failure"]
    assert cluster.store.raw(failed)["status"] == "failed"

    delayed_delivery_ready(amqp_url)  # a run can settle before the worker's start-up is done
    types = rabbitmq_queue_types(amqp_url)
    assert {name: types.get(name) for name in QUEUES} == dict.fromkeys(QUEUES, "quorum")
    assert not any(key.startswith("unacked") for key in cluster.redis.keys("*"))  # no Redis broker
    with cluster.sender.connection_for_write() as conn:
        channel = conn.default_channel
        assert channel.basic_publish == channel.basic_publish_confirm  # publisher confirms on


def test_sub_second_reschedule_goes_through_the_delay_queues(
    tmp_path: Path, sim: SimulatorServer, amqp_url: str
) -> None:
    """NEN_RESCHEDULE_DELAY=0.2: Celery's native delayed delivery refuses countdowns under 1 s
    (it counts whole seconds); NenTask rounds them up, so the re-schedule still happens."""
    settings = {"NEN_SUBMIT_DEADLINE": "0.1", "NEN_SUBMIT_RESCHEDULES": "5"}
    with logs_on_failure(make_cluster(tmp_path, sim, amqp_url, **settings)) as c:
        sim.state.config.post_errors = [PlannedError(503)] * 3  # after make_cluster's reset
        c.receiver()
        c.worker()
        delayed_delivery_ready(amqp_url)  # a countdown before its queues exist goes nowhere
        run_id = c.start()
        c.settle([run_id])
        assert [x["tag"] for x in c.calls(run_id)] == ["complete"]
        assert c.store.raw(run_id)["status"] == "success"
        assert c.posts(run_id) == 4  # three 503s, then the 202
        assert "re-scheduling" in c.logs()


@pytest.mark.parametrize("point", ["submit:before_claim", "complete:before_dispatch"])
def test_pool_process_killed_finishes_the_run_once(cluster: Cluster, point: str) -> None:
    pool_process_killed(cluster, point)  # the Redis-broker fault test, on RabbitMQ


def test_whole_worker_killed_is_redelivered_at_once_without_a_visibility_timeout(
    cluster: Cluster,
) -> None:
    point = "submit:before_claim"
    worker, _ = cluster.worker(failpoints=point)
    cluster.arm(point)
    run_id = cluster.start()
    cluster.frozen_pid(point)
    cluster.stop(worker, signal.SIGKILL)  # its connection closes: RabbitMQ requeues the message
    cluster.worker()
    cluster.settle([run_id], timeout=45)  # NEN_VISIBILITY_TIMEOUT is 3600 s here
    assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
    assert cluster.posts(run_id) == 1


def test_two_workers_racing_duplicated_webhooks(cluster: Cluster) -> None:
    racing_workers(cluster)  # the Redis-broker fault test, on RabbitMQ


def test_a_callback_in_its_quorum_queue_survives_a_broker_restart(cluster: Cluster, amqp_url: str) -> None:
    """The promise behind "use RabbitMQ where a lost callback matters": a callback RabbitMQ
    confirmed is kept through a restart of the broker (rabbitmqctl stop_app / start_app), and
    runs once when a worker consumes its queue."""
    nen_only, _ = cluster.worker(queues="nen.submit,nen.ingest,nen.complete")  # not `celery`
    run_id = cluster.start()
    wait_for(lambda: cluster.store.raw(run_id).get("completion") == "sent", 60, "callback published")
    wait_for(lambda: amqp_ready_messages(amqp_url, ("celery",)) == 1, 30, "the callback in its queue")
    cluster.stop(nen_only)
    rabbitmq_restart()
    assert amqp_ready_messages(amqp_url, ("celery",)) == 1  # still there after the restart
    cluster.worker(queues="celery")
    cluster.settle([run_id], timeout=60)
    assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
    assert cluster.posts(run_id) == 1

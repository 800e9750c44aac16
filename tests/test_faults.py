"""Faults injected for real: worker processes SIGKILLed at chosen points, racing workers,
duplicated webhooks, Redis restarted mid-flight. Each run must end with exactly one callback,
and Nen must be asked to start it once.

Workers are separate `celery -A nen_celery.worker worker` processes on a broker DB of their
own; failpoints (nen_celery.runtime.faults) freeze a task at a named place so it can be killed there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from nen_celery.lifecycle.completion import callback_task_id
from nen_celery.simulator import SimulatorServer
from tests.cluster import Cluster, db_url
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.helpers import OTHER_PROCESS_HEADER, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
RAN = re.compile(r"Task ([\w.]+)\[[0-9a-f-]+\] received")  # a worker's log at INFO


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    config = sim_config()
    with SimulatorServer(config) as server:
        yield server


@contextmanager
def fresh_cluster(
    tmp_path: Path, sim: SimulatorServer, receiver: str = "nen_celery.web.asgi:app", **settings: str
) -> Iterator[Cluster]:
    """A cluster with its receiver (``receiver``: its ASGI app) on a flushed DB; logs printed on
    failure, processes stopped."""
    url = db_url(TEST_REDIS_URL, 2)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    c = Cluster(tmp_path, url, sim, **settings)
    c.receiver(receiver)
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all()


@pytest.fixture
def cluster(tmp_path: Path, sim: SimulatorServer) -> Iterator[Cluster]:
    with fresh_cluster(tmp_path, sim) as c:
        yield c


@pytest.mark.parametrize(
    "point",
    ["submit:before_claim", "ingest:before_apply", "complete:before_dispatch", "complete:after_dispatch"],
)
def test_pool_process_killed_at_each_point_finishes_the_run_once(
    tmp_path: Path, sim: SimulatorServer, point: str
) -> None:
    # the ingest task's point: only on the path where the receiver queues every webhook (a
    # terminal one is otherwise applied by the receiver); the complete_run points: the receiver
    # does not know the callback's task (tests.callbacks), so it hands the callback to complete_run
    queued = {"NEN_WEBHOOK_APPLY_PROCESSING": "false"} if point == "ingest:before_apply" else {}
    with fresh_cluster(tmp_path, sim, **queued) as cluster:
        killed_at_point(cluster, point)


def killed_at_point(cluster: Cluster, point: str) -> None:
    cluster.worker(failpoints=point)
    cluster.arm(point)
    run_id = cluster.start()
    os.kill(cluster.frozen_pid(point), signal.SIGKILL)  # the pool process running the task
    cluster.settle([run_id])
    calls = cluster.calls(run_id)
    if point == "complete:after_dispatch":
        # the one window (docs/guarantees.md, "Delivery guarantees"): the broker took the callback, the holder
        # died before Redis recorded it; its redelivered message dispatches it again, under the
        # same task id, so a callback deduplicating on its task id runs once
        assert [c["tag"] for c in calls] in (["complete"], ["complete", "complete"]), cluster.logs()
        assert {c["task_id"] for c in calls} == {callback_task_id(run_id, "success")}
    else:
        assert [c["tag"] for c in calls] == ["complete"], cluster.logs()
    assert cluster.posts(run_id) == 1
    assert cluster.store.raw(run_id)["status"] == "success"
    assert cluster.store.raw(run_id)["completion"] == "sent"


def test_whole_worker_killed_mid_task_is_redelivered_to_a_new_worker(cluster: Cluster) -> None:
    point = "submit:before_claim"
    worker, _ = cluster.worker(failpoints=point)
    cluster.arm(point)
    run_id = cluster.start()
    cluster.frozen_pid(point)
    cluster.stop(worker, signal.SIGKILL)  # master and pool: the message stays unacked in Redis
    cluster.worker()  # a fresh worker gets it back once the visibility timeout has passed
    cluster.settle([run_id], timeout=90)
    assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
    assert cluster.posts(run_id) == 1


def test_pool_process_killed_between_the_claim_and_the_post_is_parked_never_resent(cluster: Cluster) -> None:
    """The claim counted the first POST as possibly sent (claim_submit's mark_post, one round
    trip less per run); the worker dies before that POST. Its redelivered copy cannot tell this
    from a POST on the wire, so it parks the run `unknown` and never resends; no webhook comes, so
    the sweep ends it submit_failed (fate_unknown) after NEN_UNKNOWN_TIMEOUT: one on_failure, no
    POST."""
    point = "submit:before_post"
    cluster.worker(failpoints=point)
    cluster.beat()
    cluster.arm(point)
    run_id = cluster.start()
    pid = cluster.frozen_pid(point)
    counted = cluster.store.raw(run_id)
    assert (counted["post_inflight"], counted["attempts"]) == ("1", "1")  # the claim's own count
    os.kill(pid, signal.SIGKILL)
    cluster.settle([run_id])
    data = cluster.store.raw(run_id)
    assert [c["tag"] for c in cluster.calls(run_id)] == ["failure"]
    assert cluster.posts(run_id) == 0
    assert data["status"] == "submit_failed" and json.loads(data["error"])["type"] == "fate_unknown"
    history = [(h["status"], h["source"]) for h in json.loads(data["history"])]
    assert ("unknown", "submit:redelivered") in history


def killed_after_accept(cluster: Cluster) -> tuple[str, dict[str, str]]:
    """Kill the pool process holding Nen's 202 before the binding is stored; settle the run."""
    point = "submit:after_accept"
    cluster.worker(failpoints=point)
    cluster.beat()
    cluster.arm(point)
    run_id = cluster.start()
    os.kill(cluster.frozen_pid(point), signal.SIGKILL)
    cluster.settle([run_id])
    assert cluster.posts(run_id) == 1  # never resent
    return run_id, cluster.store.raw(run_id)


def test_killed_after_nen_accepted_is_never_resent_and_completes_through_its_webhooks(
    cluster: Cluster,
) -> None:
    """The 202 was lost with the worker. Once the holder's lease lapses the run is `unknown`
    and Nen is not asked again; Nen's webhooks, which name the run (hints.py) and were kept with
    it, bind it to its messageId: it completes, one POST, one callback."""
    run_id, data = killed_after_accept(cluster)
    assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
    history = [(h["status"], h["source"]) for h in json.loads(data["history"])]
    assert data["status"] == "success"
    assert ("unknown", "submit:redelivered") in history and ("submitted", "webhook:run_hint") in history


def test_killed_after_nen_accepted_without_run_hints_ends_once_as_fate_unknown(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """With NEN_WEBHOOK_RUN_PARAM="" nothing names the run: it stays `unknown`, Nen is not asked
    again, and the beat sweep ends it submit_failed (fate unknown) after NEN_UNKNOWN_TIMEOUT:
    one on_failure."""
    with fresh_cluster(tmp_path, sim, NEN_WEBHOOK_RUN_PARAM="") as cluster:
        run_id, data = killed_after_accept(cluster)
        assert [c["tag"] for c in cluster.calls(run_id)] == ["failure"]
        assert data["status"] == "submit_failed" and json.loads(data["error"])["type"] == "fate_unknown"
        assert "unknown" in [h["status"] for h in json.loads(data["history"])]


def test_a_running_submit_redelivered_by_a_broker_reconnect_waits_for_its_holder(
    cluster: Cluster,
) -> None:
    """When a worker's broker connection drops, kombu puts its unacked messages back while their
    tasks still run: the same submit message arrives again while its first execution holds the
    202 and has not stored the binding. That duplicate must wait, not park the run as unknown
    (an unknown run ends submit_failed after NEN_UNKNOWN_TIMEOUT although Nen runs it)."""
    point = "submit:after_accept"
    cluster.worker(failpoints=point)
    cluster.arm(point)
    run_id = cluster.start()
    cluster.frozen_pid(point)  # the POST was answered 202; the binding is not stored yet
    task_id = cluster.store.raw(run_id)["submit_holder"].split("/")[0]
    cluster.sender.send_task(
        "nen_celery.submit_run",
        args=(run_id,),
        kwargs={"reschedule": 0},
        queue="nen.submit",
        task_id=task_id,  # the very message again, as a reconnect restores it
        headers={OTHER_PROCESS_HEADER: "1"},
    )
    wait_for(lambda: f"submit_run[{task_id}] succeeded" in cluster.logs(), 30, "the duplicate to finish")
    assert "'status': 'busy'" in cluster.logs()
    assert cluster.store.raw(run_id)["status"] == "queued"  # not parked as unknown
    cluster.redis.delete(f"{cluster.prefix}:failpoint:{point}")  # the first execution goes on
    cluster.settle([run_id])
    assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
    assert cluster.posts(run_id) == 1


@pytest.mark.parametrize("receiver", ["nen_celery.web.asgi:app", "tests.receiver_app:app"])
def test_two_workers_racing_duplicated_webhooks_fire_one_callback_per_run(
    tmp_path: Path, sim: SimulatorServer, receiver: str
) -> None:
    """``tests.receiver_app``: the receiver knows the callback task, so the copies of each
    terminal webhook race in the receiver's threads, each claiming the completion to publish
    the callback itself."""
    with fresh_cluster(tmp_path, sim, receiver) as cluster:
        race_duplicated_webhooks(cluster)


def race_duplicated_webhooks(cluster: Cluster) -> None:
    cluster.sim.state.config.webhook_duplicates = 4  # each webhook delivered 5 times, concurrently
    cluster.worker(concurrency=2)
    cluster.worker(concurrency=2)
    run_ids = [cluster.start() for _ in range(20)]
    cluster.settle(run_ids)
    for run_id in run_ids:
        assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
        assert cluster.posts(run_id) == 1
    delivered = cluster.sim.stats()["deliveries"]
    assert max(len(v) for v in delivered.values()) >= 5  # the duplicates really were sent


@pytest.mark.parametrize("point", ["complete:before_dispatch", "complete:after_dispatch"])
def test_a_receiver_killed_holding_the_completion_leaves_it_to_the_sweep(
    tmp_path: Path, sim: SimulatorServer, point: str
) -> None:
    """The receiver ends the run with the terminal webhook and claims its completion (a lease),
    then dies before the callback is out (before_dispatch) or before it marked it sent
    (after_dispatch). No message of it comes back: Nen redelivers the webhook to the receiver
    restarted (a duplicate: the claim is the dead one's until its lease lapses), and the sweep
    dispatches the completion once the lease lapsed: one callback, or, in the one window
    (after the broker took it), the same task id twice (docs/guarantees.md)."""
    settings = {"NEN_COMPLETION_LEASE": "2", "NEN_RECONCILE_INTERVAL": "1"}
    with fresh_cluster(tmp_path, sim, "tests.receiver_app:app", **settings) as cluster:
        dying = cluster.procs[-1]
        cluster.stop(dying)  # the same receiver again, with the failpoint
        cluster.receiver("tests.receiver_app:app", NEN_FAILPOINTS=point)
        dying = cluster.procs[-1]
        cluster.worker()
        cluster.beat()
        cluster.arm(point)
        run_id = cluster.start()
        assert cluster.frozen_pid(point) == dying.pid  # the receiver holds the claim, not a worker
        claim = cluster.store.raw(run_id)
        assert claim["completion"] == "sending" and claim["completion_holder"].startswith("receiver-")
        cluster.stop(dying, signal.SIGKILL)
        cluster.receiver("tests.receiver_app:app")  # Nen's redeliveries land here
        cluster.settle([run_id])
        calls = cluster.calls(run_id)
        if point == "complete:after_dispatch":
            assert [c["tag"] for c in calls] in (["complete"], ["complete", "complete"]), cluster.logs()
        else:
            assert [c["tag"] for c in calls] == ["complete"], cluster.logs()
        assert {c["task_id"] for c in calls} == {callback_task_id(run_id, "success")}
        assert cluster.posts(run_id) == 1
        record = cluster.store.raw(run_id)
        assert record["status"] == "success" and record["completion"] == "sent"


def test_the_receiver_publishes_the_callback_itself_when_it_knows_the_task(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """Two queue hops per run: submit_run, then the callback the receiver published; no
    ingest_webhook and no complete_run task ever runs."""
    with fresh_cluster(tmp_path, sim, "tests.receiver_app:app") as cluster:
        cluster.worker(loglevel="INFO")
        run_ids = [cluster.start() for _ in range(3)]
        cluster.settle(run_ids)
        for run_id in run_ids:
            assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
            assert cluster.store.raw(run_id)["completion"] == "sent"
        worker_log = (tmp_path / "worker1.log").read_text()
        ran = {name for name in RAN.findall(worker_log)}
        assert ran == {"nen_celery.submit_run", "tests.record"}, worker_log


@pytest.mark.timeout(400)  # three processes and a Redis restarted: slow on a loaded 2-core box
def test_redis_restart_mid_flight_loses_nothing(tmp_path: Path, sim: SimulatorServer) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not on PATH")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
    ]

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: _pings(f"redis://127.0.0.1:{port}/0"), 20, "redis-server")
        return proc

    server = start_redis()
    sim.reset()
    # A worker can die in the restart (below) between marking its POST in flight and sending it:
    # the run is parked unknown, never resent blindly; the lookup finds Nen has no such run, and
    # the sweep resubmits it. Without a lookup path it would end submit_failed (by design). The
    # simulator serves the lookup only when asked to (else 405: the run ended submit_failed once
    # in a fresh-clone run).
    sim.state.config.lookup_by_idempotency_key = True
    lookup = "/runs?idempotency_key={idempotency_key}"
    c = Cluster(tmp_path, f"redis://127.0.0.1:{port}/0", sim, NEN_LOOKUP_PATH=lookup)
    try:
        c.receiver()
        worker, _ = c.worker()
        c.beat()
        run_ids = [c.start() for _ in range(10)]
        wait_for(lambda: any(c.store.raw(r).get("message_id") for r in run_ids), 30, "a run in flight")
        server.send_signal(signal.SIGTERM)  # clean shutdown: the AOF is fsynced
        server.wait(30)
        server = start_redis()

        def settled_under_a_supervisor() -> bool:
            # kombu's Redis transport can end a worker with "Unrecoverable error" while it
            # reconnects (an AttributeError in its channel close; kombu issues #582/#970 are
            # of that family). Production runs workers under a supervisor (compose:
            # restart: unless-stopped), so does this test: nothing may be lost either way.
            nonlocal worker
            if worker.poll() is not None:
                worker, _ = c.worker()
            return c.settled(run_ids)

        wait_for(settled_under_a_supervisor, 240, "every run completed and the broker drained")
        outcomes = {r: ([x["tag"] for x in c.calls(r)], c.posts(r)) for r in run_ids}
        wrong = {r: (o, c.store.raw(r)) for r, o in outcomes.items() if o != (["complete"], 1)}
        assert not wrong, wrong
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all()
        sim.state.config.lookup_by_idempotency_key = False
        if server.poll() is None:
            server.terminate()
            server.wait(30)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False

"""One execution of a callback at a time (nen_celery.CallbackTask, issue 17 item 2).

Every callback message nen dispatches carries ``nen_callback: "<run_id>|<attempt>"``; a task on
CallbackTask (every task of the ready-made app) claims a lease in Redis for that run and attempt
before the user's code runs, renews it while it runs and marks the callback done at its end. A
copy of the message redelivered meanwhile waits on the lease instead of running it twice.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Ignore, Retry

from nen_celery import CallbackTask
from nen_celery.runtime.app import CALLBACK_HEADER
from nen_celery.simulator import SimulatorServer
from tests.callbacks import slow_record
from tests.cluster import Cluster, db_url
from tests.conftest import TEST_REDIS_URL, sim_config
from tests.helpers import wait_for

# -- the Lua verdicts, on real Redis -----------------------------------------------------------


def claim(store: Any, run_id: str, attempt: str, holder: str, lease: float) -> int:
    """Claim for ``holder``; its fence token (asserts the claim)."""
    verdict, fence = store.claim_callback(run_id, attempt, holder, lease)
    assert verdict == "claimed", verdict
    return int(fence)


def test_claim_renew_release_finish_verdicts(store: Any) -> None:
    run_id = f"r-{uuid.uuid4()}"
    a = claim(store, run_id, "0", "a/1", 5)
    assert store.claim_callback(run_id, "0", "b/2", 5) == ("busy", 0)  # a live holder
    assert claim(store, run_id, "1", "b/2", 5) == 1  # another attempt: its own, with its own fence
    assert store.renew_callback(run_id, "0", "a/1", a, 5) == 1
    assert store.renew_callback(run_id, "0", "b/2", a, 5) == 0  # not its lease
    assert store.release_callback(run_id, "0", "b/2", a) is False  # not its lease: kept
    assert store.claim_callback(run_id, "0", "c/3", 5)[0] == "busy"
    assert store.release_callback(run_id, "0", "a/1", a) is True  # a retry: no end, free at once
    b = claim(store, run_id, "0", "b/2", 5)
    assert b > a
    assert store.finish_callback(run_id, "0", "b/2", b) is True
    assert store.claim_callback(run_id, "0", "a/1", 5) == ("done", 0)
    assert store.renew_callback(run_id, "0", "b/2", b, 5) == 0  # the lease went with the end
    lease_key, done_key, _ = store.callback_keys(run_id, "0")
    assert lease_key.startswith(store.run_key(run_id)) and done_key.startswith(store.run_key(run_id))
    assert 0 < store.redis.ttl(done_key) <= store.settings.retention_seconds
    fence_key = lease_key.removesuffix(":lease") + ":fence"
    assert 0 < store.redis.ttl(fence_key) <= store.settings.retention_seconds


def test_a_lapsed_lease_is_taken_over(store: Any) -> None:
    run_id = f"r-{uuid.uuid4()}"
    a = claim(store, run_id, "0", "a/1", 0.2)
    assert store.claim_callback(run_id, "0", "b/2", 0.2)[0] == "busy"
    lease_key, _, _ = store.callback_keys(run_id, "0")
    wait_for(lambda: not store.redis.exists(lease_key), 5, "the lease to lapse")  # no heartbeat
    b = claim(store, run_id, "0", "b/2", 5)
    assert b == a + 1
    assert store.renew_callback(run_id, "0", "a/1", a, 5) == 0  # never taken back
    assert store.release_callback(run_id, "0", "a/1", a) is False  # the late one drops nothing
    assert store.finish_callback(run_id, "0", "a/1", a) is False  # nor marks it done
    assert store.claim_callback(run_id, "0", "c/3", 5)[0] == "busy"
    assert store.finish_callback(run_id, "0", "b/2", b) is True


def test_a_lapsed_lease_nobody_claimed_is_taken_back_by_its_holder(store: Any) -> None:
    run_id = f"r-{uuid.uuid4()}"
    a = claim(store, run_id, "0", "a/1", 0.2)
    lease_key, _, _ = store.callback_keys(run_id, "0")
    wait_for(lambda: not store.redis.exists(lease_key), 5, "the lease to lapse")
    assert store.renew_callback(run_id, "0", "a/1", a, 5) == 2  # no claim since: safe to go on
    assert store.claim_callback(run_id, "0", "b/2", 5)[0] == "busy"


def test_done_is_final(store: Any) -> None:
    run_id = f"r-{uuid.uuid4()}"
    a = claim(store, run_id, "0", "a/1", 5)
    assert store.finish_callback(run_id, "0", "a/1", a) is True
    assert store.release_callback(run_id, "0", "a/1", a) is False
    for holder in ("a/1", "b/2"):
        assert store.claim_callback(run_id, "0", holder, 5) == ("done", 0)
    assert claim(store, run_id, "1", "a/1", 5) == 1  # a redrive's attempt runs


# -- CallbackTask.__call__, in this process ------------------------------------------------------


@pytest.fixture
def guarded() -> Iterator[tuple[Any, list[str]]]:
    app = Celery("lease-unit", set_as_current=False)
    seen: list[str] = []

    @app.task(bind=True, base=CallbackTask, name="lease.unit", shared=False)
    def callback(self: Any, run: dict[str, Any], then: str = "") -> str:
        seen.append(run["run_id"])
        if then == "retry":
            raise Retry("the callback's own retry")
        if then == "fail":
            raise ValueError("the callback failed")
        return "ran"

    yield callback, seen


def call_as_worker(task: Any, run_id: str, then: str = "", attempt: int = 0) -> Any:
    task.push_request(id=f"t-{uuid.uuid4()}", headers={CALLBACK_HEADER: f"{run_id}|{attempt}"})
    try:
        return task({"run_id": run_id}, then)
    finally:
        task.pop_request()


def test_a_completed_callback_is_skipped_by_a_later_copy(store: Any, guarded: Any) -> None:
    """Skipped with Ignore: no result (the first's would be overwritten), link or chain step."""
    task, seen = guarded
    run_id = f"r-{uuid.uuid4()}"
    assert call_as_worker(task, run_id) == "ran"
    with pytest.raises(Ignore):
        call_as_worker(task, run_id)
    assert seen == [run_id]
    assert call_as_worker(task, run_id, attempt=1) == "ran"  # the next attempt runs
    assert task({"run_id": run_id}) == "ran"  # called directly: unchanged


def test_the_callbacks_own_retry_is_not_its_end_but_an_exception_is(store: Any, guarded: Any) -> None:
    task, seen = guarded
    run_id = f"r-{uuid.uuid4()}"
    with pytest.raises(Retry):
        call_as_worker(task, run_id, "retry")
    probe = claim(store, run_id, "0", "probe/1", 5)  # released, not done
    store.release_callback(run_id, "0", "probe/1", probe)
    with pytest.raises(ValueError):
        call_as_worker(task, run_id, "fail")
    with pytest.raises(Ignore):  # done: Celery would not run it again either
        call_as_worker(task, run_id)
    assert seen == [run_id, run_id]


def test_a_message_without_the_header_runs_unguarded(store: Any, guarded: Any) -> None:
    task, seen = guarded
    task.push_request(id="t-plain")
    try:
        assert task({"run_id": "plain"}) == "ran"
        assert task({"run_id": "plain"}) == "ran"
    finally:
        task.pop_request()
    assert seen == ["plain", "plain"]


# -- real workers: a running callback redelivered by the broker ------------------------------


def assert_disjoint(events: list[dict[str, Any]]) -> None:
    """Each execution (start to its end in the same pool process, or still running) overlaps no other."""
    starts = sorted((e["at"], e["pid"]) for e in events if e["event"] == "start")
    ends = sorted((e["at"], e["pid"]) for e in events if e["event"] == "end")
    spans = [
        (at, next((end for end, p in ends if p == pid and end >= at), float("inf"))) for at, pid in starts
    ]
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end, f"executions overlap: {events}"


CALLBACK_SECONDS = 22


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


@pytest.mark.faults
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_running_callback_redelivered_by_the_broker_runs_once_at_a_time(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    """The callback (tests.slow_record on the ready-made app, base CallbackTask) works for 22 s;
    the Redis broker restores its unacked message after NEN_VISIBILITY_TIMEOUT (16 s, the least
    Settings allow with the cluster's short submit deadline) plus one restore sweep (1 s), so a
    copy reaches the worker's second pool process while the first still runs, as a broker
    reconnect or RabbitMQ's consumer_timeout would deliver it. The copy must wait on the lease
    (NEN_CALLBACK_LEASE 4 s: it comes back every 2 s) and be skipped once the first completed:
    executions never overlap, one completed execution per run."""
    url = db_url(TEST_REDIS_URL, 4)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    cluster = Cluster(
        tmp_path, url, sim, NEN_CALLBACK_LEASE="4", NEN_TEST_CALLBACK_SECONDS=str(CALLBACK_SECONDS)
    )
    try:
        cluster.receiver()
        cluster.worker(concurrency=2)
        run_id = cluster.start(callback=slow_record)
        key = f"{cluster.prefix}:test:spans:{run_id}"

        def events() -> list[dict[str, Any]]:
            return [json.loads(x) for x in cluster.redis.lrange(key, 0, -1)]

        # checked when the first execution ended (a copy running meanwhile overlaps it), before
        # waiting for the broker to drain (without the lease every copy is redelivered in turn)
        wait_for(lambda: any(e["event"] == "end" for e in events()), 60, "the callback to end")
        time.sleep(1)
        assert_disjoint(events())
        cluster.settle([run_id], timeout=30)
        seen = events()
        assert_disjoint(seen)
        assert [e["event"] for e in seen] == ["start", "end"], f"one completed execution: {seen}"
        assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
        logs = cluster.logs()
        # the broker did deliver a copy while the callback ran, and it waited, then was skipped
        assert "is running in another execution; waiting" in logs, logs
        assert "already completed its callback; skipped" in logs, logs
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()

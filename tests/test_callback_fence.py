"""Issue 25, the callback side: CallbackTask's waits are not retries (F2), its executions are
fenced (F4), and a group callback runs every member once (F3); on a real Redis and a real
in-process Celery worker (the suite's, which runs this module's callback tasks).

The regression tests touch the lease through its Redis keys where they play the other
execution, so that they ran (and failed) against the code before the fix as well.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from celery import Celery, group
from celery.canvas import signature
from celery.signals import task_failure, task_postrun, task_retry

from nen_celery import CallbackTask
from nen_celery.errors import LeaseLost
from nen_celery.runtime.app import CALLBACK_HEADER
from tests.cluster import db_url
from tests.conftest import TEST_REDIS_URL, Stack, celery_app, env
from tests.helpers import free_port, wait_for

SECRET = "https://bucket.example/presigned?X-Amz-Signature=f00dfacecafe"
LEASE = "0.4"  # NEN_CALLBACK_LEASE: a copy waits 0.2 s at a time


@dataclass
class Seen:
    """What the worker's tasks and Celery's signals saw, by task id."""

    client: redis.Redis
    prefix: str = field(default_factory=lambda: f"fence-{uuid.uuid4().hex[:8]}")
    retried: dict[str, int] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)

    def push(self, name: str, value: Any) -> None:
        self.client.rpush(f"{self.prefix}:{name}", json.dumps(value))

    def get(self, name: str) -> list[Any]:
        return [json.loads(x) for x in self.client.lrange(f"{self.prefix}:{name}", 0, -1)]


@dataclass
class Worker:
    app: Celery
    seen: Seen
    tasks: dict[str, Any]


# The suite's in-process worker runs these (tasks registered before it starts): a second
# in-process worker in the same process never fires its countdowns (kombu's event loop is
# process-wide), and waiting is all countdowns.
SEEN = Seen(redis.Redis.from_url(db_url(TEST_REDIS_URL, 7)))


@celery_app.task(bind=True, base=CallbackTask, name="fence.record", max_retries=3)
def record(self: Any, run: dict[str, Any], tag: str = "") -> str:
    SEEN.push(
        run["run_id"],
        {"tag": tag, "retries": self.request.retries, "fence": getattr(self.request, "nen_fence", None)},
    )
    return tag


@celery_app.task(bind=True, base=CallbackTask, name="fence.own_retries", max_retries=3)
def own_retries(self: Any, run: dict[str, Any]) -> None:
    SEEN.push(run["run_id"], {"retries": self.request.retries})
    raise self.retry(countdown=0)


@celery_app.task(bind=True, base=CallbackTask, name="fence.paused")
def paused(self: Any, run: dict[str, Any]) -> None:
    SEEN.push(run["run_id"], {"fence": self.request.nen_fence})
    key = f"{SEEN.prefix}:{run['run_id']}:go"
    deadline = time.monotonic() + 20
    while not SEEN.client.exists(key) and time.monotonic() < deadline:  # the "pause"
        time.sleep(0.02)
    try:
        SEEN.push(run["run_id"], {"check": self.check_lease()})
    except LeaseLost as exc:
        SEEN.push(run["run_id"], {"lost": exc.fence})
        raise


TASKS = {"record": record, "own_retries": own_retries, "paused": paused}


def _ours(sender: Any) -> bool:
    return getattr(sender, "name", "").startswith("fence.")


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Worker]:
    seen = SEEN

    def on_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
        if _ours(sender):
            seen.retried[request.id] = seen.retried.get(request.id, 0) + 1

    def on_failure(sender: Any = None, task_id: str = "", exception: Any = None, **_: Any) -> None:
        if _ours(sender):
            seen.failed[task_id] = exception

    def on_postrun(sender: Any = None, task_id: str = "", **_: Any) -> None:
        if _ours(sender):
            seen.ended[task_id] = seen.ended.get(task_id, 0) + 1

    for signal, handler in ((task_retry, on_retry), (task_failure, on_failure), (task_postrun, on_postrun)):
        signal.connect(handler, weak=False)
    try:
        with env(NEN_CALLBACK_LEASE=LEASE):
            yield Worker(celery_app, seen, TASKS)
    finally:
        for signal, handler in (
            (task_retry, on_retry),
            (task_failure, on_failure),
            (task_postrun, on_postrun),
        ):
            signal.disconnect(handler)


def send(task: Any, run_id: str, *args: Any) -> str:
    """Publish ``task`` as nen dispatches a callback (completion.send_callback's Celery path)."""
    run = {"run_id": run_id, "status": "success", "payload": {"url": SECRET}}
    result = task.apply_async(
        args=(run, *args), headers={CALLBACK_HEADER: f"{run_id}|0"}, argsrepr=f"(run_id={run_id!r})"
    )
    return str(result.id)


def lease_keys(store: Any, run_id: str, attempt: str = "0") -> tuple[str, str]:
    lease_key, done_key, _ = store.callback_keys(run_id, attempt)
    return str(lease_key), str(done_key)


# -- F2: waits are not retries ---------------------------------------------------------------------


def test_a_copy_waits_on_a_busy_lease_past_max_retries_and_then_runs(worker: Worker, store: Any) -> None:
    """Another execution holds the lease for more than max_retries (3) waits: the copy keeps
    waiting (never MaxRetriesExceededError), then runs with request.retries still 0."""
    run_id = f"r-{uuid.uuid4()}"
    lease_key, _ = lease_keys(store, run_id)
    store.redis.set(lease_key, "another/execution", px=60_000)
    task_id = send(worker.tasks["record"], run_id, "waited")
    wait_for(lambda: worker.seen.retried.get(task_id, 0) >= 6 or task_id in worker.seen.failed, 20, "6 waits")
    assert task_id not in worker.seen.failed, worker.seen.failed.get(task_id)
    assert worker.seen.get(run_id) == []  # it waited: the other execution holds the callback
    store.redis.delete(lease_key)  # the other execution died and its lease lapsed
    wait_for(lambda: worker.seen.get(run_id), 10, "the copy to run")
    assert [(e["tag"], e["retries"]) for e in worker.seen.get(run_id)] == [("waited", 0)]
    assert task_id not in worker.seen.failed


def test_a_callback_waits_while_the_run_state_redis_is_away(worker: Worker, store: Any) -> None:
    """The run-state Redis does not answer when the callback starts, for longer than 3 waits:
    the callback waits for it (its retries untouched) and runs once it is back."""
    run_id = f"r-{uuid.uuid4()}"
    with env(NEN_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        task_id = send(worker.tasks["record"], run_id, "after-outage")
        wait_for(
            lambda: worker.seen.retried.get(task_id, 0) >= 5 or task_id in worker.seen.failed, 30, "5 waits"
        )
    assert task_id not in worker.seen.failed, worker.seen.failed.get(task_id)
    wait_for(lambda: worker.seen.get(run_id), 10, "the callback to run")
    assert [(e["tag"], e["retries"]) for e in worker.seen.get(run_id)] == [("after-outage", 0)]


def test_the_callbacks_own_retries_count_and_their_error_shows_no_run(worker: Worker) -> None:
    """The callback's own self.retry counts as Celery counts it (max_retries=3: runs with
    retries 0..3, then MaxRetriesExceededError), and that error, in the worker's log, carries
    the argument reprs, not the run (its payload's presigned URL)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(logging.Formatter().format(record))

    handler = Keep(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        run_id = f"r-{uuid.uuid4()}"
        task_id = send(worker.tasks["own_retries"], run_id)
        wait_for(lambda: task_id in worker.seen.failed, 20, "the retries to run out")
        # Celery logs the failure after its task_failure signal: wait for the line itself
        wait_for(lambda: any("MaxRetriesExceededError" in r for r in records), 20, "the failure logged")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [e["retries"] for e in worker.seen.get(run_id)] == [0, 1, 2, 3]
    error = worker.seen.failed[task_id]
    assert isinstance(error, worker.tasks["own_retries"].MaxRetriesExceededError), repr(error)
    assert SECRET not in str(error) and "presigned" not in str(error)
    assert run_id in str(error)  # the repr nen gave it
    shown = "\n".join(records)
    assert "MaxRetriesExceededError" in shown, shown  # the worker logged it ...
    assert SECRET not in shown and "presigned" not in shown  # ... without the run


# -- F4: fencing ---------------------------------------------------------------------------------


def test_fence_tokens_grow_with_every_claim(store: Any) -> None:
    run_id = f"r-{uuid.uuid4()}"
    first = store.claim_callback(run_id, "0", "a/1", 5)
    assert first[0] == "claimed"
    assert store.release_callback(run_id, "0", "a/1", first[1]) is True
    second = store.claim_callback(run_id, "0", "b/2", 5)
    assert second[0] == "claimed" and second[1] > first[1]
    assert store.finish_callback(run_id, "0", "b/2", first[1]) is False  # compare-and-set on the token
    assert store.finish_callback(run_id, "0", "b/2", second[1]) is True


def test_a_paused_execution_learns_it_lost_the_lease_before_its_next_side_effect(
    worker: Worker, store: Any
) -> None:
    """The execution is stalled past its lease (here: its lease lapses while the callback
    waits) and a redelivered copy claims the callback: the stalled one's check_lease raises
    LeaseLost with its stale fence token, it marks nothing done and leaves the copy's lease."""
    run_id = f"r-{uuid.uuid4()}"
    lease_key, done_key = lease_keys(store, run_id)
    task_id = send(worker.tasks["paused"], run_id)
    first = wait_for(lambda: worker.seen.get(run_id), 10, "the callback to start")[0]["fence"]
    store.redis.delete(lease_key)  # lapsed, as if no heartbeat ran for a lease
    verdict, fence = store.claim_callback(run_id, "0", "copy/1", 30)  # the redelivered copy
    assert verdict == "claimed" and fence > first
    worker.seen.client.set(f"{worker.seen.prefix}:{run_id}:go", 1)  # the stalled execution resumes
    wait_for(lambda: worker.seen.ended.get(task_id), 10, "the stalled execution to end")
    assert worker.seen.get(run_id)[1:] == [{"lost": first}]
    assert task_id not in worker.seen.failed  # Ignored: the copy decides the callback's end
    assert store.redis.get(lease_key) == "copy/1" and not store.redis.exists(done_key)
    assert store.finish_callback(run_id, "0", "copy/1", fence) is True


def test_a_lapse_nobody_used_is_not_a_loss(worker: Worker, store: Any) -> None:
    run_id = f"r-{uuid.uuid4()}"
    lease_key, done_key = lease_keys(store, run_id)
    task_id = send(worker.tasks["paused"], run_id)
    first = wait_for(lambda: worker.seen.get(run_id), 10, "the callback to start")[0]["fence"]
    store.redis.delete(lease_key)  # lapsed; no copy came
    worker.seen.client.set(f"{worker.seen.prefix}:{run_id}:go", 1)
    wait_for(lambda: worker.seen.ended.get(task_id), 10, "the execution to end")
    assert worker.seen.get(run_id)[1:] == [{"check": first}]
    assert store.redis.exists(done_key) and not store.redis.exists(lease_key)


# -- F3: a group callback ------------------------------------------------------------------------


def test_every_member_of_a_group_callback_runs_once(worker: Worker, store: Any) -> None:
    """A group as on_complete: every member runs (as Celery runs a group), once; the same group
    dispatched again (a re-dispatch after a crash: same task id) runs none of them again."""
    run_id = f"r-{uuid.uuid4()}"
    record = worker.tasks["record"]
    sig = dict(group(record.s("a"), record.s("b"), record.s("c")))
    run = {"run_id": run_id, "status": "success", "payload": {}}
    fixed_id = str(uuid.uuid4())
    headers = {CALLBACK_HEADER: f"{run_id}|0"}

    def dispatch() -> list[str]:
        result = signature(sig, app=worker.app).apply_async(args=(run,), task_id=fixed_id, headers=headers)
        return [str(r.id) for r in result.results]

    first = dispatch()
    wait_for(lambda: len(worker.seen.get(run_id)) >= 3, 10, "every member to run")
    again = dispatch()
    wait_for(lambda: all(worker.seen.ended.get(t) for t in again), 10, "the second dispatch to be handled")
    assert sorted(e["tag"] for e in worker.seen.get(run_id)) == ["a", "b", "c"]
    assert all(worker.seen.ended.get(t) == 1 for t in first)
    assert not any(t in worker.seen.failed for t in first + again)


def test_the_threads_of_this_module_are_gone() -> None:
    """No heartbeat is left running once the callbacks ended."""
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("nen-callback-lease-")],
        10,
        "the heartbeats to stop",
    )

"""The beat sweep (reconcile_runs) repairing what a crash, a lost message or a silent Nen left."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from nen_celery import get_run, start_run
from nen_celery.lifecycle.completion import callback_task_id
from nen_celery.lifecycle.submit import enqueue_submit
from nen_celery.runtime.context import get_context
from nen_celery.worker import reconcile_runs
from tests.callbacks import calls, record
from tests.conftest import Stack, env
from tests.helpers import wait_for
from tests.test_lifecycle import post_webhook, posts_for, wait_callbacks

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"
FAST = {
    "NEN_RECONCILE_INTERVAL": "0.1",
    "NEN_QUEUED_GRACE": "0.3",
    "NEN_WEBHOOK_DEADLINE": "0.3",
    "NEN_REPOLL_INTERVAL": "0.2",
    "NEN_PARKED_GRACE": "0.2",
    "NEN_COMPLETION_LEASE": "0.3",
}
CALLBACKS = {"on_complete": dict(record.s(tag="complete")), "on_failure": dict(record.s(tag="failure"))}


def create(_: Any = None, **kwargs: Any) -> str:
    """A queued record written with the settings in force now (env() changes them)."""
    run_id = f"rec-{uuid.uuid4()}"
    assert get_context().store.create(
        run_id, kwargs.get("workflow_id", WF), {}, None, CALLBACKS["on_complete"], CALLBACKS["on_failure"]
    )
    return run_id


def test_queued_run_whose_submit_message_was_lost_is_resubmitted(
    stack: Stack, store: Any, beat: None
) -> None:
    with env(**FAST):
        run_id = create()  # recorded, but no submit_run message exists
        (call,) = wait_callbacks(run_id)
    assert call["run"]["status"] == "success"
    assert posts_for(stack, run_id) == 1
    stack.counter.wait_idle()
    assert len(calls(run_id)) == 1


def test_no_webhook_mode_follows_runs_through_the_retrieval_endpoint(stack: Stack, beat: None) -> None:
    with env(**FAST, NEN_WEBHOOK_URL="", NEN_POLL_INTERVAL="0.1"):
        handle = start_run(WF, {}, on_complete=record.s(tag="complete"))
        run = handle.wait(timeout=30)
        (call,) = wait_callbacks(handle.run_id)
    assert run.status == "success"
    assert "poll" in [h["source"] for h in run.history]
    assert call["run"]["payload"]["status"] == "success"


def test_terminal_run_whose_completion_was_lost_is_completed_once(
    stack: Stack, store: Any, beat: None
) -> None:
    with env(**FAST):
        store = get_context().store
        run_id = create()
        store.bind(run_id, f"m-{run_id}", {})
        # the worker died after applying the terminal status, before queueing complete_run
        assert store.apply(run_id, "success", source="test", payload={"status": "success"})[2] == "pending"
        (call,) = wait_callbacks(run_id)
    assert call["tag"] == "complete"
    stack.counter.wait_idle()
    assert len(calls(run_id)) == 1
    assert get_run(run_id).completion == "sent"  # type: ignore[union-attr]


def test_parked_webhooks_are_replayed_after_a_crash_between_bind_and_replay(
    stack: Stack, store: Any, beat: None
) -> None:
    with env(**FAST):
        store = get_context().store
        run_id = create()
        message_id = str(uuid.uuid4())
        assert store.claim_submit(run_id, 60, "holder", "x")[0] == "ok"  # keep the sweep from resubmitting
        body = {"workflow_id": WF, "message_id": message_id, "status": "failed"}
        assert post_webhook(stack, body).status_code in (200, 202)
        wait_for(lambda: store.parked(message_id), 10, "parked webhook")
        store.bind(run_id, message_id, {})  # ... and the worker died before replaying
        (call,) = wait_callbacks(run_id)
    assert call["tag"] == "failure" and call["run"]["status"] == "failed"
    assert not store.parked(message_id)


def test_unresolved_unknown_run_ends_submit_failed_and_calls_on_failure(
    stack: Stack, store: Any, beat: None
) -> None:
    with env(**FAST, NEN_UNKNOWN_TIMEOUT="0.5"):
        store = get_context().store
        run_id = create()
        store.apply(run_id, "unknown", source="test", error={"type": "ambiguous"})
        (call,) = wait_callbacks(run_id)
    assert call["tag"] == "failure"
    assert call["run"]["status"] == "submit_failed"
    assert call["run"]["error"]["type"] == "fate_unknown"
    assert posts_for(stack, run_id) == 0  # never resent


def test_run_that_never_finishes_times_out_failed(quiet_sim: Stack, beat: None) -> None:
    with env(**FAST, NEN_RUN_TIMEOUT="1.5"):
        handle = start_run(WF, {}, on_failure=record.s(tag="failure"))
        (call,) = wait_callbacks(handle.run_id)
    assert call["run"]["status"] == "failed"
    assert call["run"]["payload"]["type"] == "run_timeout"
    sources = [h["source"] for h in call["run"]["history"]]
    assert "poll" in sources  # it asked Nen before giving up
    assert sources[-1] == "reconcile:run_timeout"


def test_a_second_concurrent_sweep_is_a_no_op(stack: Stack, store: Any) -> None:
    assert store.acquire_reconcile_lock("other-beat", ttl=30)
    try:
        assert reconcile_runs.apply().get() == {"locked": 1}
        assert 0 < store.redis.pttl(store.reconcile_lock_key) <= 30_000  # it expires by itself
    finally:
        store.release_reconcile_lock("other-beat")
    assert "locked" not in reconcile_runs.apply().get()


def test_sweep_reads_only_due_runs(stack: Stack, store: Any) -> None:
    pipe = store.redis.pipeline(transaction=False)
    for i in range(2000):  # finished runs: no timer, never read again
        pipe.hset(store.run_key(f"old-{i}"), mapping={"status": "success", "completion": "sent"})
    pipe.execute()
    # Timers left by earlier tests' (finished) runs could fall due mid-sweep: push them an hour out
    # so the only due runs are this test's three.
    stack.counter.wait_idle()
    later = time.time() + 3600
    leftover = list(store.timers())
    store.set_timers({rid: later for rid in leftover}, [])
    due = [create(store) for _ in range(3)]
    store.set_timers({rid: 0 for rid in due}, [])
    with env(NEN_QUEUED_GRACE="60"):
        counts = reconcile_runs.apply().get()
    run_actions = sum(n for action, n in counts.items() if not action.startswith("parked_"))
    assert run_actions == 3 and counts["resubmit"] == 3
    stack.counter.wait_idle()
    for rid in due:
        wait_callbacks(rid)


def test_redrive_starts_a_new_attempt_and_keeps_history(stack: Stack, store: Any) -> None:
    wid = str(uuid.uuid4())
    stack.sim.state.config.unknown_workflows.add(wid)
    handle = start_run(wid, {}, on_complete=record.s(tag="complete"), on_failure=record.s(tag="failure"))
    assert handle.wait(timeout=20).status == "rejected"
    wait_callbacks(handle.run_id)
    stack.sim.state.config.unknown_workflows.discard(wid)
    assert store.redrive(handle.run_id) == ("ok", f"{handle.run_id}.1")
    assert store.redrive(handle.run_id)[0] == "refused"  # queued again: not redrivable
    enqueue_submit(handle.run_id, wid)
    wait_for(lambda: len(calls(handle.run_id)) == 2, 20, "second attempt's callback")
    run = handle.wait(timeout=20)
    assert run.status == "success" and run.redrives == 1
    assert [c["tag"] for c in calls(handle.run_id)] == ["failure", "complete"]
    assert run.previous_errors[0]["status_code"] == 404
    assert [h["source"] for h in run.history][:3] == ["start_run", "nen:404", "redrive"]
    stats = stack.sim.stats()["posts_by_idempotency_key"]
    assert stats[handle.run_id] == 1 and stats[f"{handle.run_id}.1"] == 1


def test_a_callback_the_broker_took_is_never_dispatched_again(stack: Stack, beat: None) -> None:
    """Once the broker has the callback message, nothing re-sends it, however long the sweep
    runs: whether it ran is the broker's and the callback task's business (a user's task has
    no nen base class to report back). Before, a callback without one was re-dispatched every
    NEN_CALLBACK_TIMEOUT until its record expired."""
    with env(**FAST, NEN_CALLBACK_TIMEOUT="0.2"):
        store = get_context().store
        sent = create()
        store.bind(sent, f"m-{sent}", {})
        store.apply(sent, "success", source="test", payload={"status": "success"})
        assert store.claim_completion(sent, "holder")[0] == "claimed"
        assert store.finish_completion(sent, "cb-sent", "holder", 0)  # published... and the message vanished
        # a due timer, as a record of the earlier layout kept one to check on the callback
        store.redis.zadd(store.timers_key(sent), {sent: time.time() - 1})
        handle = start_run(WF, {}, on_complete=record.s(tag="complete"))
        (call,) = wait_callbacks(handle.run_id)
        wait_for(lambda: store.redis.zscore(store.timers_key(sent), sent) is None, 10, "timer dropped")
        sweeps = stack.counter.finished["nen_celery.reconcile_runs"]
        wait_for(
            lambda: stack.counter.finished["nen_celery.reconcile_runs"] >= sweeps + 5, 20, "five more sweeps"
        )
    stack.counter.wait_idle()
    assert call["run"]["run_id"] == handle.run_id and len(calls(handle.run_id)) == 1
    assert calls(sent) == []
    assert store.raw(sent)["completion"] == "sent"


def test_a_dispatch_that_died_before_it_was_marked_sent_goes_out_again_under_the_same_id(
    stack: Stack, beat: None
) -> None:
    """The one window: the claim's holder died before recording that the broker had the
    callback. The lease lapses, the sweep dispatches it (once), under the attempt's own task id."""
    with env(**FAST):
        store = get_context().store
        run_id = create()
        store.bind(run_id, f"m-{run_id}", {})
        store.apply(run_id, "success", source="test", payload={"status": "success"})
        assert store.claim_completion(run_id, "a-holder-that-died")[0] == "claimed"
        (call,) = wait_callbacks(run_id)
        wait_for(lambda: store.raw(run_id).get("completion") == "sent", 10, "completion sent")
    stack.counter.wait_idle()
    assert len(calls(run_id)) == 1 and call["run"]["status"] == "success"
    assert store.raw(run_id)["callback_task_id"] == callback_task_id(run_id, "success")

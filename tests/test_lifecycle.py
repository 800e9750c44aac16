"""The whole life of a run over real Redis, a real Celery worker and real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from nen_celery import (
    InvalidParams,
    RunConflict,
    get_run,
    register_workflow,
    start_run,
    unregister_workflow,
)
from nen_celery.domain.signing import webhook_signature
from nen_celery.errors import ConfigurationError
from nen_celery.lifecycle.submit import bind_accepted
from nen_celery.runtime.context import get_context
from tests.callbacks import attempts, calls, record, retry_once
from tests.conftest import SIM_WEBHOOK_SECRET, Stack, env
from tests.helpers import free_port, snapshot, wait_for

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"


class Params(BaseModel):
    PATIENT_NAME: str
    DATE_OF_BIRTH: str


class Secure(BaseModel):
    password: str


@pytest.fixture
def registered() -> Iterator[None]:
    register_workflow(WF, params=Params, secure_params=Secure)
    yield
    unregister_workflow(WF)


def start(**kwargs: Any) -> Any:
    return start_run(
        kwargs.pop("workflow_id", WF),
        kwargs.pop("params", {"PATIENT_NAME": "Jane Doe", "DATE_OF_BIRTH": "1990-01-15"}),
        on_complete=record.s(tag="complete"),
        on_failure=record.s(tag="failure"),
        **kwargs,
    )


def wait_callbacks(run_id: str, n: int = 1) -> list[dict[str, Any]]:
    return wait_for(lambda: len(calls(run_id)) >= n and calls(run_id), 20, f"{n} callback(s) for {run_id}")


def posts_for(stack: Stack, run_id: str) -> int:
    return int(stack.sim.stats()["posts_by_idempotency_key"].get(run_id, 0))


def sign(body: bytes) -> dict[str, str]:
    return {
        "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body),
        "content-type": "application/json",
    }


def post_webhook(stack: Stack, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return httpx.post(stack.webhook_url, content=body, headers=sign(body), timeout=10)


@pytest.mark.usefixtures("registered")
def test_success_with_secure_params_signed_and_accepted(stack: Stack) -> None:
    handle = start(secure_params={"password": "pw-marker-ae81"})
    run = handle.wait(timeout=20)
    assert run.status == "success"
    (call,) = wait_callbacks(handle.run_id)
    stack.counter.wait_idle()
    assert calls(handle.run_id) == [call]  # exactly one callback, the right one
    assert call["tag"] == "complete"
    done = call["run"]
    assert done["run_id"] == handle.run_id and done["workflow_id"] == WF
    assert done["status"] == "success" and done["message_id"] == run.message_id
    assert done["payload"]["status"] == "success" and done["payload"]["message_id"] == run.message_id
    assert done["payload"]["result"]["files"][0]["url"].startswith("https://")
    assert [h["status"] for h in run.history] == ["queued", "submitted", "processing", "success"]
    assert run.finished_at and run.submitted_at and run.created_at <= run.submitted_at <= run.finished_at
    assert posts_for(stack, handle.run_id) == 1
    # the secret is gone from Redis once Nen accepted the run, and never in the record
    store = get_context().store
    assert not stack.redis.exists(store.secure_key(handle.run_id))
    assert "pw-marker-ae81" not in json.dumps(stack.redis.hgetall(store.run_key(handle.run_id)))
    assert "pw-marker-ae81" not in json.dumps(run.to_dict())


def test_failed_run_calls_on_failure_once(stack: Stack) -> None:
    wid = str(uuid.uuid4())
    stack.sim.state.config.fail_workflows.add(wid)
    handle = start(workflow_id=wid, params={"X": 1})
    assert handle.wait(timeout=20).status == "failed"
    (call,) = wait_callbacks(handle.run_id)
    stack.counter.wait_idle()
    assert len(calls(handle.run_id)) == 1
    assert call["tag"] == "failure" and call["run"]["status"] == "failed"
    assert call["run"]["payload"]["error"]["code"] == "workflow_failed"


def test_unknown_workflow_is_rejected_with_nen_error_body(stack: Stack) -> None:
    wid = str(uuid.uuid4())
    stack.sim.state.config.unknown_workflows.add(wid)
    handle = start(workflow_id=wid, params={})
    run = handle.wait(timeout=20)
    assert run.status == "rejected"
    assert run.error is not None and run.error["status_code"] == 404
    assert run.error["error"] == "workflow_not_found" and "body" not in run.error
    (call,) = wait_callbacks(handle.run_id)
    assert call["tag"] == "failure" and call["run"]["status"] == "rejected"
    assert call["run"]["payload"]["status_code"] == 404
    assert posts_for(stack, handle.run_id) == 1


def test_invalid_params_change_nothing(stack: Stack) -> None:
    register_workflow(WF, params=Params, secure_params=Secure)
    stack.counter.wait_idle()  # earlier tests' tasks settled: only this test could change state
    before_keys = snapshot(stack.redis, "*")
    before_posts = stack.sim.stats()["posts"]
    published = sum(stack.counter.published.values())
    try:
        with pytest.raises(InvalidParams, match=r"params\.EXTRA"):
            start(
                params={"PATIENT_NAME": "J", "DATE_OF_BIRTH": "x", "EXTRA": 1},
                secure_params={"password": "x"},
            )
        with pytest.raises(InvalidParams, match="workflow_id"):
            start(workflow_id="not-a-uuid")
        with pytest.raises(TypeError, match="on_complete"):
            start_run(str(uuid.uuid4()), {}, on_complete=print)  # type: ignore[arg-type]
    finally:
        unregister_workflow(WF)
    assert snapshot(stack.redis, "*") == before_keys
    assert stack.sim.stats()["posts"] == before_posts
    assert sum(stack.counter.published.values()) == published


def test_secure_params_refused_without_secrets_key(stack: Stack) -> None:
    stack.counter.wait_idle()
    before = snapshot(stack.redis, "*")
    with env(NEN_SECRETS_KEY=""), pytest.raises(ConfigurationError, match="NEN_SECRETS_KEY"):
        start(params={}, secure_params={"password": "x"})
    assert snapshot(stack.redis, "*") == before


def test_duplicate_and_out_of_order_webhooks_fire_one_callback(quiet_sim: Stack) -> None:
    stack = quiet_sim
    handle = start(params={"A": "b"})
    run = wait_for(lambda: (r := get_run(handle.run_id)) and r.message_id and r, 20, "binding")
    base = {"workflow_id": WF, "message_id": run.message_id, "expires_at": int(time.time()) + 60}
    terminal = {**base, "status": "success", "result": {"files": []}}
    # terminal first, then the same terminal 5 times concurrently, then a stale processing
    assert post_webhook(stack, terminal).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: post_webhook(stack, terminal).status_code, range(5)))
    assert codes == [200] * 5
    assert post_webhook(stack, {**base, "status": "processing"}).status_code == 200
    assert post_webhook(stack, {**base, "status": "failed"}).status_code == 200
    wait_callbacks(handle.run_id)
    stack.counter.wait_idle()
    assert [c["tag"] for c in calls(handle.run_id)] == ["complete"]
    final = get_run(handle.run_id)
    assert final is not None and final.status == "success"
    assert [h["status"] for h in final.history] == ["queued", "submitted", "success"]


def test_webhook_before_binding_is_parked_then_applied(stack: Stack, store: Any) -> None:
    run_id = f"early-{uuid.uuid4()}"
    message_id = str(uuid.uuid4())
    assert store.create(run_id, WF, {}, None, dict(record.s(tag="complete")), None)
    body = {"workflow_id": WF, "message_id": message_id, "status": "success", "expires_at": 1}
    answer = post_webhook(stack, body)  # unknown messageId: accepted and parked, not an error
    assert answer.status_code == 202 and answer.json()["status"] == "parked"
    wait_for(lambda: stack.redis.exists(get_context().store.parked_key(message_id)), 10, "parked webhook")
    assert post_webhook(stack, {**body, "status": "processing"}).status_code == 202
    wait_for(lambda: stack.redis.llen(get_context().store.parked_key(message_id)) == 2, 10, "2 parked")
    # what submit_run does once the 202 is in: bind, then replay what was parked
    assert bind_accepted(run_id, message_id, {"messageId": message_id}) == "success"
    (call,) = wait_callbacks(run_id)
    assert call["run"]["status"] == "success" and call["run"]["message_id"] == message_id
    assert not stack.redis.exists(get_context().store.parked_key(message_id))
    run = get_run(run_id)
    assert run is not None
    assert [h["source"] for h in run.history] == ["start_run", "nen:202", "webhook:parked"]
    # later webhooks find the binding directly
    assert post_webhook(stack, body).status_code == 200
    stack.counter.wait_idle()
    assert len(calls(run_id)) == 1


def test_bad_webhooks_are_refused_and_change_nothing(stack: Stack) -> None:
    good = json.dumps({"workflow_id": WF, "message_id": "m", "status": "success"}).encode()
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (good, {"content-type": "application/json"}, 401),
        (good, {"X-Hmac-Signature": "sha256=" + "0" * 64, "content-type": "application/json"}, 401),
        (good, {**sign(good), "X-Hmac-Signature": webhook_signature("other", good)}, 401),
        (b"{not json", sign(b"{not json"), 400),
        (b"[1,2]", sign(b"[1,2]"), 400),
        (b'{"status":"success"}', sign(b'{"status":"success"}'), 400),
        (b'{"message_id":"m","status":"done"}', sign(b'{"message_id":"m","status":"done"}'), 400),
        (b"x" * (1024 * 1024 + 1), sign(b"x" * (1024 * 1024 + 1)), 413),
        (good, {**sign(good), "content-type": "text/plain"}, 415),
    ]
    stack.counter.wait_idle()
    before = snapshot(stack.redis, "*")
    published = sum(stack.counter.published.values())
    for body, headers, expected in cases:
        response = httpx.post(stack.webhook_url, content=body, headers=headers, timeout=10)
        assert response.status_code == expected, (body[:40], response.text)
        assert response.json()["error"]
    assert httpx.get(stack.webhook_url).status_code == 405
    assert snapshot(stack.redis, "*") == before
    assert sum(stack.counter.published.values()) == published


def test_healthz(stack: Stack) -> None:
    assert httpx.get(stack.receiver_url + "/healthz").json() == {"status": "ok"}


def test_nen_unreachable_ends_submit_failed_after_bounded_reschedules(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with (
        caplog.at_level(logging.WARNING, logger="nen_celery"),
        env(NEN_API_URL=unreachable, NEN_SUBMIT_DEADLINE="0.3", NEN_SUBMIT_RESCHEDULES="2"),
    ):
        handle = start(params={})
        run = handle.wait(timeout=30)
        (call,) = wait_callbacks(handle.run_id)
    assert run.status == "submit_failed"
    assert run.error is not None and "ConnectError" in run.error["message"]
    assert run.attempts >= 3  # in-task retries in each of the three executions
    assert call["tag"] == "failure" and call["run"]["status"] == "submit_failed"
    # Exactly NEN_SUBMIT_RESCHEDULES re-schedules through Celery, then the end: no more, no fewer.
    rescheduled = [
        r.getMessage().rsplit("(", 1)[1]
        for r in caplog.records
        if handle.run_id in r.getMessage() and "re-scheduling" in r.getMessage()
    ]
    assert rescheduled == ["1/2)", "2/2)"]


def test_same_run_id_is_idempotent_and_conflicts_are_refused(stack: Stack) -> None:
    run_id = f"order-{uuid.uuid4()}"
    first = start(params={"A": 1}, run_id=run_id)
    again = start(params={"A": 1}, run_id=run_id)
    assert again.run_id == first.run_id
    with pytest.raises(RunConflict):
        start(params={"A": 2}, run_id=run_id)
    with pytest.raises(ValueError, match="run_id"):
        start(params={}, run_id="bad id with spaces")
    assert first.wait(timeout=20).status == "success"
    wait_callbacks(run_id)
    stack.counter.wait_idle()
    assert posts_for(stack, run_id) == 1 and len(calls(run_id)) == 1


def test_wait_times_out_naming_the_status(quiet_sim: Stack) -> None:
    handle = start(params={})
    with pytest.raises(TimeoutError, match=handle.run_id):
        handle.wait(timeout=0.2)


def test_many_runs_each_complete_once(stack: Stack) -> None:
    handles = [start(params={"I": i}) for i in range(30)]
    for h in handles:
        assert h.wait(timeout=30).status == "success"
        wait_callbacks(h.run_id)
    stack.counter.wait_idle()
    assert all(len(calls(h.run_id)) == 1 for h in handles)
    assert all(posts_for(stack, h.run_id) == 1 for h in handles)


def test_a_callback_that_asks_for_a_retry_runs_again_with_its_arguments_still_hidden(stack: Stack) -> None:
    """A retry is the callback's own business: the retried message runs. Celery rebuilds it
    without argsrepr/kwargsrepr; CallbackTask.retry (the ready-made app's task class, optional
    for a user's callbacks) keeps them, so the retry does not show the run's payload (result
    URLs) in Flower or the logs."""
    handle = start_run(WF, {"PATIENT_NAME": "Jane"}, on_complete=retry_once.s(tag="retried"))
    wait_for(lambda: len(calls(handle.run_id)) == 1, 30, "the retried callback to finish")
    first, second = attempts(handle.run_id)
    assert (first["retries"], second["retries"]) == (0, 1)
    assert second["argsrepr"] == first["argsrepr"]
    assert first["argsrepr"].startswith(f"({{'run_id': {handle.run_id!r}, 'status': 'success', ")
    assert second["kwargsrepr"] == first["kwargsrepr"]
    assert "http" not in second["argsrepr"] + second["kwargsrepr"]
    assert calls(handle.run_id)[0]["tag"] == "retried"
    stack.counter.wait_idle()
    assert len(attempts(handle.run_id)) == 2  # and no third run

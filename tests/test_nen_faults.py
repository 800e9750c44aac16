"""Nen misbehaving, injected through the simulator over HTTP: each fault classified, no workflow
started twice, every run ending in exactly one callback."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from nen_celery import get_run, start_run
from nen_celery.web.asgi import create_app
from tests.callbacks import calls, record
from tests.conftest import Stack, env
from tests.helpers import free_port, free_socket, wait_for
from tests.test_lifecycle import posts_for, wait_callbacks
from tests.test_reconcile import FAST

pytestmark = [pytest.mark.integration, pytest.mark.faults]

WF = "12345678-1234-1234-1234-123456789abc"
LOOKUP = {"NEN_LOOKUP_PATH": "/runs?idempotency_key={idempotency_key}"}


@pytest.fixture
def sim(stack: Stack) -> Iterator[Stack]:
    """The stack, with simulator faults reset before and after the test."""
    stack.sim.reset()
    configure(stack, processing_delay=0.02, terminal_delay=0.02)
    yield stack
    stack.counter.wait_idle()
    stack.sim.reset()
    configure(stack, processing_delay=0.02, terminal_delay=0.02)


def configure(stack: Stack, **values: Any) -> None:
    response = httpx.post(f"{stack.sim.url}/_sim/config", json=values, timeout=5)
    assert response.status_code == 200, response.text


def start() -> Any:
    return start_run(WF, {"A": "b"}, on_complete=record.s(tag="complete"), on_failure=record.s(tag="failure"))


def runs_created_for(stack: Stack, key: str) -> int:
    return sum(1 for r in stack.sim.stats()["runs"].values() if r["idempotency_key"] == key)


def one_callback(stack: Stack, run_id: str, tag: str = "complete") -> dict[str, Any]:
    (call,) = wait_callbacks(run_id)
    stack.counter.wait_idle()
    assert [c["tag"] for c in calls(run_id)] == [tag]
    return call["run"]


@pytest.mark.parametrize("statuses", [[503, 503, 503], [429, 503]])
def test_error_bursts_are_retried_and_start_the_workflow_once(sim: Stack, statuses: list[int]) -> None:
    configure(sim, post_errors=[{"status": s, "retry_after": 0} for s in statuses])
    handle = start()
    run = one_callback(sim, handle.run_id)
    assert run["status"] == "success" and run["attempts"] == len(statuses) + 1
    assert posts_for(sim, handle.run_id) == len(statuses) + 1
    assert runs_created_for(sim, handle.run_id) == 1


def test_429_retry_after_is_honoured(sim: Stack) -> None:
    configure(sim, post_errors=[{"status": 429, "retry_after": 1}])
    handle = start()
    run = one_callback(sim, handle.run_id)
    assert run["status"] == "success"
    submitted = next(h["at"] for h in run["history"] if h["status"] == "submitted")
    assert submitted - run["created_at"] >= 1.0  # waited at least Retry-After before resending


@pytest.mark.parametrize(
    "fault",
    [{"post_latency": 5.0}, {"bad_accept_body": 1}, {"drop_after_accept": 1}],
    ids=["slow-past-read-timeout", "202-not-json", "connection-dropped"],
)
def test_ambiguous_answers_park_the_run_and_never_resend(sim: Stack, fault: dict[str, Any]) -> None:
    configure(sim, **fault)
    with env(NEN_WEBHOOK_RUN_PARAM=""):  # no run hint: Nen's webhooks cannot name the run
        handle = start()
        run = wait_for(lambda: (r := get_run(handle.run_id)) and r.status == "unknown" and r, 20, "unknown")
        assert run.error is not None
        sim.counter.wait_idle()
        assert posts_for(sim, handle.run_id) == 1  # Nen got it once; we did not ask again
        assert runs_created_for(sim, handle.run_id) == 1  # ... and it did start the workflow
        assert get_run(handle.run_id).status == "unknown"  # its webhooks were kept, not guessed at


@pytest.mark.parametrize(
    "fault",
    [{"post_latency": 5.0}, {"bad_accept_body": 1}, {"drop_after_accept": 1}],
    ids=["slow-past-read-timeout", "202-not-json", "connection-dropped"],
)
def test_unknown_runs_are_found_by_their_own_webhooks_through_the_run_hint(
    sim: Stack, fault: dict[str, Any]
) -> None:
    """The 202 was lost, but Nen calls back the URL it was given, which names the run: the
    webhook binds the unknown run to its messageId and completes it. No lookup endpoint, no
    second POST."""
    configure(sim, **fault)
    handle = start()
    run = one_callback(sim, handle.run_id)
    assert run["status"] == "success"
    history = [(h["status"], h["source"]) for h in run["history"]]
    assert ("unknown", "submit:ambiguous") in history and ("submitted", "webhook:run_hint") in history
    made = [m for m, r in sim.sim.stats()["runs"].items() if r["idempotency_key"] == handle.run_id]
    assert made == [run["message_id"]]  # bound to the messageId Nen made for it
    assert posts_for(sim, handle.run_id) == 1 and runs_created_for(sim, handle.run_id) == 1


@pytest.mark.parametrize(
    "fault",
    [{"post_latency": 5.0}, {"bad_accept_body": 1}, {"drop_after_accept": 1}],
    ids=["slow-past-read-timeout", "202-not-json", "connection-dropped"],
)
def test_unknown_runs_are_resolved_by_lookup_when_nen_offers_it(
    sim: Stack, beat: None, fault: dict[str, Any]
) -> None:
    configure(sim, lookup_by_idempotency_key=True, **fault)
    with env(**FAST, **LOOKUP, NEN_WEBHOOK_RUN_PARAM=""):  # without the hint, only a lookup finds it
        handle = start()
        run = one_callback(sim, handle.run_id)
    assert run["status"] == "success"
    sources = [h["source"] for h in run["history"]]
    assert "unknown" in [h["status"] for h in run["history"]] and "nen:202" in sources
    assert posts_for(sim, handle.run_id) == 1 and runs_created_for(sim, handle.run_id) == 1


def test_lookup_that_finds_nothing_resubmits_once(sim: Stack, beat: None, store: Any) -> None:
    configure(sim, lookup_by_idempotency_key=True)
    with env(**FAST, **LOOKUP):
        run_id = f"lk-{uuid.uuid4()}"
        from nen_celery.runtime.context import get_context

        ctx_store = get_context().store
        assert ctx_store.create(run_id, WF, {}, None, dict(record.s(tag="complete")), None)
        ctx_store.apply(run_id, "unknown", source="test")  # a POST that never reached Nen
        run = one_callback(sim, run_id)
    assert run["status"] == "success"
    assert posts_for(sim, run_id) == 1


def test_opt_in_read_timeout_retry_reuses_the_idempotency_key(sim: Stack) -> None:
    configure(sim, post_latency=5.0, honour_idempotency_key=True)
    with env(NEN_RETRY_READ_TIMEOUT="true", NEN_SUBMIT_DEADLINE="20"):
        handle = start()
        wait_for(lambda: posts_for(sim, handle.run_id) >= 2, 30, "a second POST")
        configure(sim, post_latency=0.0)
        run = one_callback(sim, handle.run_id)
    assert run["status"] == "success"
    assert runs_created_for(sim, handle.run_id) == 1  # Nen deduplicated by the key


def test_connection_refused_for_a_while_then_success(sim: Stack) -> None:
    with env(NEN_SUBMIT_RESCHEDULES="10", NEN_RESCHEDULE_DELAY="0.3", NEN_SUBMIT_DEADLINE="0.3"):
        with env(NEN_API_URL=f"http://127.0.0.1:{free_port()}"):
            handle = start()
            wait_for(lambda: (r := get_run(handle.run_id)) and r.attempts >= 2, 20, "failed attempts")
        run = one_callback(sim, handle.run_id)  # Nen is back (the real simulator URL)
    assert run["status"] == "success"
    assert posts_for(sim, handle.run_id) == 1


def test_webhooks_that_never_come_are_replaced_by_polling(sim: Stack, beat: None) -> None:
    configure(sim, webhook_drop=["processing", "success", "failed"])
    with env(**FAST):
        handle = start()
        run = one_callback(sim, handle.run_id)
    assert run["status"] == "success" and run["history"][-1]["source"] == "poll"


def test_terminal_webhook_before_processing(sim: Stack) -> None:
    configure(sim, webhook_reorder=True, webhook_duplicates=2)
    handle = start()
    run = one_callback(sim, handle.run_id)
    assert run["status"] == "success"
    # all 3 copies of the terminal webhook answered, then all 3 of the late processing one
    wait_for(lambda: sim.sim.stats()["webhooks_sent"] >= 6, 20, "the six deliveries")
    sim.counter.wait_idle()
    final = get_run(handle.run_id)
    assert final is not None and final.status == "success"
    # The receiver applies a processing webhook itself, so one that comes while the terminal
    # webhook's ingest task still waits in the queue is applied first (a legal order); one that
    # comes after it changes nothing. Never a status after the terminal one.
    assert [h["status"] for h in final.history] in (
        ["queued", "submitted", "success"],
        ["queued", "submitted", "processing", "success"],
    )


def test_receiver_down_for_a_while_gets_the_webhooks_later(sim: Stack) -> None:
    sim.sim.state.config.delivery_attempts = 20  # Nen keeps redelivering (policy undocumented)
    sock = free_socket()  # bound, not listening yet: deliveries are refused
    port = sock.getsockname()[1]
    with env(NEN_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/nen"):
        handle = start()
        wait_for(lambda: sim.sim.stats()["webhooks_attempted"] >= 2, 20, "refused deliveries")
        assert get_run(handle.run_id).status == "submitted"  # type: ignore[union-attr]
        server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()  # the receiver comes up
        try:
            run = one_callback(sim, handle.run_id)
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
    assert run["status"] == "success"

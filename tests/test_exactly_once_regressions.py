"""Issue 25's reproduced findings, one named regression case each (the numbers are the issue's).

Each case failed on 28c121c, the commit before the fix.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from nen_celery.domain.hints import RunRef, hint_from_query, hint_key, url_with_run
from nen_celery.domain.signing import webhook_signature
from tests.conftest import SIM_WEBHOOK_SECRET, Stack, env
from tests.helpers import run_ref, wait_for

WF = "12345678-1234-1234-1234-123456789abc"


@pytest.mark.parametrize("attempt", ["²", "٣", "1²", "１", "+1", " 1", "1_0", "1234567"])  # noqa: RUF001
def test_finding_10_a_hint_attempt_is_ascii_digits_only(attempt: str) -> None:
    assert hint_from_query(f"nen_run=abc~{attempt}~tok", "nen_run") is None
    assert hint_from_query("nen_run=abc~12~tok", "nen_run") is not None


@pytest.mark.integration
@pytest.mark.parametrize("attempt", ["%C2%B2", "%D9%A3"])  # "²" and "٣", URL-encoded
def test_finding_10_an_odd_hint_on_a_signed_webhook_is_no_server_error(stack: Stack, attempt: str) -> None:
    stack.counter.wait_idle()
    body = json.dumps({"workflow_id": WF, "message_id": f"odd-{uuid.uuid4()}", "status": "processing"})
    headers = {
        "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body.encode()),
        "Content-Type": "application/json",
    }
    url = f"{stack.webhook_url}?nen_run=abc~{attempt}~AAAAAAAAAAAAAAAAAAAAAA"
    answer = httpx.post(url, content=body, headers=headers, timeout=10)
    assert answer.status_code < 500, answer.text
    stack.counter.wait_idle()


@pytest.mark.parametrize(
    "body",
    [
        {"timestamp": "2026-12-06T10:00:00Z", "status": 503, "error": "Service Unavailable", "path": "/runs"},
        {"status": 503, "error": "Service Unavailable"},
        {"error": "Service Unavailable", "message": "upstream"},
        {"error": "service_unavailable", "message": "x", "requestId": "abc"},
        {"error": "", "message": "x"},
        {"error": ["x"], "message": "x"},
    ],
)
def test_finding_12_a_gateways_json_503_is_not_taken_for_nens_and_resent(body: dict[str, object]) -> None:
    from nen_celery.nen.retryable import classify_status

    error = classify_status(503, body, retryable_statuses=frozenset({429, 503}), retry_after=None, now=0.0)
    assert not error.retryable and error.maybe_sent
    nens = classify_status(
        503,
        {"error": "service_unavailable", "message": "try later"},
        retryable_statuses=frozenset({429, 503}),
        retry_after=None,
        now=0.0,
    )
    assert nens.retryable and not nens.maybe_sent


@pytest.mark.integration
def test_finding_9_a_run_another_start_run_adopted_survives_its_creators_failed_queueing(
    stack: Stack, beat: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two start_run calls with one run_id at once: B gets its handle (the same run), then A's
    publish fails. A's undo must leave the run B's caller holds; the sweep submits it."""
    from kombu.exceptions import OperationalError

    from nen_celery import get_run, start_run
    from nen_celery.lifecycle import submit
    from tests.callbacks import calls, record

    real = submit.enqueue_submit
    run_id = f"race-{uuid.uuid4()}"
    params = {"PATIENT_NAME": "Jane Doe", "DATE_OF_BIRTH": "1990-01-15"}
    adopted: list[Any] = []

    def a_fails_after_b_started(rid: str, wid: str) -> None:
        if not adopted:  # A: between its create and its publish, B starts the same run
            adopted.append(start_run(WF, params, run_id=run_id, on_complete=record.s(tag="complete")))
            raise OperationalError("broker down")
        real(rid, wid)

    monkeypatch.setattr(submit, "enqueue_submit", a_fails_after_b_started)  # a broker failure
    with env(NEN_QUEUED_GRACE="0.3"), pytest.raises(OperationalError):
        start_run(WF, params, run_id=run_id, on_complete=record.s(tag="complete"))
    assert adopted and adopted[0].run_id == run_id
    run = get_run(run_id)
    assert run is not None and run.status == "queued"  # B's run is still there ...
    with env(NEN_QUEUED_GRACE="0.3"):
        assert adopted[0].wait(timeout=20).status == "success"  # ... and runs, once
    wait_for(lambda: calls(run_id), 20, "the callback")
    stack.counter.wait_idle()
    assert [c["tag"] for c in calls(run_id)] == ["complete"]


def test_finding_9_start_run_removes_only_what_its_own_call_created(store: Any) -> None:
    run_id = f"undo-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None, creator="call-a")
    assert not store.uncreate(run_id, "call-b")  # not B's to remove
    assert store.adopt(run_id, WF, store.raw(run_id)["params"])
    assert not store.uncreate(run_id, "call-a")  # adopted: A's undo leaves it
    assert store.raw(run_id)["status"] == "queued"
    other = f"undo-{uuid.uuid4()}"
    assert store.create(other, WF, {"A": 1}, None, None, None, creator="call-a")
    assert not store.adopt(other, WF, '{"A": 2}')  # a compare-and-set on what the caller read
    assert store.uncreate(other, "call-a") and store.raw(other) == {}


@pytest.mark.integration
def test_finding_7_the_sweep_never_ends_a_run_from_a_stale_read(store: Any) -> None:
    """The sweep read the run as `unknown`; a hinted webhook then bound it (`processing`); the
    sweep's end (submit_failed after the unknown timeout) must change nothing."""
    from nen_celery.domain.status import Status
    from nen_celery.lifecycle.completion import end_run

    run_id = f"stale-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    assert store.apply(run_id, Status.UNKNOWN, source="t", expect=Status.QUEUED)[0] == "applied"
    read = store.raw(run_id)["status"]  # what the sweep's decision is taken on
    assert store.apply(run_id, Status.PROCESSING, source="webhook")[0] == "applied"
    end_run(run_id, Status.SUBMIT_FAILED, {"error": "fate_unknown"}, "reconcile:unknown_timeout", expect=read)
    after = store.raw(run_id)
    assert after["status"] == "processing" and not after.get("completion") and not after.get("finished_at")


@pytest.mark.integration
def test_finding_7_every_end_is_a_compare_and_set_on_the_status_read(store: Any) -> None:
    from nen_celery.domain.status import Status

    run_id = f"cas-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    assert store.apply(run_id, Status.UNKNOWN, source="t")[0] == "applied"
    # a move the table allows (unknown -> submit_failed), but from a read the run has left
    verdict, now, completion = store.apply(run_id, Status.SUBMIT_FAILED, source="t", expect=Status.QUEUED)
    assert (verdict, now, completion) == ("stale", "unknown", "")
    verdict, now, completion = store.apply(run_id, Status.SUBMIT_FAILED, source="t", expect=Status.UNKNOWN)
    assert (verdict, now, completion) == ("applied", "submit_failed", "pending")


# -- findings 6 and 8: a run's end is recorded once; redrive clears the whole attempt --------------
def _late_run(store: Any, tag: str) -> tuple[str, str]:
    """A run whose POST's fate was unknown and that the sweep ended submit_failed (it "may have
    started in Nen"); (run_id, Nen's messageId for it)."""
    run_id = f"{tag}-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, {"task": "cb.ok"}, {"task": "cb.fail"})
    assert store.claim_submit(run_id, 30, "submit-1", "x1").verdict == "ok"
    assert store.begin_post(run_id, "x1") == 1  # the POST went out; its answer was lost
    assert store.apply(run_id, "unknown", source="submit:ambiguous")[0] == "applied"
    error = {"type": "fate_unknown"}
    ended = store.apply(run_id, "submit_failed", source="reconcile:unknown_timeout", error=error)
    assert ended == ("applied", "submit_failed", "pending")
    return run_id, f"m-{uuid.uuid4()}"


def _forget(store: Any, run_id: str, *message_ids: str) -> None:
    """Its callbacks are not real signatures: no later test's sweep may find it due."""
    store.redis.zrem(store.timers_key(run_id), run_id)
    store.redis.delete(store.run_key(run_id), store.run_parked_key(run_id), store.secure_key(run_id))
    for message_id in message_ids:
        store.redis.delete(store.msg_key(message_id))


def _webhook(message_id: str, status: str) -> tuple[dict[str, Any], str]:
    body = {"message_id": message_id, "status": status, "workflow_id": WF}
    return body, json.dumps(body)


@pytest.mark.integration
def test_finding_6_a_late_success_after_an_undelivered_on_failure_sends_no_on_complete(store: Any) -> None:
    """on_failure is claimed (the completion ``sending``), its worker dies before ``sent``, Nen's
    late success arrives, and the sweep claims the completion after the lease: it must dispatch
    the same on_failure (same status, same callback task id), never on_complete. Nen's word is
    on the run in fields of its own (``nen_status``); the end (status, finished_at, payload)
    stays as recorded."""
    import time

    from nen_celery.lifecycle.completion import callback_task_id
    from nen_celery.store.scripts import ClaimCompletionArgs

    run_id, message_id = _late_run(store, "f6")
    try:
        first = store.claim_completion(run_id, "complete-1")
        assert (first.verdict, first.data["status"]) == ("claimed", "submit_failed")  # on_failure
        ended = store.raw(run_id)
        body, raw = _webhook(message_id, "success")
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="ingest-1")[:2] == (
            "late",
            "submit_failed",
        )
        lapsed = time.time() + 2 * store.settings.completion_lease  # the sweep, after the lease
        verdict, _, flat = store._call(
            ClaimCompletionArgs(run_id, now=lapsed, lease=store.settings.completion_lease, holder="sweep-1")
        )
        again = dict(zip(flat[::2], flat[1::2], strict=True))
        assert verdict == "claimed" and again["status"] == "submit_failed"
        assert callback_task_id(run_id, again["status"]) == callback_task_id(run_id, first.data["status"])
        now = store.raw(run_id)
        for field in ("status", "finished_at", "payload", "error"):
            assert now.get(field) == ended.get(field), field
        run = store.get(run_id)
        assert (run.status, run.nen_status, run.message_id) == ("submit_failed", "success", message_id)
        assert [h["source"] for h in run.history][-1] == "webhook:late"
    finally:
        _forget(store, run_id, message_id)


@pytest.mark.integration
@pytest.mark.parametrize("same_message", [True, False], ids=["same-messageId", "new-messageId"])
def test_finding_8_a_forced_redrive_after_a_late_webhook_completes(store: Any, same_message: bool) -> None:
    """Nen's late word bound the ended run (late, nen_status, message_id); a forced redrive then
    starts a new attempt. With the same messageId (a deduplicating Nen) its webhooks were
    recorded as late forever and nothing completed; with a new one the binding raised. Redrive
    clears every field of the attempt, and frees the old messageId's index entry, so the old
    message's webhooks without a run hint no longer reach the new attempt."""
    run_id, old = _late_run(store, "f8")
    new = old if same_message else f"m-{uuid.uuid4()}"
    try:
        body, raw = _webhook(old, "processing")  # Nen started it: late, bound, still running
        assert (
            store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="ingest-1")[0] == "late"
        )
        assert store.redrive(run_id)[0] == "may_have_started"
        assert store.redrive(run_id, force=True)[0] == "ok"
        fresh = store.raw(run_id)
        for field in ("message_id", "late", "nen_status", "late_payload", "finished_at", "unknown_at"):
            assert not fresh.get(field), field
        assert store.run_for_message(old) is None  # an unhinted webhook of it parks, not applies
        assert store.claim_submit(run_id, 30, "submit-2", "x2").verdict == "ok"
        assert store.begin_post(run_id, "x2") == 2
        assert store.bind(run_id, new, {})[0] == "submitted"  # raised RuntimeError (new messageId)
        body, raw = _webhook(new, "success")
        verdict, status, completion, data = store.ingest(
            run_ref(store, run_id, 1), body, raw, source="webhook", holder="ingest-2"
        )
        assert (verdict, status, completion) == ("applied", "success", "claimed")  # was: late, not_terminal
        assert data["status"] == "success" and not data.get("nen_status")
        assert store.finish_completion(run_id, "cb-2", "ingest-2", 1)
        assert store.get(run_id).redrives == 1
    finally:
        _forget(store, run_id, old, new)


@pytest.mark.integration
def test_finding_11_a_later_connect_error_never_makes_an_ambiguous_post_look_unsent(store: Any) -> None:
    """NEN_RETRY_AMBIGUOUS: POST 1 read-timed out (Nen may have it), POST 2 failed to connect.
    The run must not end submit_failed (redrivable without --force under a new key): it waits
    for Nen's word as unknown, with unknown_at."""
    from nen_celery.domain.status import Status
    from nen_celery.lifecycle.submit import _end_or_park

    run_id = f"amb-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    assert store.claim_submit(run_id, 30, "t1", "x1")[0] == "ok"
    assert store.begin_post(run_id, "x1") == 1  # POST 1: read timeout, fate unknown
    assert store.begin_post(run_id, "x1") == 2  # POST 2 (the opted-in resend) ...
    store.post_not_sent(run_id, "x1")  # ... never connected
    assert store.raw(run_id)["post_inflight"] == "1"  # POST 1 is still possibly sent
    verdict, now, _ = store.apply(run_id, Status.SUBMIT_FAILED, source="t", expect=Status.QUEUED)
    assert (verdict, now) == ("maybe_sent", "queued")
    error = {"type": "ConnectError", "message": "request not sent", "maybe_sent": False}
    assert _end_or_park(run_id, Status.SUBMIT_FAILED, error, "submit:exhausted")["status"] == "unknown"
    raw = store.raw(run_id)
    assert raw["status"] == "unknown" and raw.get("unknown_at")
    assert store.redrive(run_id)[0] == "may_have_started"  # not without --force


@pytest.mark.integration
def test_finding_11_a_post_that_surely_failed_still_ends_the_run(store: Any) -> None:
    from nen_celery.domain.status import Status

    run_id = f"sure-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    assert store.claim_submit(run_id, 30, "t1", "x1")[0] == "ok"
    assert store.begin_post(run_id, "x1") == 1
    store.post_not_sent(run_id, "x1")
    assert store.apply(run_id, Status.SUBMIT_FAILED, source="t", expect=Status.QUEUED)[0] == "applied"


@pytest.mark.integration
def test_model_finding_an_earlier_attempts_finish_cannot_mark_the_redriven_attempt_sent(store: Any) -> None:
    """Found by tests/test_model.py (minimised): attempt 0's complete_run claims and publishes
    on_failure, then is slow; the run is redriven and ends again; attempt 1's complete_run claims
    its completion. Attempt 0's late finish_completion must not mark attempt 1's completion sent:
    if attempt 1's holder then died before publishing, the sweep would see `sent` and its
    callback would never go out."""
    run_id = f"mf-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, {"task": "cb.fail"})
    try:
        assert store.apply(run_id, "submit_failed", source="reconcile:run_timeout")[2] == "pending"
        assert store.claim_completion(run_id, "complete-a").verdict == "claimed"  # publishes attempt 0's
        assert store.redrive(run_id)[0] == "ok"
        assert store.apply(run_id, "submit_failed", source="reconcile:run_timeout")[2] == "pending"
        assert store.claim_completion(run_id, "complete-b").verdict == "claimed"  # attempt 1's, not out yet
        assert not store.finish_completion(run_id, "attempt-0-callback-id", "complete-a", 0)
        record = store.raw(run_id)
        assert (record["completion"], record["completion_holder"]) == ("sending", "complete-b")
    finally:
        _forget(store, run_id)


@pytest.mark.integration
def test_model_finding_a_redelivered_copy_of_one_holder_cannot_mark_another_attempt_sent(store: Any) -> None:
    """Found by tests/test_model.py (12 steps, 2026-12-06 21:46): one complete_run message
    (holder H) publishes attempt 0's on_failure; the run is redriven and ends again; a redelivered
    copy of that same message (the same holder H) claims attempt 1's completion. The first
    copy's late finish passed the holder check and marked attempt 1 sent with no callback out.
    finish and release now compare the attempt the dispatch was for as well."""
    run_id = f"mf-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, {"task": "cb.fail"})
    try:
        assert store.apply(run_id, "submit_failed", source="reconcile:run_timeout")[2] == "pending"
        assert store.claim_completion(run_id, "complete-h").verdict == "claimed"  # publishes attempt 0's
        assert store.redrive(run_id)[0] == "ok"
        assert store.apply(run_id, "submit_failed", source="reconcile:run_timeout")[2] == "pending"
        assert store.claim_completion(run_id, "complete-h").verdict == "claimed"  # its redelivered copy
        assert not store.finish_completion(run_id, "attempt-0-callback-id", "complete-h", 0)
        assert not store.release_completion(run_id, "complete-h", 0)
        record = store.raw(run_id)
        assert (record["completion"], record["completion_holder"]) == ("sending", "complete-h")
        assert store.finish_completion(run_id, "attempt-1-callback-id", "complete-h", 1)
    finally:
        _forget(store, run_id)


@pytest.mark.integration
def test_model_finding_an_old_attempts_webhook_does_not_end_the_redriven_attempt(store: Any) -> None:
    """Found by tests/test_model.py: a webhook without a run hint finds the run through the
    messageId index (ingest_webhook's find_or_park); before its apply, the run is redriven
    (forced) and its new attempt is bound to a new messageId. The old message's success must
    not end the new attempt: its callback would follow another Nen run's outcome. The poll has
    the same window (it reads the bound messageId, asks Nen, then applies)."""
    run_id, old = _late_run(store, "mf")
    new = f"m-{uuid.uuid4()}"
    try:
        body, raw = _webhook(old, "processing")
        assert (
            store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="ingest-1")[0] == "late"
        )
        assert store.find_or_park(old, raw) == run_id  # the old message's success finds the run
        assert store.redrive(run_id, force=True)[0] == "ok"
        assert store.claim_submit(run_id, 30, "submit-2", "x2").verdict == "ok"
        assert store.begin_post(run_id, "x2") == 2
        assert store.bind(run_id, new, {})[0] == "submitted"
        body, _ = _webhook(old, "success")
        verdict = store.apply(run_id, "success", source="webhook", payload=body, message_id=old)[0]
        assert verdict == "foreign"  # what apply_nen_status passes: the body's messageId
        assert store.raw(run_id)["status"] == "submitted"
    finally:
        _forget(store, run_id, old, new)


@pytest.mark.integration
def test_model_finding_a_timed_out_run_whose_post_may_have_landed_is_not_stuck_queued(store: Any) -> None:
    """Found by tests/test_model.py (3 steps): past NEN_RUN_TIMEOUT a submit claims the run and
    its POST goes out (post_inflight counted), then its worker dies before the 202 is stored.
    The sweep decides TIMEOUT first; the end is refused (maybe_sent) and the run stays queued,
    its timer due, every sweep deciding the same: Nen runs it, its webhooks are kept with the
    run, no callback ever comes. It must be parked unknown (or ended), not left queued."""
    from nen_celery.lifecycle import reconcile, sweep

    run_id = f"mf-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    try:
        assert store.claim_submit(run_id, 30, "submit-1", "x1").verdict == "ok"
        assert store.begin_post(run_id, "x1") == 1  # the POST is out; the worker dies
        data = store.raw(run_id)
        later = float(data["created_at"]) + store.settings.run_timeout + 60  # the lease lapsed too
        decision = reconcile.decide(data, later, store.settings)
        sweep._act(run_id, data, decision.action)
        assert store.raw(run_id)["status"] != "queued", decision.action
    finally:
        _forget(store, run_id)


@pytest.mark.integration
def test_model_finding_an_earlier_attempts_202_does_not_bind_the_redriven_attempt(store: Any) -> None:
    """Found by tests/test_model.py (soak): attempt 0's POST is accepted but its worker is slow
    to bind; the run is parked unknown and redriven (forced); attempt 1's POST goes out. Attempt
    0's 202 must not bind attempt 1: it would end with the other Nen run's word, and attempt 1's
    own 202 then raises (already bound to another messageId)."""
    import contextlib

    run_id = f"mf-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    try:
        assert store.claim_submit(run_id, 30, "submit-1", "x1").verdict == "ok"
        assert store.begin_post(run_id, "x1") == 1  # accepted as m-0; the worker is slow
        assert store.apply(run_id, "unknown", source="submit:redelivered")[0] == "applied"
        assert store.redrive(run_id, force=True)[0] == "ok"
        assert store.claim_submit(run_id, 30, "submit-2", "x2").verdict == "ok"
        assert store.begin_post(run_id, "x2") == 2  # attempt 1's POST is out
        with contextlib.suppress(RuntimeError):  # attempt 0's 202: refused, however it says so
            store.bind(run_id, f"m-0-{run_id}", {}, attempt=0)  # what attempt 0's submit claimed
        record = store.raw(run_id)
        assert (record["status"], record.get("message_id")) == ("queued", None)
    finally:
        _forget(store, run_id, f"m-0-{run_id}")


# -- finding 5: a reused run id is not reached by its earlier record's webhooks --------------------
def _reused(store: Any, tag: str) -> tuple[str, str, RunRef]:
    """A run bound to Nen's messageId, then expired, then its id used again by a start_run whose
    POST's fate was unknown; (run_id, the first record's messageId, the first record's hint)."""
    run_id, first = f"{tag}-{uuid.uuid4()}", f"m-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, {"task": "cb.ok"}, None)
    store.bind(run_id, first, {})
    old = run_ref(store, run_id)
    assert old.nonce  # every record has one
    _forget(store, run_id, first)  # its retention passed: the record and its index expired
    assert store.create(run_id, WF, {"A": 2}, None, {"task": "cb.ok"}, None)
    assert run_ref(store, run_id).nonce != old.nonce
    assert store.apply(run_id, "unknown", source="submit:ambiguous")[0] == "applied"
    return run_id, first, old


@pytest.mark.integration
def test_finding_5_an_old_webhook_cannot_bind_a_reused_run_id(store: Any) -> None:
    """Before: the hint's token covered only <run id>~<attempt>, so the first record's signed
    success, sent again to its URL, bound the new `unknown` run and completed it with the old
    result (tried on c89bfbc: verdict 'applied', completion 'claimed')."""
    run_id, first, old = _reused(store, "reused")
    try:
        before = store.raw(run_id)
        body, raw = _webhook(first, "success")
        for hint in (old, RunRef(run_id, 0)):  # its URL; a URL from before records had a nonce
            assert store.ingest(hint, body, raw, source="webhook", holder="ingest-1")[:3] == (
                "reused",
                "",
                "",
            )
        assert store.raw(run_id) == before
        # the new record's own URL still binds it (its POST did land, under another messageId)
        mine, mine_raw = _webhook(f"m-{uuid.uuid4()}", "success")
        verdict, now, completion, _ = store.ingest(
            run_ref(store, run_id), mine, mine_raw, source="webhook", holder="ingest-2"
        )
        assert (verdict, now, completion) == ("applied", "success", "claimed")
    finally:
        _forget(store, run_id, first)


@pytest.mark.integration
def test_finding_5_through_the_receiver_the_old_webhook_is_looked_up_by_messageid(stack: Stack) -> None:
    """The receiver takes the old URL's hint (its token is genuine); the ingest task learns from
    ingest.lua that it names another record and looks the messageId up: bound to no run, it is
    parked as an orphan. The new run stays `unknown`, and no callback is queued."""
    from nen_celery.runtime.context import get_context

    store = get_context().store
    stack.counter.wait_idle()
    run_id, first, old = _reused(store, "reused-e2e")
    try:
        before = store.raw(run_id)
        body = json.dumps({"message_id": first, "status": "success", "workflow_id": WF}).encode()
        url = url_with_run(stack.webhook_url, "nen_run", run_id, 0, hint_key(SIM_WEBHOOK_SECRET), old.nonce)
        headers = {
            "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body),
            "Content-Type": "application/json",
        }
        answer = httpx.post(url, content=body, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        stack.counter.wait_idle()
        assert store.raw(run_id) == before
        assert store.run_for_message(first) is None
    finally:
        _forget(store, run_id, first)


@pytest.mark.integration
def test_a_redrive_with_a_fresh_key_drops_the_webhooks_kept_for_the_old_attempt(store: Any) -> None:
    """They name the old attempt's messageIds: a fresh Idempotency-Key gets another from Nen.
    A forced redrive of a run that may have started keeps its key, and the kept webhooks with it
    (a deduplicating Nen answers the old messageId, whose webhooks then apply)."""
    for maybe_started in (False, True):
        run_id = f"kept-{uuid.uuid4()}"
        assert store.create(run_id, WF, {"A": 1}, None, None, None)
        body, raw = _webhook(f"m-{uuid.uuid4()}", "success")
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "parked"
        if maybe_started:
            assert store.apply(run_id, "unknown", source="submit:ambiguous")[0] == "applied"
            assert store.apply(run_id, "submit_failed", source="reconcile:unknown_timeout")[0] == "applied"
        else:
            assert store.apply(run_id, "rejected", source="nen:422", expect="queued")[0] == "applied"
        try:
            assert store.redrive(run_id, force=maybe_started)[0] == "ok"
            kept = store.redis.hlen(store.run_parked_key(run_id))
            assert kept == (1 if maybe_started else 0), maybe_started
        finally:
            _forget(store, run_id)
            store.redis.delete(store.run_parked_key(run_id))

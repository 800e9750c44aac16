"""Run hints: the run id in each run's webhook URL (pure), and ingest.lua against real Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest

from nen_celery.hints import run_from_query, url_with_run

WF = "12345678-1234-1234-1234-123456789abc"


@pytest.mark.parametrize(
    ("url", "attempt", "expected"),
    [
        ("https://app.example/webhooks/nen", 0, "https://app.example/webhooks/nen?nen_run=r-1"),
        ("https://app.example/hook?token=a%2Fb&x=", 0, "https://app.example/hook?token=a%2Fb&x=&nen_run=r-1"),
        ("https://app.example/hook?nen_run=forged", 0, "https://app.example/hook?nen_run=r-1"),
        ("https://app.example/hook", 3, "https://app.example/hook?nen_run=r-1~3"),
    ],
)
def test_url_with_run_adds_the_hint_and_keeps_the_rest(url: str, attempt: int, expected: str) -> None:
    assert url_with_run(url, "nen_run", "r-1", attempt) == expected


def test_hints_off_leave_the_url_and_find_nothing() -> None:
    assert url_with_run("https://a/h?x=1", "", "r-1") == "https://a/h?x=1"
    assert run_from_query("nen_run=r-1", "") is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("nen_run=r-1", ("r-1", 0)),
        (b"token=z&nen_run=r-1%7E3", ("r-1", 3)),
        ("nen_run=r-1~3", ("r-1", 3)),
        ("nen_run=run:2.a_b", ("run:2.a_b", 0)),
        ("", None),
        ("other=1", None),
        ("nen_run=", None),
        ("nen_run=a&nen_run=b", None),  # ambiguous: refused rather than guessed
        ("nen_run=../x", None),
        ("nen_run=r-1~", None),
        ("nen_run=r-1~x", None),
        ("nen_run=r-1~99999999", None),
        ("nen_run=" + "a" * 129, None),
    ],
)
def test_run_from_query(query: str | bytes, expected: tuple[str, int] | None) -> None:
    assert run_from_query(query, "nen_run") == expected


def test_round_trip() -> None:
    url = url_with_run("https://a/h?x=1", "nen_run", "run:7", 2)
    assert run_from_query(url.split("?", 1)[1], "nen_run") == ("run:7", 2)


# -- ingest.lua ---------------------------------------------------------------------------------
_created: list[str] = []


@pytest.fixture(autouse=True)
def _forget_runs(store: Any) -> Iterator[None]:
    """These runs' callbacks are not real signatures: a later test's reconcile sweep must not
    find them due and try to dispatch them."""
    yield
    if _created:
        for run_id in _created:
            store.redis.zrem(store.timers_key(run_id), run_id)
            store.redis.delete(store.run_key(run_id), store.run_parked_key(run_id), store.secure_key(run_id))
        _created.clear()


def _run(store: Any, status: str | None = None, message_id: str | None = None) -> str:
    run_id = f"h-{uuid.uuid4()}"
    _created.append(run_id)
    assert store.create(run_id, WF, {"A": 1}, None, {"task": "cb.ok"}, {"task": "cb.fail"})
    if message_id:
        store.bind(run_id, message_id, {})
    if status:
        store.apply(run_id, status, source="t")
    return run_id


def _hook(message_id: str, status: str) -> tuple[dict[str, Any], str]:
    body = {"message_id": message_id, "status": status, "workflow_id": WF}
    return body, json.dumps(body)


@pytest.mark.integration
def test_bound_run_applies_and_a_terminal_status_claims_the_completion_once(store: Any) -> None:
    msg = f"m-{uuid.uuid4()}"
    run_id = _run(store, message_id=msg)
    body, raw = _hook(msg, "processing")
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t1")[:3] == (
        "applied",
        "processing",
        "",
    )
    body, raw = _hook(msg, "success")
    verdict, now, completion, record = store.ingest(run_id, 0, body, raw, source="webhook", holder="t2")
    assert (verdict, now, completion) == ("applied", "success", "claimed")
    assert record["status"] == "success" and json.loads(record["on_complete"]) == {"task": "cb.ok"}
    # claimed, not yet sent: a holder that dies before the broker has the callback loses nothing
    assert (record["completion"], record["completion_holder"]) == ("sending", "t2")
    # a duplicate from another task while the claim is live: nothing to do
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t3")[:3] == (
        "noop",
        "success",
        "busy",
    )
    # the holder's own redelivery (its worker died around the dispatch) dispatches again ...
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t2")[2] == "claimed"
    # ... until the broker took the callback: then never again, whoever asks
    assert store.finish_completion(run_id, "cb-1")
    done = store.raw(run_id)
    assert (done["completion"], done["callback_task_id"]) == ("sent", "cb-1")
    assert "completion_holder" not in done
    assert store.redis.zscore(store.timers_key(run_id), run_id) is None  # nothing left to watch
    for holder in ("t2", "t3"):
        assert store.ingest(run_id, 0, body, raw, source="webhook", holder=holder)[:3] == (
            "noop",
            "success",
            "done",
        )


@pytest.mark.integration
def test_a_run_that_ended_otherwise_is_claimed_for_complete_run_style_finishing(store: Any) -> None:
    """The webhook says success but the sweep already ended the run failed: the claim is taken
    (completion ``sending``) for on_failure, and the caller finishes it after dispatching."""
    run_id = _run(store, message_id="m-late")
    store.apply(run_id, "failed", source="reconcile:run_timeout")
    body, raw = _hook("m-late", "success")
    verdict, now, completion, record = store.ingest(run_id, 0, body, raw, source="webhook", holder="t1")
    assert (verdict, now, completion, record["completion"]) == ("noop", "failed", "claimed", "sending")
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t2")[2] == "busy"
    assert store.finish_completion(run_id, "cb-failed")


@pytest.mark.integration
def test_a_failed_dispatch_releases_the_claimed_completion(store: Any) -> None:
    run_id = _run(store, message_id="m-rel")
    body, raw = _hook("m-rel", "failed")
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t1")[2] == "claimed"
    assert not store.release_completion(run_id, "other")
    assert store.release_completion(run_id, "t1")
    assert store.raw(run_id)["completion"] == "pending"
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t1")[2] == "claimed"


@pytest.mark.integration
def test_a_hint_that_does_not_fit_the_signed_body_changes_nothing(store: Any) -> None:
    run_id = _run(store, message_id="m-right")
    before = store.raw(run_id)
    body, raw = _hook("m-other", "success")
    assert store.ingest(run_id, 0, body, raw, source="webhook", holder="t")[0] == "mismatch"
    body, raw = _hook("m-right", "success")
    assert store.ingest(run_id, 1, body, raw, source="webhook", holder="t")[0] == "stale"
    assert store.ingest(f"h-{uuid.uuid4()}", 0, body, raw, source="webhook")[0] == "missing"
    assert store.raw(run_id) == before


@pytest.mark.integration
def test_an_early_webhook_is_kept_with_the_run_and_handed_back_by_the_binding(store: Any) -> None:
    run_id = _run(store)
    body, raw = _hook("m-early", "success")
    assert store.ingest(run_id, 0, body, raw, source="webhook")[:2] == ("parked", "queued")
    assert store.raw(run_id)["status"] == "queued"
    status, parked = store.bind(run_id, "m-early", {})
    assert status == "submitted" and parked == [raw]
    assert store.redis.exists(store.run_parked_key(run_id)) == 0


@pytest.mark.integration
def test_an_early_processing_webhook_is_applied_by_the_binding_itself(store: Any) -> None:
    """Only its messageId is kept (a processing webhook stores no payload): the binding applies
    it in the same script, with nothing handed back to replay."""
    run_id = _run(store)
    body, raw = _hook("m-early-p", "processing")
    for _ in range(2):  # a duplicate is kept once
        assert store.ingest(run_id, 0, body, raw, source="webhook")[:2] == ("parked", "queued")
    assert store.raw(run_id)["parked_processing"] == "m-early-p"
    assert store.redis.exists(store.run_parked_key(run_id)) == 0
    assert store.bind(run_id, "m-early-p", {}) == ("processing", [])
    data = store.raw(run_id)
    assert "parked_processing" not in data and data["status"] == "processing"
    history = [(h["status"], h["source"]) for h in json.loads(data["history"])]
    assert history[-2:] == [("submitted", "nen:202"), ("processing", "webhook:parked")]
    assert store.redis.zscore(store.timers_key(run_id), run_id) == pytest.approx(
        float(data["updated_at"]) + store.next_check_after("processing"), abs=1
    )


@pytest.mark.integration
def test_an_early_processing_webhook_for_another_message_is_dropped_by_the_binding(store: Any) -> None:
    run_id = _run(store)
    body, raw = _hook("m-someone-else", "processing")  # signed, but another run's
    assert store.ingest(run_id, 0, body, raw, source="webhook")[0] == "parked"
    assert store.bind(run_id, "m-mine", {}) == ("submitted", [])
    assert "parked_processing" not in store.raw(run_id)


@pytest.mark.integration
def test_an_unknown_run_is_bound_by_its_own_webhook(store: Any) -> None:
    run_id = _run(store, status="unknown")
    body, raw = _hook("m-found", "processing")
    verdict, now, _, _ = store.ingest(run_id, 0, body, raw, source="webhook")
    assert (verdict, now) == ("applied", "processing")
    data = store.raw(run_id)
    assert data["message_id"] == "m-found"
    history = [(h["status"], h["source"]) for h in json.loads(data["history"])]
    assert history[-2:] == [("submitted", "webhook:run_hint"), ("processing", "webhook")]
    assert store.redis.exists(store.secure_key(run_id)) == 0
    # from now on only its own messageId is accepted
    body, raw = _hook("m-other", "success")
    assert store.ingest(run_id, 0, body, raw, source="webhook")[0] == "mismatch"


@pytest.mark.integration
def test_webhooks_kept_while_queued_are_taken_once_the_run_is_unknown(store: Any) -> None:
    run_id = _run(store)
    for status in ("processing", "success"):
        body, raw = _hook("m-x", status)
        assert store.ingest(run_id, 0, body, raw, source="webhook")[0] == "parked"
    store.apply(run_id, "unknown", source="t")
    attempt, parked = store.take_run_parked(run_id)
    # the processing one was kept as its messageId only: it comes back as a body of its own
    assert attempt == 0 and len(parked) == 2 and parked[1] == raw
    assert json.loads(store.sealer.open(parked[0])) == {"message_id": "m-x", "status": "processing"}
    assert store.take_run_parked(run_id) == (0, [])


@pytest.mark.integration
def test_bind_survives_a_server_that_lost_its_scripts(store: Any) -> None:
    """bind and the messageId index go in one pipelined trip of raw EVALSHAs; after a restart
    or SCRIPT FLUSH each is run again on its own, without losing what the binding handed back."""
    run_id = _run(store)
    body, raw = _hook("m-flushed", "failed")
    assert store.ingest(run_id, 0, body, raw, source="webhook")[0] == "parked"
    store.redis.script_flush()
    assert store.bind(run_id, "m-flushed", {}) == ("submitted", [raw])
    assert store.run_for_message("m-flushed") == run_id
    assert store.bind(run_id, "m-flushed", {}) == ("submitted", [])  # scripts are loaded again


@pytest.mark.parametrize(
    "query",
    [
        "a&&nen_run=r-1",
        "nen_run",
        "nen_run=r-1&",
        "=x&nen_run=r-1",
        "nen_run=r=1",
        "x=1;nen_run=r-1",
        "nen_run=r-1&x",
        "&nen_run=r-1~2&&",
        "nen_run=r-1&nen_run",
        "NEN_RUN=r-1",
    ],
)
def test_the_quick_split_reads_queries_as_parse_qsl_does(query: str) -> None:
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "nen_run"]
    reference = run_from_query(query.replace("-", "%2D"), "nen_run")  # the parse_qsl path
    assert run_from_query(query, "nen_run") == reference
    assert (reference is not None) == (len(values) == 1 and values[0] not in ("", "r=1"))

"""Run hints: the run id in each run's webhook URL (pure), and ingest.lua against real Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest

from nen_celery.domain.hints import (
    Hint,
    RunRef,
    hint_from_query,
    hint_key,
    hint_keys,
    run_from_query,
    run_token,
    url_with_run,
    verify,
)
from tests.helpers import run_ref

WF = "12345678-1234-1234-1234-123456789abc"
KEY = hint_key("test-secret")
OLD_KEY = hint_key("old-secret")


NONCE = "AbCdEfGhIjKl_-89"  # a record's nonce: 16 base64url characters


def _value(run_id: str, attempt: int = 0, key: bytes = KEY, nonce: str = "") -> str:
    middle = f"{attempt}~{nonce}" if nonce else str(attempt)
    return f"{run_id}~{middle}~{run_token(key, run_id, attempt, nonce)}"


@pytest.mark.parametrize(
    ("url", "attempt", "expected"),
    [
        ("https://app.example/webhooks/nen", 0, "https://app.example/webhooks/nen?nen_run={}"),
        ("https://app.example/hook?token=a%2Fb&x=", 0, "https://app.example/hook?token=a%2Fb&x=&nen_run={}"),
        ("https://app.example/hook?nen_run=forged", 0, "https://app.example/hook?nen_run={}"),
        ("https://app.example/hook", 3, "https://app.example/hook?nen_run={}"),
    ],
)
def test_url_with_run_adds_the_hint_and_keeps_the_rest(url: str, attempt: int, expected: str) -> None:
    # run ids and base64url tokens need no quoting: the value is readable in the URL as is
    assert url_with_run(url, "nen_run", "r-1", attempt, KEY) == expected.format(_value("r-1", attempt))
    with_nonce = url_with_run(url, "nen_run", "r-1", attempt, KEY, NONCE)
    assert with_nonce == expected.format(_value("r-1", attempt, nonce=NONCE))
    assert f"r-1~{attempt}~{NONCE}~" in with_nonce


def test_hints_off_leave_the_url_and_find_nothing() -> None:
    assert url_with_run("https://a/h?x=1", "", "r-1", 0, KEY) == "https://a/h?x=1"
    assert run_from_query("nen_run=" + _value("r-1"), "", [KEY]) is None


def test_without_a_key_the_url_names_no_run() -> None:
    assert url_with_run("https://a/h?x=1&nen_run=forged", "nen_run", "r-1", 0, None) == "https://a/h?x=1"


def test_the_token_is_a_128_bit_mac_of_the_run_id_and_attempt() -> None:
    token = run_token(KEY, "r-1", 0)
    assert len(token) == 22 and "=" not in token  # 16 bytes, unpadded base64url
    assert token == run_token(hint_key("test-secret"), "r-1", 0)  # the same on every process
    others = {
        run_token(KEY, "r-2", 0),
        run_token(KEY, "r-1", 1),
        run_token(OLD_KEY, "r-1", 0),
        run_token(KEY, "r-1", 0, NONCE),  # another record of the same run id
        run_token(KEY, "r-1", 0, NONCE[::-1]),
    }
    assert token not in others and len(others) == 5
    # derived from the secret with a label: neither the secret nor a signature under it
    assert KEY != b"test-secret" and len(KEY) == 32
    assert hint_keys(["a", "b"]) == (hint_key("a"), hint_key("b"))


@pytest.mark.parametrize(
    ("token", "keys", "ok"),
    [
        (run_token(KEY, "r-1", 2), [KEY], True),
        (run_token(OLD_KEY, "r-1", 2), [KEY, OLD_KEY], True),  # rotating: the previous key too
        (run_token(OLD_KEY, "r-1", 2), [KEY], False),  # dropped key
        (run_token(KEY, "r-1", 1), [KEY], False),  # another attempt's
        (run_token(KEY, "r-2", 2), [KEY], False),  # another run's
        ("", [KEY], False),  # missing (a URL made before hints carried a token)
        (run_token(KEY, "r-1", 2)[:21], [KEY], False),
        (run_token(KEY, "r-1", 2) + "A", [KEY], False),
        (run_token(KEY, "r-1", 2), [], False),  # no key here: nothing verifies
    ],
)
def test_verify(token: str, keys: list[bytes], ok: bool) -> None:
    assert verify(keys, Hint("r-1", 2, token)) is ok


def test_the_token_covers_the_records_nonce() -> None:
    token = run_token(KEY, "r-1", 2, NONCE)
    assert verify([KEY], Hint("r-1", 2, token, NONCE))
    assert not verify([KEY], Hint("r-1", 2, token))  # the nonce dropped from the URL
    assert not verify([KEY], Hint("r-1", 2, token, NONCE[::-1]))  # another record's nonce
    assert not verify([KEY], Hint("r-1", 2, run_token(KEY, "r-1", 2), NONCE))  # a nonce added


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("nen_run=r-1", Hint("r-1", 0, "")),
        (b"token=z&nen_run=r-1%7E3", Hint("r-1", 3, "")),
        ("nen_run=r-1~3", Hint("r-1", 3, "")),
        ("nen_run=r-1~3~abc", Hint("r-1", 3, "abc")),
        ("nen_run=r-1%7E0%7Eabc", Hint("r-1", 0, "abc")),
        (f"nen_run=r-1~2~{NONCE}~abc", Hint("r-1", 2, "abc", NONCE)),
        (f"nen_run=r-1~2~{NONCE[:15]}~abc", None),  # not a nonce
        ("nen_run=r-1~2~abc+def%2Fghijklmnop~abc", None),
        (f"nen_run=r-1~2~{NONCE}~abc~x", None),
        ("nen_run=run:2.a_b", Hint("run:2.a_b", 0, "")),
        ("", None),
        ("other=1", None),
        ("nen_run=", None),
        ("nen_run=a&nen_run=b", None),  # ambiguous: refused rather than guessed
        ("nen_run=../x", None),
        ("nen_run=r-1~", None),
        ("nen_run=r-1~x", None),
        ("nen_run=r-1~~abc", None),
        ("nen_run=r-1~99999999", None),
        ("nen_run=" + "a" * 129, None),
    ],
)
def test_hint_from_query(query: str | bytes, expected: Hint | None) -> None:
    assert hint_from_query(query, "nen_run") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_value("r-1", 3), RunRef("r-1", 3)),
        (_value("r-1", 3, OLD_KEY), RunRef("r-1", 3)),
        (_value("r-1", 3, nonce=NONCE), RunRef("r-1", 3, NONCE)),
        (_value("r-1", 3, nonce=NONCE).replace(NONCE, NONCE[::-1]), None),  # the nonce changed
        ("r-1~3", None),  # no token
        ("r-1", None),
        (_value("r-1", 3).replace("~3~", "~2~"), None),  # the attempt changed, the token kept
        (_value("r-2", 3).replace("r-2", "r-1", 1), None),  # another run's token
    ],
)
def test_run_from_query_needs_a_valid_token(value: str, expected: RunRef | None) -> None:
    assert run_from_query(f"x=1&nen_run={value}", "nen_run", [KEY, OLD_KEY]) == expected


def test_round_trip() -> None:
    url = url_with_run("https://a/h?x=1", "nen_run", "run:7", 2, KEY)
    assert run_from_query(url.split("?", 1)[1], "nen_run", [KEY]) == RunRef("run:7", 2)
    url = url_with_run("https://a/h?x=1", "nen_run", "run:7", 2, KEY, NONCE)
    assert run_from_query(url.split("?", 1)[1], "nen_run", [KEY]) == RunRef("run:7", 2, NONCE)
    assert run_from_query(url.split("?", 1)[1], "nen_run", [OLD_KEY]) is None


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
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t1")[:3] == (
        "applied",
        "processing",
        "",
    )
    body, raw = _hook(msg, "success")
    verdict, now, completion, record = store.ingest(
        run_ref(store, run_id), body, raw, source="webhook", holder="t2"
    )
    assert (verdict, now, completion) == ("applied", "success", "claimed")
    assert record["status"] == "success" and json.loads(record["on_complete"]) == {"task": "cb.ok"}
    # claimed, not yet sent: a holder that dies before the broker has the callback loses nothing
    assert (record["completion"], record["completion_holder"]) == ("sending", "t2")
    # a duplicate from another task while the claim is live: nothing to do
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t3")[:3] == (
        "noop",
        "success",
        "busy",
    )
    # the holder's own redelivery (its worker died around the dispatch) dispatches again ...
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t2")[2] == "claimed"
    # ... until the broker took the callback: then never again, whoever asks
    assert store.finish_completion(run_id, "cb-1", "t2", 0)
    done = store.raw(run_id)
    assert (done["completion"], done["callback_task_id"]) == ("sent", "cb-1")
    assert "completion_holder" not in done
    assert store.redis.zscore(store.timers_key(run_id), run_id) is None  # nothing left to watch
    for holder in ("t2", "t3"):
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder=holder)[:3] == (
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
    verdict, now, completion, record = store.ingest(
        run_ref(store, run_id), body, raw, source="webhook", holder="t1"
    )
    assert (verdict, now, completion, record["completion"]) == ("noop", "failed", "claimed", "sending")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t2")[2] == "busy"
    assert store.finish_completion(run_id, "cb-failed", "t1", 0)


@pytest.mark.integration
def test_a_failed_dispatch_releases_the_claimed_completion(store: Any) -> None:
    run_id = _run(store, message_id="m-rel")
    body, raw = _hook("m-rel", "failed")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t1")[2] == "claimed"
    assert not store.release_completion(run_id, "other", 0)
    assert store.release_completion(run_id, "t1", 0)
    assert store.raw(run_id)["completion"] == "pending"
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t1")[2] == "claimed"


@pytest.mark.integration
def test_a_hint_that_does_not_fit_the_signed_body_changes_nothing(store: Any) -> None:
    run_id = _run(store, message_id="m-right")
    before = store.raw(run_id)
    body, raw = _hook("m-other", "success")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t")[0] == "mismatch"
    body, raw = _hook("m-right", "success")
    assert store.ingest(run_ref(store, run_id, 1), body, raw, source="webhook", holder="t")[0] == "stale"
    assert store.ingest(run_ref(store, f"h-{uuid.uuid4()}", 0), body, raw, source="webhook")[0] == "missing"
    assert store.raw(run_id) == before


@pytest.mark.integration
def test_an_early_webhook_is_kept_with_the_run_and_handed_back_by_the_binding(store: Any) -> None:
    run_id = _run(store)
    body, raw = _hook("m-early", "success")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[:2] == ("parked", "queued")
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
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[:2] == ("parked", "queued")
    assert store.redis.hgetall(store.run_parked_key(run_id)) == {"processing:m-early-p": WF}
    assert store.bind(run_id, "m-early-p", {}) == ("processing", [])
    data = store.raw(run_id)
    assert store.redis.exists(store.run_parked_key(run_id)) == 0 and data["status"] == "processing"
    history = [(h["status"], h["source"]) for h in json.loads(data["history"])]
    assert history[-2:] == [("submitted", "nen:202"), ("processing", "webhook:parked")]
    assert store.redis.zscore(store.timers_key(run_id), run_id) == pytest.approx(
        float(data["updated_at"]) + store.next_check_after("processing"), abs=1
    )


@pytest.mark.integration
def test_an_early_processing_webhook_for_another_message_is_dropped_by_the_binding(store: Any) -> None:
    run_id = _run(store)
    body, raw = _hook("m-someone-else", "processing")  # signed, but another run's
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "parked"
    assert store.bind(run_id, "m-mine", {}) == ("submitted", [])
    assert store.redis.exists(store.run_parked_key(run_id)) == 0


@pytest.mark.integration
def test_an_unknown_run_is_bound_by_its_own_webhook(store: Any) -> None:
    run_id = _run(store, status="unknown")
    body, raw = _hook("m-found", "processing")
    verdict, now, _, _ = store.ingest(run_ref(store, run_id), body, raw, source="webhook")
    assert (verdict, now) == ("applied", "processing")
    data = store.raw(run_id)
    assert data["message_id"] == "m-found"
    history = [(h["status"], h["source"]) for h in json.loads(data["history"])]
    assert history[-2:] == [("submitted", "webhook:run_hint"), ("processing", "webhook")]
    assert store.redis.exists(store.secure_key(run_id)) == 0
    assert store.run_for_message("m-found") == run_id  # indexed: no other run can take it
    # from now on only its own messageId is accepted
    body, raw = _hook("m-other", "success")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "mismatch"


def _other(wf: str = WF) -> tuple[dict[str, Any], str]:
    """Another run's genuine terminal webhook, as someone replaying it has it."""
    body = {"message_id": f"m-other-{uuid.uuid4()}", "status": "success", "workflow_id": wf, "r": 1}
    return body, json.dumps(body)


@pytest.mark.integration
def test_a_flood_of_another_runs_webhook_never_pushes_out_the_runs_own(store: Any) -> None:
    """Kept once per (status, messageId): 50 copies of one replayed body take one place; the
    binding hands back only its own messageId's and drops the rest."""
    run_id = _run(store)
    mine = f"m-{uuid.uuid4()}"
    processing, _ = _hook(mine, "processing")
    success, success_raw = _hook(mine, "success")
    replayed, replayed_raw = _other()
    assert store.ingest(run_ref(store, run_id), processing, "", source="webhook")[0] == "parked"
    assert store.ingest(run_ref(store, run_id), success, success_raw, source="webhook")[0] == "parked"
    for _ in range(50):
        assert store.ingest(run_ref(store, run_id), replayed, replayed_raw, source="webhook")[0] == "parked"
    kept = store.redis.hgetall(store.run_parked_key(run_id))
    assert kept == {
        f"processing:{mine}": WF,
        f"success:{mine}": success_raw,
        f"success:{replayed['message_id']}": replayed_raw,
    }
    assert store.bind(run_id, mine, {}) == ("processing", [success_raw])
    assert store.redis.exists(store.run_parked_key(run_id)) == 0


@pytest.mark.integration
def test_a_full_run_refuses_new_webhooks_but_keeps_those_it_has(store: Any) -> None:
    from nen_celery.store.runs import KEPT_MAX

    run_id = _run(store)
    mine = f"m-{uuid.uuid4()}"
    success, success_raw = _hook(mine, "success")
    assert store.ingest(run_ref(store, run_id), success, success_raw, source="webhook")[0] == "parked"
    for _ in range(KEPT_MAX - 1):
        body, raw = _other()
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "parked"
    body, raw = _other()
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[:2] == ("full", "queued")
    assert (
        store.ingest(run_ref(store, run_id), success, success_raw, source="webhook")[0] == "parked"
    )  # a copy
    assert store.bind(run_id, mine, {}) == ("submitted", [success_raw])


@pytest.mark.integration
def test_an_unknown_run_is_not_bound_by_a_webhook_of_another_workflow(store: Any) -> None:
    run_id = _run(store, status="unknown")
    before = store.raw(run_id)
    for wf in ("87654321-4321-4321-4321-cba987654321", None):
        body, raw = _other(wf) if wf else _hook(f"m-{uuid.uuid4()}", "success")
        if wf is None:
            del body["workflow_id"]  # none at all: not the run's either
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t")[:2] == (
            "foreign",
            "unknown",
        )
        assert store.run_for_message(body["message_id"]) is None  # the index was not touched
    assert store.raw(run_id) == before


@pytest.mark.integration
def test_an_unknown_run_is_not_bound_by_a_message_id_bound_to_another_run(store: Any) -> None:
    """A finished run's genuine webhook replayed onto an unknown run of the same workflow: its
    messageId is indexed to the finished run, so it binds nothing; the run's own one then does."""
    finished, (body, raw) = _run(store), _other()
    store.bind(finished, body["message_id"], {})
    store.apply(finished, "success", source="webhook", payload=body)
    run_id = _run(store, status="unknown")
    before = store.raw(run_id)
    for _ in range(3):
        verdict = store.ingest(run_ref(store, run_id), body, raw, source="webhook", holder="t")[:3]
        assert verdict == ("taken", "unknown", "")
    assert store.raw(run_id) == before
    assert store.run_for_message(body["message_id"]) == finished
    assert store.raw(finished)["status"] == "success"

    mine, mine_raw = _hook(f"m-{uuid.uuid4()}", "success")
    verdict, now, completion, _ = store.ingest(
        run_ref(store, run_id), mine, mine_raw, source="webhook", holder="t"
    )
    assert (verdict, now, completion) == ("applied", "success", "claimed")
    assert store.raw(run_id)["message_id"] == mine["message_id"]
    assert store.run_for_message(mine["message_id"]) == run_id
    # bound now: the replayed one is a mismatch like any other messageId
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "mismatch"


@pytest.mark.integration
def test_the_receiver_path_never_binds_an_unknown_run(store: Any) -> None:
    run_id = _run(store, status="unknown")
    body, raw = _hook(f"m-{uuid.uuid4()}", "processing")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook", bind=False)[:2] == (
        "unbound",
        "unknown",
    )
    assert store.raw(run_id)["status"] == "unknown" and store.run_for_message(body["message_id"]) is None


@pytest.mark.integration
def test_a_message_claim_whose_binding_did_not_happen_is_released(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the index claim and the binding the run was bound otherwise (a lookup found its
    messageId): the claim is undone, the index keeps no wrong entry."""
    run_id = _run(store, status="unknown")
    body, raw = _hook(f"m-{uuid.uuid4()}", "processing")
    found = f"m-{uuid.uuid4()}"
    claim = store.claim_message

    def claim_then_lookup_binds(message_id: str, claimant: str) -> str:
        taken = claim(message_id, claimant)
        store.bind(run_id, found, {"messageId": found, "via": "lookup"})
        return str(taken)

    monkeypatch.setattr(store, "claim_message", claim_then_lookup_binds)
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[:2] == ("mismatch", found)
    assert store.run_for_message(body["message_id"]) is None
    assert store.run_for_message(found) == run_id


@pytest.mark.integration
def test_nens_answer_binds_a_message_id_a_hint_claimed_for_another_run(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = f"m-{uuid.uuid4()}"
    claimant, accepted = _run(store), _run(store)
    assert store.claim_message(message_id, claimant) == ""
    assert store.claim_message(message_id, accepted) == claimant  # taken
    with caplog.at_level("ERROR", logger="nen_celery.store.runs"):
        assert store.bind(accepted, message_id, {})[0] == "submitted"
    assert store.run_for_message(message_id) == accepted  # Nen's word wins
    assert f"was indexed to run {claimant}" in caplog.text


@pytest.mark.integration
def test_webhooks_kept_while_queued_are_taken_once_the_run_is_unknown(store: Any) -> None:
    run_id = _run(store)
    for status in ("processing", "success"):
        body, raw = _hook("m-x", status)
        assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "parked"
    store.apply(run_id, "unknown", source="t")
    hint, parked = store.take_run_parked(run_id)
    # the processing one was kept as its messageId only: it comes back as a body of its own
    assert hint == run_ref(store, run_id) and hint.nonce and len(parked) == 2 and parked[1] == raw
    assert json.loads(store.sealer.open(parked[0])) == {
        "message_id": "m-x",
        "status": "processing",
        "workflow_id": WF,
    }
    assert store.take_run_parked(run_id) == (hint, [])


@pytest.mark.integration
def test_bind_survives_a_server_that_lost_its_scripts(store: Any) -> None:
    """bind and the messageId index go in one pipelined trip of raw EVALSHAs; after a restart
    or SCRIPT FLUSH each is run again on its own, without losing what the binding handed back."""
    run_id = _run(store)
    body, raw = _hook("m-flushed", "failed")
    assert store.ingest(run_ref(store, run_id), body, raw, source="webhook")[0] == "parked"
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
    reference = hint_from_query(query.replace("-", "%2D"), "nen_run")  # the parse_qsl path
    assert hint_from_query(query, "nen_run") == reference
    assert (reference is not None) == (len(values) == 1 and values[0] not in ("", "r=1"))

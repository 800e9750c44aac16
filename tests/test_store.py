"""RunStore's Lua scripts against real Redis."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from nen_celery.domain.runstate import ALLOWED, can_transition
from nen_celery.domain.status import RANK, Status

pytestmark = pytest.mark.integration
WF = "12345678-1234-1234-1234-123456789abc"



def _paths() -> dict[Status, list[Status]]:
    """A path from queued to each status through the state table's moves (the longest such path,
    so the Lua is driven through as many moves as the table has on the way)."""
    paths: dict[Status, list[Status]] = {Status.QUEUED: []}
    frontier = [Status.QUEUED]
    while frontier:
        cur = frontier.pop()
        for nxt in sorted(ALLOWED[cur]):
            if len(paths.get(nxt, [])) < len(paths[cur]) + 1 and nxt not in paths[cur]:
                paths[nxt] = [*paths[cur], nxt]
                frontier.append(nxt)
    assert set(paths) == set(Status), "every status is reachable from queued"
    return paths


PATHS = _paths()


def new_run(store: Any) -> str:
    run_id = str(uuid.uuid4())
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    return run_id


@pytest.mark.parametrize(("cur", "new"), list(itertools.product(list(Status), list(Status))))
def test_lua_transitions_agree_with_status_module(store: Any, cur: Status, new: Status) -> None:
    run_id = new_run(store)
    for step in PATHS[cur]:
        assert store.apply(run_id, step, source="t")[0] == "applied"
    verdict, now, completion = store.apply(run_id, new, source="t")
    assert verdict == ("applied" if can_transition(cur, new) else "noop")
    assert now == (new if verdict == "applied" else cur)
    if verdict == "applied" and RANK[new] == 3:
        assert completion == "pending"


def test_create_refuses_an_existing_run_id(store: Any) -> None:
    run_id = new_run(store)
    assert not store.create(run_id, WF, {}, None, None, None)


def test_terminal_record_expires_after_retention(store: Any) -> None:
    run_id = new_run(store)
    assert store.redis.ttl(store.run_key(run_id)) == -1  # in flight: never expires
    store.apply(run_id, "failed", source="t", payload={"status": "failed"})
    ttl = store.redis.ttl(store.run_key(run_id))
    assert 0 < ttl <= store.settings.retention_seconds


def test_completion_is_claimed_once(store: Any) -> None:
    run_id = new_run(store)
    assert store.claim_completion(run_id, "t1")[0] == "not_terminal"
    store.apply(run_id, "success", source="t", payload={"status": "success"})
    assert store.claim_completion(run_id, "t1")[0] == "claimed"
    verdict, left, _, _ = store.claim_completion(run_id, "t2")  # a duplicate task
    assert verdict == "busy" and float(left) > 0
    assert store.claim_completion(run_id, "t1")[0] == "claimed"  # the holder, redelivered
    assert not store.release_completion(run_id, "t2", 0)
    assert store.release_completion(run_id, "t1", 0)  # dispatch failed: claimable again
    assert store.claim_completion(run_id, "t2")[0] == "claimed"
    assert not store.finish_completion(run_id, "task-1", "t1", 0)  # not t1's claim any more
    assert store.finish_completion(run_id, "task-1", "t2", 0)
    assert store.claim_completion(run_id, "t1")[0] == "done"
    assert not store.finish_completion(run_id, "task-2", "t2", 0)


def test_completion_lease_lapses_for_a_dead_holder(store: Any) -> None:
    run_id = new_run(store)
    store.apply(run_id, "failed", source="t", payload={"status": "failed"})
    assert store.claim_completion(run_id, "t1")[0] == "claimed"
    store.redis.hset(store.run_key(run_id), "completion_lease_until", 0)
    assert store.claim_completion(run_id, "t2")[0] == "claimed"


def test_submit_claim_lease_and_ambiguity(store: Any) -> None:
    run_id = new_run(store)
    assert store.claim_submit(run_id, 30, "t1", "x1")[0] == "ok"
    assert store.claim_submit(run_id, 30, "t2", "x2")[0] == "busy"  # a concurrent duplicate
    assert store.begin_post(run_id, "x1") == 1
    # t1's own message again while its lease runs: its worker may be alive and mid-POST (a broker
    # reconnect redelivers running tasks), so it waits for the lease rather than guessing
    assert store.claim_submit(run_id, 30, "t1", "x3")[0] == "busy"
    store.redis.hset(store.run_key(run_id), "submit_lease_until", 0)  # lease lapsed: holder dead
    # the dead holder may have sent: a redelivery must not resend blindly
    assert store.claim_submit(run_id, 30, "t1", "x3")[0] == "ambiguous"
    assert store.claim_submit(run_id, 30, "t2", "x2")[0] == "ambiguous"
    store.post_not_sent(run_id, "x1")
    assert store.claim_submit(run_id, 30, "t2", "x2")[0] == "ok"
    store.bind(run_id, "m-" + run_id, {})
    assert store.claim_submit(run_id, 30, "t1", "x1")[:2] == ("done", "submitted")


def test_a_redelivered_execution_takes_over_and_the_old_one_cannot_send(store: Any) -> None:
    """A broker reconnect redelivers a running submit: its own message again, no POST marked
    yet. The new execution takes the lease; the old one is refused at begin_post, so at most one
    of them sends."""
    run_id = new_run(store)
    assert store.claim_submit(run_id, 30, "t1", "old")[0] == "ok"
    assert store.claim_submit(run_id, 30, "t1", "new")[0] == "ok"
    assert store.begin_post(run_id, "old") == -2
    store.post_not_sent(run_id, "old")  # a stale execution changes nothing
    store.release_submit(run_id, "old")
    raw = store.raw(run_id)
    assert float(raw["submit_lease_until"]) > 0 and raw.get("post_inflight") in (None, "0")
    assert store.begin_post(run_id, "new") == 1
    store.post_not_sent(run_id, "old")
    assert store.raw(run_id)["post_inflight"] == "1"  # the stale one cannot clear the new mark
    store.post_not_sent(run_id, "new")
    assert store.raw(run_id)["post_inflight"] == "0"
    store.release_submit(run_id, "new")
    assert float(store.raw(run_id)["submit_lease_until"]) == 0


def test_bind_conflict_and_rebind_are_handled(store: Any) -> None:
    run_id = new_run(store)
    assert store.bind(run_id, "m1-" + run_id, {})[0] == "submitted"
    assert store.bind(run_id, "m1-" + run_id, {})[0] == "submitted"  # redelivery: same answer
    with pytest.raises(RuntimeError, match="already bound"):
        store.bind(run_id, "m2-" + run_id, {})
    assert store.run_for_message("m1-" + run_id) == run_id


def test_payload_is_encrypted_at_rest(store: Any) -> None:
    run_id = new_run(store)
    url = "https://files.example/x?X-Amz-Signature=deadbeef"
    store.apply(run_id, "success", source="t", payload={"status": "success", "url": url})
    assert "deadbeef" not in str(store.raw(run_id))
    run = store.get(run_id)
    assert run.payload["url"] == url


def test_run_to_dict_is_a_deep_copy_with_every_field() -> None:
    """What a callback receives: every field, JSON-shaped, independent of the Run it came from."""
    import dataclasses
    import json

    from nen_celery.domain.models import Run

    payload = {"status": "success", "result": {"files": [{"url": "https://x/a", "name": "a.pdf"}]}}
    run = Run(
        run_id="r1",
        workflow_id="w1",
        status="success",
        message_id="m1",
        params={"A": "b"},
        created_at=1.0,
        updated_at=2.0,
        history=[{"status": "queued", "at": 1.0}],
        payload=payload,
        previous_errors=[{"type": "timeout"}],
    )
    out = run.to_dict()
    assert out == dataclasses.asdict(run)
    assert set(out) == {f.name for f in dataclasses.fields(Run)}
    json.dumps(out)
    out["payload"]["result"]["files"][0]["name"] = "changed"
    out["history"].append({"status": "x"})
    out["params"]["A"] = "changed"
    assert run.payload["result"]["files"][0]["name"] == "a.pdf"
    assert run.history == [{"status": "queued", "at": 1.0}] and run.params == {"A": "b"}

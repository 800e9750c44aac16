"""A replayed webhook cannot bind another run (issue 17, item 3).

Nen signs a webhook's body, never its URL or a timestamp: whoever captured one genuine delivery
can send it again, anywhere, any number of times. Here a finished run's genuine signed terminal
webhook is replayed 50 times onto the webhook URL of a run whose POST was answered ambiguously
(the simulator created the run, then cut the connection or answered after our read timeout), so
that run waits, `queued` or `unknown`, for Nen's own webhooks to say which messageId it got. The
replays come with no token, with the token captured from the finished run's own URL, and with a
valid token for the pending run (an attacker cannot know it: the worst case). Real Redis, the
real receiver over HTTP, the simulator, the suite's in-process worker.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from nen_celery import get_run
from nen_celery.domain.hints import hint_key, run_token
from nen_celery.runtime.context import get_context
from nen_celery.runtime.metrics import REGISTRY
from tests.callbacks import calls
from tests.conftest import SIM_WEBHOOK_SECRET, Stack
from tests.helpers import run_ref, wait_for
from tests.test_lifecycle import posts_for, sign, wait_callbacks
from tests.test_nen_faults import configure, sim, start

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"
REPLAYS = 50
KEY = hint_key(SIM_WEBHOOK_SECRET)  # the key the suite's workers sign run hints with


__all__ = ["sim"]  # the fixture, imported for pytest


def nen_message_of(stack: Stack, run_id: str) -> str | None:
    """The messageId the simulator created for our run (its Idempotency-Key), once it did."""
    made = [m for m, r in stack.sim.stats()["runs"].items() if r["idempotency_key"] == run_id]
    assert len(made) <= 1, made
    return made[0] if made else None


def hint(run_id: str, token: str | None, nonce: str = "") -> str:
    if token is None:
        return f"?nen_run={run_id}"
    return f"?nen_run={run_id}~0~{nonce}~{token}" if nonce else f"?nen_run={run_id}~0~{token}"


def nonce_of(run_id: str) -> str:
    """The record's nonce, which its URL carries (hints.py)."""
    return run_ref(get_context().store, run_id).nonce


def refused_hints() -> float:
    return REGISTRY.get_sample_value("nen_webhooks_total", {"result": "hint_refused"}) or 0.0


def replay(stack: Stack, body: bytes, queries: list[str]) -> list[int]:
    """Every query REPLAYS times, concurrently: the answers' status codes."""
    headers = sign(body)
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:

        def post(query: str) -> int:
            return client.post(stack.webhook_url + query, content=body, headers=headers).status_code

        return list(pool.map(post, [q for q in queries for _ in range(REPLAYS)]))


@pytest.mark.parametrize(
    ("fault", "flood_while"),
    [
        # the connection is cut once the run exists: the run is `unknown` at once, and Nen's
        # own webhooks are held back until the flood is over
        ({"drop_after_accept": 1, "webhook_delay": 3.0}, "unknown"),
        # the 202 comes after our read timeout (3 s): Nen's own webhooks come first, while the
        # run is still `queued`, and are kept with it; the flood follows them
        ({"post_latency": 4.5}, "queued"),
    ],
    ids=["connection-cut", "slow-answer"],
)
def test_a_replayed_webhook_of_a_finished_run_cannot_bind_a_pending_one(
    sim: Stack, fault: dict[str, Any], flood_while: str
) -> None:
    store = get_context().store
    finished = start()
    (done,) = wait_callbacks(finished.run_id)
    finished_run = done["run"]
    assert finished_run["status"] == "success"
    captured = json.dumps(finished_run["payload"]).encode()  # its genuine signed terminal webhook
    assert json.loads(captured)["message_id"] == finished_run["message_id"]
    finished_nonce = nonce_of(finished.run_id)
    captured_token = run_token(KEY, finished.run_id, 0, finished_nonce)  # from the URL it came to

    configure(sim, **fault)
    pending = start()
    own = wait_for(lambda: nen_message_of(sim, pending.run_id), 20, "Nen to create the run")
    if flood_while == "unknown":
        wait_for(lambda: (r := get_run(pending.run_id)) and r.status == "unknown", 20, "unknown")
    else:
        kept = store.run_parked_key(pending.run_id)
        wait_for(lambda: len(sim.redis.hkeys(kept)) == 2, 20, "Nen's own webhooks kept with the run")
        assert get_run(pending.run_id).status == "queued"  # type: ignore[union-attr]

    before = refused_hints()
    queries = [
        hint(pending.run_id, None),  # no token
        # the finished run's token, the pending run's id
        hint(pending.run_id, captured_token, finished_nonce),
        # a valid token: the worst case
        hint(
            pending.run_id,
            run_token(KEY, pending.run_id, 0, nonce_of(pending.run_id)),
            nonce_of(pending.run_id),
        ),
    ]
    answers = replay(sim, captured, queries)
    assert set(answers) <= {200, 202} and len(answers) == 3 * REPLAYS
    assert refused_hints() == before + 2 * REPLAYS  # counted, and looked up by messageId instead
    if flood_while == "unknown":  # Nen's own webhooks are still held back: nothing bound it
        flooded = get_run(pending.run_id)
        assert flooded is not None and flooded.message_id in (None, own)
    else:  # kept once per (status, messageId): the replays took one place, pushed nothing out
        replayed = f"success:{finished_run['message_id']}"
        wait_for(lambda: replayed in sim.redis.hkeys(kept), 20, "the replays' ingest tasks")
        assert sorted(sim.redis.hkeys(kept)) == sorted([f"processing:{own}", f"success:{own}", replayed])

    (call,) = wait_callbacks(pending.run_id)
    sim.counter.wait_idle()
    run = call["run"]
    assert (run["status"], run["message_id"]) == ("success", own)
    assert run["payload"]["message_id"] == own and run["payload"] != finished_run["payload"]
    history = [(h["status"], h["source"]) for h in run["history"]]
    assert ("submitted", "webhook:run_hint") in history
    assert [s for s, _ in history].count("success") == 1
    assert store.run_for_message(own) == pending.run_id
    assert posts_for(sim, pending.run_id) == 1  # one POST, one workflow in Nen

    # nothing fired twice, the finished run unchanged
    assert [c["tag"] for c in calls(pending.run_id)] == ["complete"]
    assert [c["tag"] for c in calls(finished.run_id)] == ["complete"]
    again = get_run(finished.run_id)
    assert again is not None and (again.status, again.message_id) == ("success", finished_run["message_id"])
    assert store.run_for_message(finished_run["message_id"]) == finished.run_id

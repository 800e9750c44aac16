"""The first POST is counted by the submit's claim (claim_submit with mark_post: one round trip
less per run than a separate begin_post), submit_run run in this process against a fake Nen.

- a worker that dies between the claim and the POST leaves the run possibly sent: its
  redelivered message parks it ``unknown`` and never resends;
- whatever proves the POST did not leave after the claim (a connect error, the rate limiter's
  RateLimited, the barrier, a request that cannot be built) uncounts it, so the redelivered
  message resends;
- secure params gone: nothing counted, the run ends submit_failed as never started;
- ``attempts`` counts one per POST handed to the transport.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from nen_celery.lifecycle import submit as submit_mod
from nen_celery.nen.client import NenClient
from nen_celery.nen.ratelimit import RateLimited
from nen_celery.runtime.context import Context, get_context
from nen_celery.store.durable import NotDurable
from tests.conftest import env

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"


class Retried(Exception):
    """What the fake task's retry raises: the task re-queued its own message."""


class Task:
    """submit_run's task as submit() sees it: one message (its id), re-queued by retry()."""

    def __init__(self) -> None:
        self.request = SimpleNamespace(id=f"t-{uuid.uuid4().hex[:8]}")
        self.retries: list[dict[str, Any]] = []

    def retry(self, **kwargs: Any) -> Retried:
        self.retries.append(kwargs)
        return Retried()


class Nen:
    """POST /runs answered by ``answer`` (an exception to raise, or a 202); the POSTs counted."""

    def __init__(self) -> None:
        self.posts = 0
        self.answer: Callable[[], httpx.Response] = self.accept

    def accept(self) -> httpx.Response:
        return httpx.Response(202, json={"messageId": f"m-{uuid.uuid4().hex[:8]}"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        return self.answer()


class Limiter:
    """The shared bucket: RateLimited while ``spent``."""

    spent = False

    def acquire(self) -> None:
        if self.spent:
            raise RateLimited(5.0)

    def feedback(self, retry_after: float | None) -> None:
        return None


@pytest.fixture
def nen(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Nen, Limiter]]:
    fake, limiter = Nen(), Limiter()
    with env(NEN_API_URL="http://nen.test", NEN_SUBMIT_DEADLINE="0.3", NEN_WEBHOOK_URL=None):
        settings = get_context().settings
        http = httpx.Client(transport=httpx.MockTransport(fake.handle))
        client = NenClient(settings, http, limiter=limiter)  # type: ignore[arg-type]
        monkeypatch.setattr(Context, "client", property(lambda self: client))
        yield fake, limiter


def _run(store: Any, runs: list[str], secure: bool = False) -> str:
    run_id = f"first-{uuid.uuid4()}"
    sealed = store.sealer.seal(json.dumps({"TOKEN": "s3cret"}).encode()) if secure else None
    assert store.create(run_id, WF, {"A": 1}, sealed, None, None)
    runs.append(run_id)
    return run_id


def _counts(store: Any, run_id: str) -> tuple[int, int]:
    """(POSTs possibly sent, attempts) as the record has them."""
    raw = store.raw(run_id)
    return int(raw.get("post_inflight") or 0), int(raw.get("attempts") or 0)


def _connect_error() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def test_a_worker_killed_between_the_claim_and_the_post_leaves_the_run_parked_never_resent(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter]
) -> None:
    fake, _ = nen
    run_id, task = _run(store, runs), Task()
    # what the first execution of the message did before it died: the claim, its POST counted
    assert store.claim_submit(run_id, 30, task.request.id, "x-dead", mark_post=True).post_counted
    assert submit_mod.submit(task, run_id)["status"] == "busy"  # its lease runs: it may be mid-POST
    store.redis.hset(store.run_key(run_id), "submit_lease_until", 0)  # the lease lapsed
    assert submit_mod.submit(task, run_id)["status"] == "unknown"
    raw = store.raw(run_id)
    assert raw["status"] == "unknown" and json.loads(raw["error"])["type"] == "ambiguous"
    assert fake.posts == 0 and task.retries == []


def test_a_connect_error_after_the_claim_uncounts_the_post_and_the_redelivered_message_resends(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter]
) -> None:
    fake, _ = nen
    run_id, task = _run(store, runs), Task()
    fake.answer = _connect_error
    with pytest.raises(Retried):  # the submit budget spent on connect errors: re-scheduled
        submit_mod.submit(task, run_id)
    assert fake.posts >= 2  # the claim's count for the first, begin_post's for the retries
    assert _counts(store, run_id) == (0, fake.posts)  # none possibly sent; one attempt per POST
    fake.answer = fake.accept
    tried = fake.posts
    assert submit_mod.submit(task, run_id, **task.retries[0]["kwargs"])["status"] == "submitted"
    assert fake.posts == tried + 1 and int(store.raw(run_id)["attempts"]) == tried + 1


def test_rate_limited_after_the_claim_uncounts_the_post_and_the_redelivered_message_resends(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter]
) -> None:
    fake, limiter = nen
    run_id, task = _run(store, runs), Task()
    limiter.spent = True
    with pytest.raises(Retried):
        submit_mod.submit(task, run_id)
    assert task.retries[0]["countdown"] == 5.0 and fake.posts == 0
    assert _counts(store, run_id) == (0, 0)  # never tried: not an attempt either
    assert float(store.raw(run_id)["submit_lease_until"]) == 0  # released for the re-queued message
    limiter.spent = False
    assert submit_mod.submit(task, run_id, **task.retries[0]["kwargs"])["status"] == "submitted"
    assert fake.posts == 1 and store.raw(run_id)["attempts"] == "1"


@pytest.mark.parametrize("where", ["barrier", "request"])
def test_a_post_that_never_left_after_the_claim_is_uncounted(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The barrier not met before the first POST (NotDurable), or its request not built."""
    fake, _ = nen
    run_id, task = _run(store, runs), Task()

    error = NotDurable("not durable") if where == "barrier" else ValueError("cannot build")

    def fails(*_: Any) -> Any:
        raise error

    if where == "barrier":
        monkeypatch.setattr(Context, "durable", fails)
    else:
        monkeypatch.setattr(submit_mod, "_request", fails)
    with pytest.raises(type(error)):
        submit_mod.submit(task, run_id)
    assert fake.posts == 0 and _counts(store, run_id) == (0, 0)
    assert store.claim_submit(run_id, 30, task.request.id, "x-again").verdict == "ok"  # not ambiguous


def test_secure_params_gone_count_no_post_and_end_the_run_as_never_started(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter]
) -> None:
    fake, _ = nen
    run_id, task = _run(store, runs, secure=True), Task()
    store.redis.delete(store.secure_key(run_id))  # expired, or a Redis that lost it
    assert submit_mod.submit(task, run_id)["status"] == "submit_failed"
    raw = store.raw(run_id)
    assert raw["status"] == "submit_failed" and json.loads(raw["error"])["type"] == "secure_params_missing"
    assert fake.posts == 0 and raw.get("attempts") == "0" and not raw.get("unknown_at")


def test_one_attempt_per_post_when_the_first_is_refused_to_connect_then_accepted(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter]
) -> None:
    fake, _ = nen
    run_id, task = _run(store, runs, secure=True), Task()
    answers = iter([_connect_error, fake.accept])
    fake.answer = lambda: next(answers)()
    assert submit_mod.submit(task, run_id)["status"] == "submitted"
    assert fake.posts == 2 and store.raw(run_id)["attempts"] == "2"


def test_with_a_rate_limit_the_claim_counts_no_post_begin_post_does(
    store: Any, runs: list[str], nen: tuple[Nen, Limiter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NEN_RATE_LIMIT a token may be waited for between the claim and the POST (up to
    NEN_RATE_LIMIT_MAX_WAIT): a crash there must not leave a POST never sent counted."""
    fake, _ = nen
    run_id, task = _run(store, runs), Task()
    seen: list[tuple[bool, tuple[int, int]]] = []
    begin_post = type(store).begin_post

    def counted_at_begin_post(self: Any, rid: str, execution: str) -> int:
        seen.append((True, _counts(store, rid)))  # what the claim left
        return begin_post(self, rid, execution)

    monkeypatch.setattr(type(store), "begin_post", counted_at_begin_post)
    with env(NEN_RATE_LIMIT="50"):
        assert submit_mod.submit(task, run_id)["status"] == "submitted"
    assert seen == [(True, (0, 0))]  # the claim counted nothing; begin_post counted the POST
    assert fake.posts == 1 and store.raw(run_id)["attempts"] == "1"

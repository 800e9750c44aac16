"""The receiver's one plan (web/decide.py) and its two drivers (web/delivery.py).

The table runs the pure plan against scripted effect results through every driver: blocking,
on the loop with every effect native, with none (all handed to the thread at the first), and
with the receiver's own split (ingest.lua, the barrier and the LPUSH on the loop; the lookup,
the probe, a claimed completion's dispatch and a release in the thread). Each must give the
same answer after the same effects. The rest runs the real receivers on Redis.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from flask import Flask

from nen_celery.domain.hints import Hint, RunRef
from nen_celery.web.answers import APPLIED, IGNORED, NOT_DURABLE, NOT_QUEUED, QUEUED, Answer
from nen_celery.web.apply import BINDS, Ended
from nen_celery.web.decide import (
    Apply,
    Dispatch,
    Durable,
    Effect,
    End,
    Lookup,
    Probe,
    Publish,
    Release,
    Webhook,
    plan,
)
from nen_celery.web.delivery import drive, drive_async
from tests.conftest import Stack
from tests.web_support import WF, Reply, django_ready, hinted, signed, webhook_body

__all__ = ["django_ready"]  # the fixture, imported for pytest

REF = RunRef("run-1", 0, "nonce")
PARKED = Answer(202, {"status": "parked"})
CLAIMED = Ended("applied", "success", "receiver-1", {"status": "success"})
DOWN = redis.ConnectionError("down")
NATIVE_HERE = (Apply, End, Durable, Publish)  # what the receiver's AsyncEffects can do on the loop


def webhook(status: str = "processing", hint: RunRef | None = REF, **kw: Any) -> Webhook:
    values: dict[str, Any] = {
        "body": b"{}",
        "parsed": {"message_id": "m-1", "status": status, "workflow_id": WF},
        "hint": hint,
        "refused": None,
        "received_at": "1.0",
        "apply": True,
        "barrier": True,
        "covers_broker": False,
        "parked_status": 202,
        **kw,
    }
    return Webhook(**values)


# name: (webhook, {effect type: result, or an exception it raises}, answer, effects, hops)
CASES: dict[str, tuple[Webhook, dict[type, Any], Answer, list[type], int]] = {
    "processing, barrier off": (
        webhook(barrier=False),
        {Apply: ("applied", "processing")},
        APPLIED,
        [Apply],
        0,
    ),
    "processing, durable": (webhook(), {Apply: ("applied", "processing")}, APPLIED, [Apply, Durable], 0),
    "processing, not durable": (
        webhook(),
        {Apply: ("applied", "processing"), Durable: DOWN},
        NOT_DURABLE,
        [Apply, Durable],
        0,
    ),
    "processing, kept before the binding": (
        webhook(parked_status=200),
        {Apply: ("parked", "submitted")},
        Answer(200, {"status": "parked"}),
        [Apply, Durable],
        0,
    ),
    "processing, another message's hint": (
        webhook(),
        {Apply: ("mismatch", "")},
        IGNORED,
        [Apply, Durable],
        0,
    ),
    "processing, would bind an unknown run": (
        webhook(),
        {Apply: (BINDS, "unknown")},
        QUEUED,
        [Apply, Publish],
        0,
    ),
    "processing, the run store down": (webhook(), {Apply: DOWN}, QUEUED, [Apply, Publish], 0),
    "processing, the run store and the broker down": (
        webhook(),
        {Apply: DOWN, Publish: DOWN},
        NOT_QUEUED,
        [Apply, Publish],
        0,
    ),
    "queued on the run store's server, durable": (
        webhook(covers_broker=True),
        {Apply: DOWN},
        QUEUED,
        [Apply, Publish, Durable],
        0,
    ),
    "queued on the run store's server, not durable": (
        webhook(apply=False, covers_broker=True),
        {Durable: DOWN},
        NOT_DURABLE,
        [Publish, Durable],
        0,
    ),
    "terminal duplicate, the run ended": (
        webhook("success"),
        {End: Ended("noop", "success")},
        APPLIED,
        [End, Durable],
        0,
    ),
    "terminal of an attempt before a redrive": (
        webhook("success"),
        {End: Ended("stale", "")},
        IGNORED,
        [End, Durable],
        0,
    ),
    "terminal ends the run, callback out": (
        webhook("failed"),
        {End: CLAIMED, Dispatch: True},
        APPLIED,
        [End, Durable, Dispatch],
        1,
    ),
    "terminal ends the run, callback neither sent nor queued": (
        webhook("success"),
        {End: CLAIMED, Dispatch: False},
        NOT_QUEUED,
        [End, Durable, Dispatch],
        1,
    ),
    "terminal ends the run, not durable: released": (
        webhook("success"),
        {End: CLAIMED, Durable: DOWN},
        NOT_DURABLE,
        [End, Durable, Release],
        1,
    ),
    "terminal ends the run, not durable, release fails": (
        webhook("success"),
        {End: CLAIMED, Durable: DOWN, Release: DOWN},
        NOT_DURABLE,
        [End, Durable, Release],
        1,
    ),
    "terminal, the run store down": (webhook("success"), {End: DOWN}, QUEUED, [End, Publish], 0),
    "terminal, apply off": (webhook("success", apply=False), {}, QUEUED, [Publish], 0),
    "unhinted, known": (webhook(hint=None), {Lookup: True}, QUEUED, [Lookup, Publish], 1),
    "unhinted, unknown": (webhook(hint=None), {Lookup: False}, PARKED, [Lookup, Publish], 1),
    "unhinted, lookup failed": (webhook(hint=None), {Lookup: DOWN}, QUEUED, [Lookup, Publish], 1),
    "unhinted, broker down": (
        webhook(hint=None),
        {Lookup: False, Publish: DOWN},
        NOT_QUEUED,
        [Lookup, Publish],
        1,
    ),
    "refused hint": (
        webhook("success", hint=None, refused=Hint("run-1", 0, "wrong-token")),
        {Lookup: False},
        PARKED,
        [Lookup, Publish],
        1,
    ),
    "not probed, probed on": (
        webhook(barrier=None),
        {Probe: True, Apply: ("applied", "processing")},
        APPLIED,
        [Probe, Apply, Durable],
        1,
    ),
    "not probed, unreachable, broker on the run store": (
        webhook(barrier=None, covers_broker=True),
        {Probe: DOWN},
        NOT_DURABLE,
        [Probe],
        1,
    ),
    "not probed, unreachable: the apply waits for it": (
        webhook(barrier=None),
        {Probe: DOWN, Apply: ("applied", "processing")},
        APPLIED,
        [Probe, Apply, Durable],
        1,
    ),
    "not probed, unreachable, a claim: released and queued": (
        webhook("success", barrier=None),
        {Probe: DOWN, End: CLAIMED, Durable: DOWN},
        QUEUED,
        [Probe, End, Durable, Release, Publish],
        1,
    ),
}


class Scripted:
    """Effects answered from a case's table; records each effect done."""

    def __init__(self, results: dict[type, Any]) -> None:
        self.results = results
        self.done: list[type] = []

    def run(self, effect: Effect[Any]) -> Any:
        self.done.append(type(effect))
        result = self.results.get(type(effect))
        if isinstance(result, Exception):
            raise result
        return result

    def native(self, kinds: tuple[type, ...]) -> Callable[[Effect[Any]], Awaitable[Any] | None]:
        async def on_loop(effect: Effect[Any]) -> Any:
            await asyncio.sleep(0)
            return self.run(effect)

        return lambda effect: on_loop(effect) if isinstance(effect, kinds) else None

    def eager(self, kinds: tuple[type, ...]) -> Callable[[Effect[Any]], Awaitable[Any] | None]:
        """A native that fails while it builds the awaitable (as sealing the body can)."""

        def build(effect: Effect[Any]) -> Awaitable[Any] | None:
            if not isinstance(effect, kinds):
                return None
            result = self.run(effect)

            async def done() -> Any:
                return result

            return done()

        return build


def _async(case: tuple[Webhook, dict[type, Any], Answer, list[type], int], kinds: tuple[type, ...]) -> Any:
    hook, results, _, _, _ = case
    scripted, hops = Scripted(results), []

    async def to_thread(func: Callable[..., Any], *args: Any) -> Any:
        hops.append(func)
        return await asyncio.to_thread(func, *args)

    answer = asyncio.run(drive_async(plan(hook), scripted.native(kinds), scripted.run, to_thread))
    return answer, scripted.done, len(hops)


@pytest.mark.parametrize("name", list(CASES))
def test_both_drivers_give_the_same_answer_for_the_same_effect_results(name: str) -> None:
    case = CASES[name]
    hook, results, expected, effects, hops = case
    scripted = Scripted(results)
    assert (drive(plan(hook), scripted.run), scripted.done) == (expected, effects)
    everything = (Probe, Apply, End, Durable, Publish, Lookup, Dispatch, Release)
    assert _async(case, everything) == (expected, effects, 0)  # all on the loop
    assert _async(case, ()) == (expected, effects, 1 if effects else 0)  # handed over at once
    assert _async(case, NATIVE_HERE) == (expected, effects, hops)  # the receiver's own split


@pytest.mark.parametrize("name", list(CASES))
def test_an_effect_failing_while_the_loop_builds_it_is_the_plans_to_answer(name: str) -> None:
    """Not a 500 from the loop: the plan is told, as the blocking driver tells it."""
    hook, results, expected, effects, _ = CASES[name]
    scripted = Scripted(results)

    async def to_thread(func: Callable[..., Any], *args: Any) -> Any:
        return func(*args)

    everything = (Probe, Apply, End, Durable, Publish, Lookup, Dispatch, Release)
    answer = asyncio.run(drive_async(plan(hook), scripted.eager(everything), scripted.run, to_thread))
    assert (answer, scripted.done) == (expected, effects)


def test_an_effect_the_plan_does_not_expect_to_fail_propagates_from_both_drivers() -> None:
    """A lookup failing with anything but a Redis or socket error is a bug: not answered 200."""
    hook = webhook(hint=None)
    with pytest.raises(KeyError):
        drive(plan(hook), Scripted({Lookup: KeyError("x")}).run)
    with pytest.raises(KeyError):
        _async((hook, {Lookup: KeyError("x")}, QUEUED, [], 0), NATIVE_HERE)


# ----------------------------------------------------------------------- the real receivers


def _bound_run(store: Any, callback: bool = False) -> tuple[str, str]:
    """A run Nen accepted (status submitted): (run id, its messageId)."""
    from tests.callbacks import record

    run_id, message_id = f"delivery-{uuid.uuid4()}", f"delivery-{uuid.uuid4()}"
    on_complete = dict(record.s(tag="complete")) if callback else None
    assert store.create(run_id, WF, {}, None, on_complete, None)
    assert store.bind(run_id, message_id, {"messageId": message_id})[0] == "submitted"
    return run_id, message_id


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[..., Any]]]:
    """Every call the ASGI receiver makes into its thread pool."""
    from nen_celery.web import asgi

    calls: list[Callable[..., Any]] = []
    real = asgi.run_in_threadpool

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asgi, "run_in_threadpool", counting)
    yield calls


@pytest.mark.integration
def test_a_duplicate_terminal_webhook_to_an_ended_run_is_answered_without_a_thread_hop(
    stack: Stack, hops: list[Callable[..., Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal webhook that ends the run hops once (the callback's publish); its duplicates,
    a stale one and a processing one are answered from the event loop, which never builds the
    blocking effects (their first use connects a Redis Cluster client)."""
    from nen_celery.runtime.context import get_context
    from nen_celery.web import delivery
    from nen_celery.web.asgi import create_app
    from nen_celery.web.resources import durability

    real_effects = delivery.blocking_effects

    def off_the_loop(ctx: Any) -> Any:
        with pytest.raises(RuntimeError):  # no running event loop in this thread
            asyncio.get_running_loop()
        return real_effects(ctx)

    monkeypatch.setattr(delivery, "blocking_effects", off_the_loop)

    store = get_context().store
    durability(get_context())  # probed, as the standalone receiver does at start
    run_id, message_id = _bound_run(store)
    url = hinted(run_id)
    with TestClient(create_app()) as client:

        def post(status: str, path: str = url) -> Reply:
            body = webhook_body(message_id, status)
            response = client.post(path, content=body, headers=signed(body))
            return Reply(response.status_code, response.json())

        assert post("processing") == Reply(200, {"status": "applied"})
        assert hops == []
        assert post("success") == Reply(200, {"status": "applied"})  # ends it, claims, dispatches
        assert len(hops) == 1
        assert store.raw(run_id)["completion"] == "sent"
        for _ in range(3):  # Nen's redeliveries
            assert post("success") == Reply(200, {"status": "applied"})
        assert post("success", hinted(run_id, attempt=1)) == Reply(200, {"status": "ignored"})
        assert len(hops) == 1, hops
    assert [h["status"] for h in store.get(run_id).history].count("success") == 1  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def wsgi_posts(stack: Stack, django_ready: None) -> dict[str, Callable[[str, bytes], Reply]]:
    from django.test import Client

    from nen_celery.web.flask import NenCelery

    flask_app = Flask("delivery")
    NenCelery(flask_app)
    flask_client, django_client = flask_app.test_client(), Client()

    def flask_post(path: str, body: bytes) -> Reply:
        response = flask_client.post("/nen" + path, data=body, headers=signed(body))
        return Reply(response.status_code, response.get_json(silent=True))

    def django_post(path: str, body: bytes) -> Reply:
        response = django_client.generic("POST", "/nen" + path, body, headers=signed(body))
        return Reply(response.status_code, json.loads(response.content))

    return {"flask": flask_post, "django": django_post}


@pytest.mark.integration
@pytest.mark.parametrize("name", ["flask", "django"])
def test_flask_and_django_end_a_hinted_run_and_publish_its_callback(
    stack: Stack, wsgi_posts: dict[str, Callable[[str, bytes], Reply]], name: str
) -> None:
    """The blocking driver does what the loop does: applied, the run ended, the callback
    published by the receiver itself (no ingest_webhook, no complete_run), once."""
    from nen_celery.runtime.context import get_context
    from nen_celery.worker import complete_run, ingest_webhook
    from tests.callbacks import calls
    from tests.helpers import wait_for

    post = wsgi_posts[name]
    store = get_context().store
    stack.counter.wait_idle()
    before = {t: stack.counter.published[t.name] for t in (ingest_webhook, complete_run)}
    run_id, message_id = _bound_run(store, callback=True)
    for status in ("processing", "success", "success"):
        body = webhook_body(message_id, status)
        assert post(hinted(run_id), body) == Reply(200, {"status": "applied"}), status
    record = store.raw(run_id)
    assert (record["status"], record["completion"]) == ("success", "sent")
    wait_for(lambda: calls(run_id), 20, "the callback")
    stack.counter.wait_idle()
    assert [c["tag"] for c in calls(run_id)] == ["complete"]
    assert {t: stack.counter.published[t.name] for t in before} == before
